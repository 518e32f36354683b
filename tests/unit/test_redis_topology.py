"""CLUSTER NODES and INFO parsing, and slot arithmetic."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmops.core.rediscluster.slots import (
    SLOT_COUNT,
    SlotRange,
    count,
    describe,
    even_split,
    even_targets,
    expand,
    rebalance,
    to_ranges,
)
from swarmops.core.rediscluster.topology import (
    TopologyError,
    parse_info,
    parse_node_line,
    parse_nodes,
)

A = "a" * 40
B = "b" * 40
C = "c" * 40

LISTING = f"""\
{A} 10.0.0.1:6379@16379 myself,master - 0 0 3 connected 0-5460 [5461->-{B}] [7000-<-{C}]
{B} 10.0.0.2:6379@16379,cache-s1-0.cache-nodes master - 0 1700000000000 4 connected 5461-10922
{C} :0@0 master,fail,noaddr - 1700000000000 1700000000000 5 disconnected 10923-16383
"""


def test_a_listing_parses_into_nodes_by_id() -> None:
    nodes = parse_nodes(LISTING)
    assert set(nodes) == {A, B, C}
    me = nodes[A]
    assert me.myself and me.is_master and me.connected
    assert me.slots == (SlotRange(0, 5460),) and me.slot_count == 5461
    assert me.migrating == {5461: B} and me.importing == {7000: C}
    assert nodes[B].ip == "10.0.0.2" and nodes[B].bus_port == 16379 and nodes[B].config_epoch == 4
    lost = nodes[C]
    assert lost.failed and lost.no_address and lost.ip is None and not lost.connected


def test_replicas_handshakes_and_suspicions() -> None:
    replica = parse_node_line(f"{B} 10.0.0.2:6379@16379 slave,fail? {A} 0 0 1 connected")
    assert replica.is_replica and replica.master_id == A and replica.suspected
    assert not replica.failed
    shaking = parse_node_line(f"{C} 10.0.0.3:6379@16379 handshake - 0 0 0 disconnected")
    assert shaking.in_handshake and shaking.master_id is None
    fresh = parse_node_line(f"{A} :6379@16379 myself,master - 0 0 0 connected")
    assert fresh.ip is None and fresh.port == 6379 and fresh.no_address


def test_ipv6_addresses_split_on_the_last_colon() -> None:
    entry = parse_node_line(f"{A} fd00::5:6379@16379 master - 0 0 1 connected 5")
    assert (entry.ip, entry.port, entry.slots) == ("fd00::5", 6379, (SlotRange(5, 5),))


@pytest.mark.parametrize(
    "line",
    [
        "short line",
        f"{'z' * 40} 10.0.0.1:6379@16379 master - 0 0 1 connected",
        f"{A} 10.0.0.1:x@16379 master - 0 0 1 connected",
        f"{A} 10.0.0.1:6379@16379 master - 0 0 1 connected 9-3",
        f"{A} 10.0.0.1:6379@16379 master - 0 0 1 connected 99999",
    ],
)
def test_malformed_lines_are_refused(line: str) -> None:
    with pytest.raises(TopologyError):
        parse_node_line(line)


def test_a_listing_needs_exactly_one_myself() -> None:
    with pytest.raises(TopologyError):
        parse_nodes(f"{A} 10.0.0.1:6379@16379 master - 0 0 1 connected\n")


def test_info_lines() -> None:
    info = parse_info("# Cluster\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\n\r\n")
    assert info == {"cluster_state": "ok", "cluster_slots_assigned": "16384"}


# --- slots ------------------------------------------------------------------------------------


@given(st.sets(st.integers(0, SLOT_COUNT - 1), max_size=400))
def test_ranges_round_trip(slots: set[int]) -> None:
    ranges = to_ranges(slots)
    assert expand(ranges) == sorted(slots)
    assert count(ranges) == len(slots)
    assert all(b.start > a.end + 1 for a, b in itertools.pairwise(ranges))


@given(st.integers(1, 100))
def test_the_even_split_covers_every_slot_once(shards: int) -> None:
    split = even_split(shards)
    assert expand(split) == list(range(SLOT_COUNT))
    sizes = [len(r) for r in split]
    assert sizes == even_targets(shards) and max(sizes) - min(sizes) <= 1


def test_describe_is_short() -> None:
    assert describe([SlotRange(0, 5), SlotRange(7, 7)]) == "0-5 7"
    assert describe([]) == "none"
    assert describe([SlotRange(i * 2, i * 2) for i in range(6)], limit=2) == "0 2 ... (6 ranges)"


@st.composite
def ownership(draw: st.DrawFn) -> tuple[dict[int, list[int]], int]:
    """Slots cut into random segments, each owned by a random shard."""
    shards_before = draw(st.integers(1, 8))
    cuts = sorted(draw(st.sets(st.integers(1, SLOT_COUNT - 1), max_size=30)))
    bounds = [0, *cuts, SLOT_COUNT]
    owned: dict[int, list[int]] = {}
    for start, end in itertools.pairwise(bounds):
        shard = draw(st.integers(0, shards_before - 1))
        owned.setdefault(shard, []).extend(range(start, end))
    return owned, draw(st.integers(1, 10))


@given(ownership(), st.one_of(st.none(), st.integers(1, 3000)))
def test_rebalance_reaches_the_even_split_moving_only_what_it_must(
    scenario: tuple[dict[int, list[int]], int], limit: int | None
) -> None:
    owned, shards = scenario
    moves = rebalance(owned, shards, limit=limit)
    after = {shard: set(slots) for shard, slots in owned.items()}
    moved = 0
    for move in moves:
        assert move.source != move.target and move.slots
        assert set(move.slots) <= after[move.source], "a move takes only what the donor owns"
        after[move.source] -= set(move.slots)
        after.setdefault(move.target, set()).update(move.slots)
        moved += len(move.slots)
    targets = even_targets(shards)
    needed = sum(max(0, len(owned.get(s, ())) - (targets[s] if s < shards else 0)) for s in owned)
    if limit is None:
        assert moved == needed, "no slot moves twice or needlessly"
        for shard in range(shards):
            assert len(after.get(shard, ())) == targets[shard]
        assert all(not after[s] for s in after if s >= shards)
    else:
        assert moved == min(needed, limit)
