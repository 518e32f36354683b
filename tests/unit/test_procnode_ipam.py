"""Pod IPs on loopback: unique per live pod, next-fit, reused only after release."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmops.testbed.procnode.ipam import (
    AddressLocks,
    IPAllocator,
    IPExhausted,
    host_address,
    loopback_network,
)


def test_prefix_names_a_loopback_network() -> None:
    assert loopback_network("127.77") == ipaddress.IPv4Network("127.77.0.0/16")
    assert loopback_network("127.1.2") == ipaddress.IPv4Network("127.1.2.0/24")
    assert host_address(loopback_network("127.77")) == "127.77.0.1"


def test_one_octet_prefix_is_all_of_loopback() -> None:
    assert loopback_network("127").prefixlen == 8


@pytest.mark.parametrize("prefix", ["10.0", "127.300", "x.y", "127.0.0.0.1", ""])
def test_bad_or_non_loopback_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError):
        loopback_network(prefix)


def test_first_pod_address_skips_network_and_node() -> None:
    allocator = IPAllocator(loopback_network("127.77"))
    assert allocator.allocate("a") == "127.77.0.2"
    assert allocator.allocate("b") == "127.77.0.3"
    assert allocator.allocate("a") == "127.77.0.2"  # idempotent per key


def test_next_fit_gives_a_recreated_pod_a_new_address() -> None:
    allocator = IPAllocator(loopback_network("127.9.9"))
    first = allocator.allocate("pod-1")
    allocator.release("pod-1")
    assert allocator.allocate("pod-2") != first


def test_addresses_are_reused_after_wrapping() -> None:
    allocator = IPAllocator(loopback_network("127.9.9"))  # .2 .. .254
    size = 253
    for i in range(size):
        allocator.allocate(f"p{i}")
    with pytest.raises(IPExhausted):
        allocator.allocate("one-too-many")
    allocator.release("p7")
    assert allocator.allocate("again") == "127.9.9.9"


def test_addresses_ending_in_0_or_255_are_skipped() -> None:
    allocator = IPAllocator(loopback_network("127.50"))
    seen = {allocator.allocate(str(i)) for i in range(600)}
    assert not any(a.endswith((".0", ".255")) for a in seen)
    assert "127.50.1.1" in seen


def test_preferred_address_is_kept_when_free() -> None:
    allocator = IPAllocator(loopback_network("127.77"))
    assert allocator.allocate("a", preferred="127.77.3.4") == "127.77.3.4"
    assert allocator.allocate("b", preferred="127.77.3.4") != "127.77.3.4"
    assert allocator.allocate("c", preferred="10.0.0.1") != "10.0.0.1"


def test_claim_callback_vetoes_addresses_taken_elsewhere() -> None:
    taken_by_another_node = {"127.77.0.2", "127.77.0.3"}
    allocator = IPAllocator(
        loopback_network("127.77"), claim=lambda a: a not in taken_by_another_node
    )
    assert allocator.allocate("a") == "127.77.0.4"


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=120))
def test_live_pods_never_share_an_address(operations: list[tuple[bool, int]]) -> None:
    allocator = IPAllocator(loopback_network("127.8.8"))
    live: dict[str, str] = {}
    for allocate, key in operations:
        name = f"pod-{key}"
        if allocate:
            live[name] = allocator.allocate(name)
        else:
            allocator.release(name)
            live.pop(name, None)
        assert len(set(live.values())) == len(live)
        assert allocator.in_use() == live


def test_address_locks_are_exclusive_across_holders(tmp_path: Path) -> None:
    first, second = AddressLocks(tmp_path), AddressLocks(tmp_path)
    assert first.claim("127.77.0.2")
    assert not second.claim("127.77.0.2")
    first.release("127.77.0.2")
    assert second.claim("127.77.0.2")
    second.release_all()
    assert first.claim("127.77.0.2")
    first.release_all()
