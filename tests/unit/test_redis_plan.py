"""The Redis Cluster plan over simulated snapshots: each phase, its order, the hard rules."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmops.core.rediscluster.plan import (
    MIGRATION_BATCH,
    AddSlots,
    CloseSlot,
    ClusterPlan,
    DeletePod,
    Failover,
    Forget,
    Meet,
    MoveSlots,
    Replicate,
    plan_cluster,
)
from swarmops.core.rediscluster.slots import SLOT_COUNT, SlotRange, even_split
from swarmops.core.rediscluster.testing import (
    T0,
    SimNode,
    blank,
    cluster,
    find,
    healthy,
    node_id,
    observation,
)


def plan(nodes: list[SimNode], rc=None, **observed) -> ClusterPlan:  # type: ignore[no-untyped-def]
    return plan_cluster(rc or cluster(), observation(nodes, **observed), now=T0)


def kinds(result: ClusterPlan) -> list[str]:
    return [type(a).__name__ for a in result.actions]


# --- bootstrap ------------------------------------------------------------------------------


def test_nothing_happens_until_every_pod_answers() -> None:
    nodes = blank()
    find(nodes, 2, 1).reachable = False
    result = plan(nodes, cluster(bootstrapped=False), alone=True)
    assert result.step == "waiting" and not result.actions
    assert result.status.phase == "Pending"
    formed = result.status.condition("ClusterFormed")
    assert formed is not None and formed.status == "False"


def test_fresh_pods_are_introduced_from_one_anchor() -> None:
    nodes = blank()
    result = plan(nodes, cluster(bootstrapped=False), alone=True)
    assert result.step == "membership"
    meets = [a for a in result.actions if isinstance(a, Meet)]
    assert len(meets) == 5 and len({m.pod for m in meets}) == 1
    assert {m.ip for m in meets} == {n.ip for n in nodes} - {nodes[0].ip}
    assert result.status.phase == "Bootstrapping"


def test_slots_wait_until_every_node_knows_every_other_one() -> None:
    nodes = blank()
    a, b = find(nodes, 1, 0), find(nodes, 2, 1)
    result = plan(nodes, cluster(bootstrapped=False), unknown_to={b.id: [a.pod_name]})
    assert result.step == "membership"
    assert [(m.pod, m.ip) for m in result.actions if isinstance(m, Meet)] == [(a.pod_name, b.ip)]
    # Known but still in handshake or disconnected: no slots yet either.
    b.flagged = "fail?"
    waiting = plan(nodes, cluster(bootstrapped=False))
    assert not any(isinstance(x, AddSlots) for x in waiting.actions)


def test_introduced_pods_get_the_even_split_on_each_shards_first_pod() -> None:
    result = plan(blank(), cluster(bootstrapped=False))
    assert result.step == "coverage"
    assigned = {a.pod: a.ranges for a in result.actions if isinstance(a, AddSlots)}
    assert assigned == {f"rc-s{s}-0": (r,) for s, r in enumerate(even_split(3))}


def test_replicas_follow_their_shards_master_once_slots_are_assigned() -> None:
    nodes = blank()
    for shard, share in enumerate(even_split(3)):
        find(nodes, shard, 0).slots = (share,)
    result = plan(nodes, cluster(bootstrapped=False))
    assert result.step == "replicas"
    assert {(a.pod, a.master_id) for a in result.actions if isinstance(a, Replicate)} == {
        (f"rc-s{s}-1", find(nodes, s, 0).id) for s in range(3)
    }


def test_a_formed_cluster_is_recorded_once_and_then_left_alone() -> None:
    result = plan(healthy(), cluster(bootstrapped=False))
    assert result.status.bootstrapped_at == T0
    assert [n.reason for n in result.notices] == ["ClusterFormed"]
    again = plan_cluster(
        cluster(status={"bootstrappedAt": "2025-01-01T00:00:00Z"}), observation(healthy()), now=T0
    )
    assert again.step == "ready" and not again.actions and not again.notices
    assert again.status.bootstrapped_at is not None and again.status.bootstrapped_at.year == 2025


def test_a_ready_cluster_reports_every_condition() -> None:
    result = plan(healthy())
    status = result.status
    assert (status.phase, status.shards, status.ready_shards) == ("Ready", 3, 3)
    assert status.slots_assigned == status.slots_ok == SLOT_COUNT
    assert status.cluster_state == "ok" and status.slots_to_move == 0
    expected = {
        "Ready": "True",
        "ClusterFormed": "True",
        "SlotsAssigned": "True",
        "Resharding": "False",
        "Degraded": "False",
        "Progressing": "False",
    }
    assert {c.type: c.status for c in status.conditions} == expected
    roles = {n.pod_name: (n.role, n.slots) for n in status.nodes}
    assert roles["rc-s0-0"] == ("Master", 5462) and roles["rc-s0-1"] == ("Replica", 0)
    assert result.requeue_after == 30.0


def test_a_restarted_operator_never_assigns_slots_that_have_an_owner() -> None:
    # Status lost (or written before the cluster formed): the cluster itself says it is
    # formed, so the operator adopts it.
    result = plan(healthy(), cluster(bootstrapped=False))
    assert not result.actions


def test_a_half_formed_cluster_gets_only_the_missing_slots() -> None:
    nodes = blank()
    find(nodes, 0, 0).slots = (even_split(3)[0],)
    result = plan(nodes, cluster(bootstrapped=False))
    assert {a.pod for a in result.actions if isinstance(a, AddSlots)} == {"rc-s1-0", "rc-s2-0"}


def test_every_node_coming_back_empty_without_persistence_forms_a_new_cluster() -> None:
    rc = cluster(bootstrapped=True)
    assert plan(blank(), rc, alone=True).step == "membership"
    result = plan(blank(), rc)
    assert result.step == "coverage"
    assert [n.reason for n in result.notices] == ["ClusterReformed"]
    assert all(n.warning for n in result.notices)


def test_no_new_cluster_over_nodes_that_hold_keys() -> None:
    nodes = blank()
    find(nodes, 1, 0).keys = 5
    result = plan(nodes, cluster(bootstrapped=True))
    assert not any(isinstance(a, AddSlots) for a in result.actions)
    assert [p.reason for p in result.problems] == ["ClusterLost"]


# --- membership -------------------------------------------------------------------------------


def test_a_known_node_at_a_new_address_is_met_again_by_id() -> None:
    nodes = healthy()
    moved = find(nodes, 1, 0)
    moved.seen_at = "10.9.9.9"
    result = plan(nodes)
    assert result.step == "membership"
    meets = [a for a in result.actions if isinstance(a, Meet)]
    assert {(m.ip, m.node_id) for m in meets} == {(moved.ip, moved.id)}
    assert {m.pod for m in meets} == {n.pod_name for n in nodes} - {moved.pod_name}


def test_a_new_pod_is_met_and_then_follows_its_shards_master() -> None:
    nodes = healthy()
    old = find(nodes, 2, 1)
    fresh = dataclasses.replace(old, id=node_id("fresh"), master=None, role="master", keys=0)
    nodes[nodes.index(old)] = fresh
    result = plan(nodes, unknown_to={fresh.id: [n.pod_name for n in nodes if n is not fresh]})
    assert kinds(result) == ["Meet"]
    result = plan(nodes)
    assert [(a.pod, a.master_id) for a in result.actions] == [
        (fresh.pod_name, find(nodes, 2, 0).id)
    ]


def test_a_replaced_node_is_forgotten_everywhere_it_is_known() -> None:
    nodes = healthy()
    ghost = SimNode(2, 1, id=node_id("ghost"), role="replica", master=find(nodes, 2, 0).id)
    result = plan(nodes, ghosts=[ghost], recorded={ghost.id: "rc-s2-1"})
    forgets = [a for a in result.actions if isinstance(a, Forget)]
    assert [f.node_id for f in forgets] == [ghost.id]
    assert set(forgets[0].pods) == {n.pod_name for n in nodes}


def test_a_failed_ghost_is_forgotten_once_every_pod_answers() -> None:
    nodes = healthy()
    ghost = SimNode(5, 0, id=node_id("ghost"), flagged="fail")
    assert kinds(plan(nodes, ghosts=[ghost])) == ["Forget"]
    ghost.flagged = None  # not flagged by the cluster, nor known replaced: kept
    assert "Forget" not in kinds(plan(nodes, ghosts=[ghost]))


def test_a_failed_master_that_owns_slots_is_never_forgotten() -> None:
    nodes = healthy()
    master = find(nodes, 1, 0)
    master.reachable, master.flagged = False, "fail"
    for result in (plan(nodes), plan(nodes, recorded={master.id: "rc-s9-0"})):
        assert not any(isinstance(a, Forget) for a in result.actions)


def test_a_node_owning_slots_outside_the_cluster_is_not_merged() -> None:
    nodes = healthy()
    stray = SimNode(0, 2, id=node_id("stray"), slots=(SlotRange(0, 10),), epoch=9)
    nodes.append(stray)
    others = [n.pod_name for n in nodes if n is not stray]
    result = plan(nodes, unknown_to={stray.id: others}, sizes={0: 3})
    assert not any(isinstance(a, Meet) and a.ip == stray.ip for a in result.actions)
    assert "SplitCluster" in [p.reason for p in result.problems]


# --- failover -------------------------------------------------------------------------------


def test_a_master_whose_pod_is_gone_is_replaced_by_its_most_advanced_replica() -> None:
    nodes = healthy(replicas=2)
    master = find(nodes, 1, 0)
    master.pod, master.reachable = False, False
    find(nodes, 1, 1).offset, find(nodes, 1, 2).offset = 10, 20
    result = plan(nodes, rc=cluster(replicas=2))
    assert result.step == "failover"
    assert result.actions == (
        Failover("rc-s1-2", master.id, force=True, reason="its master's pod is gone"),
    )
    assert result.status.phase == "Healing"


def test_a_master_pod_that_returns_as_another_node_is_failed_over() -> None:
    nodes = healthy()
    master = find(nodes, 0, 0)
    newcomer = dataclasses.replace(master, id=node_id("new"), slots=(), keys=0)
    master.pod = master.reachable = False
    nodes.append(newcomer)
    result = plan(nodes)
    assert [(a.pod, a.force) for a in result.actions if isinstance(a, Failover)] == [
        ("rc-s0-1", True)
    ]


def test_a_master_being_deleted_hands_over_gracefully_while_it_still_answers() -> None:
    nodes = healthy()
    find(nodes, 2, 0).terminating = True
    result = plan(nodes)
    assert [(a.pod, a.force) for a in result.actions] == [("rc-s2-1", False)]


def test_a_master_that_is_restarting_is_given_time() -> None:
    nodes = healthy()
    find(nodes, 1, 0).reachable = False  # the pod runs, the server does not answer yet
    result = plan(nodes)
    assert not result.actions and result.step != "ready"


def test_a_lost_master_without_replica_is_reported_and_its_slots_never_move() -> None:
    nodes = healthy(replicas=0)
    master = find(nodes, 1, 0)
    newcomer = dataclasses.replace(master, id=node_id("empty"), slots=(), keys=0)
    master.pod = master.reachable = False
    master.flagged = "fail"
    nodes.append(newcomer)
    result = plan(nodes, rc=cluster(replicas=0))
    assert not any(isinstance(a, AddSlots | Replicate | MoveSlots) for a in result.actions)
    assert [p.reason for p in result.problems] == ["MasterLost"]
    assert result.status.phase == "Degraded"
    degraded = result.status.condition("Degraded")
    assert degraded is not None and degraded.status == "True"


# --- replicas and the empty-node rules -----------------------------------------------------


def test_an_empty_master_never_feeds_a_replica_that_holds_data() -> None:
    nodes = blank(shards=4)
    for shard, share in enumerate(even_split(3)):
        find(nodes, shard, 0).slots = (share,)
    find(nodes, 3, 1).keys = 7  # shard 3 is new, its second pod somehow has data
    result = plan(nodes, rc=cluster(shards=4))
    replicated = {a.pod for a in result.actions if isinstance(a, Replicate)}
    assert "rc-s3-1" not in replicated


def test_a_master_without_slots_but_with_keys_is_never_flushed() -> None:
    nodes = healthy()
    stale = find(nodes, 0, 1)
    stale.role, stale.master, stale.keys = "master", None, 3
    result = plan(nodes)
    assert not any(isinstance(a, Replicate) and a.pod == stale.pod_name for a in result.actions)
    assert "NodeHoldsKeys" in [p.reason for p in result.problems]


# --- open slots -----------------------------------------------------------------------------


def test_an_interrupted_migration_is_finished_towards_its_destination() -> None:
    nodes = healthy(shards=4)
    source, target = find(nodes, 0, 0), find(nodes, 3, 0)
    source.migrating = {5: target.id}
    target.importing = {5: source.id}
    result = plan(nodes, rc=cluster(shards=4))
    assert result.step == "open-slots"
    assert result.actions == (
        CloseSlot(5, source.pod_name, source.id, target.pod_name, target.id, ()),
    )
    assert result.requeue_after == 0.0


def test_a_promoted_replica_finishes_what_its_dead_master_started() -> None:
    nodes = healthy(shards=4)
    dead, promoted, target = find(nodes, 0, 0), find(nodes, 0, 1), find(nodes, 3, 0)
    promoted.role, promoted.master, promoted.slots = "master", None, dead.slots
    promoted.epoch = 9
    dead.slots, dead.reachable, dead.pod, dead.flagged = (), False, False, "fail"
    target.importing = {5: dead.id}
    result = plan(nodes, rc=cluster(shards=4))
    closes = [a for a in result.actions if isinstance(a, CloseSlot)]
    assert closes == [CloseSlot(5, promoted.pod_name, promoted.id, target.pod_name, target.id, ())]


def test_a_migration_to_a_dead_master_goes_to_its_promoted_replica() -> None:
    nodes = healthy(shards=4, replicas=1)
    source, dead, heir = find(nodes, 0, 0), find(nodes, 3, 0), find(nodes, 3, 1)
    heir.role, heir.master, heir.slots, heir.epoch = "master", None, dead.slots, 9
    dead.slots, dead.reachable, dead.pod, dead.flagged = (), False, False, "fail"
    source.migrating = {7: dead.id}
    result = plan(nodes, rc=cluster(shards=4), recorded={dead.id: dead.pod_name})
    closes = [a for a in result.actions if isinstance(a, CloseSlot)]
    assert [(c.owner_pod, c.target_pod) for c in closes] == [(source.pod_name, heir.pod_name)]


def test_a_stale_mark_on_a_node_that_lost_the_slot_is_cleared() -> None:
    nodes = healthy()
    owner, former = find(nodes, 1, 0), find(nodes, 0, 0)
    slot = owner.slots[0].start
    former.migrating = {slot: owner.id}
    result = plan(nodes)
    assert result.actions == (
        CloseSlot(slot, owner.pod_name, owner.id, None, None, (former.pod_name,)),
    )


# --- scaling --------------------------------------------------------------------------------


def test_scaling_out_moves_a_batch_of_slots_to_the_new_shard() -> None:
    nodes = healthy()
    nodes += [SimNode(3, 0, keys=0, epoch=0), SimNode(3, 1, keys=0, epoch=0, role="replica")]
    nodes[-1].master = nodes[-2].id
    result = plan(nodes, rc=cluster(shards=4))
    assert result.step == "rebalance"
    moves = [a for a in result.actions if isinstance(a, MoveSlots)]
    assert moves and all(m.target_pod == "rc-s3-0" for m in moves)
    assert sum(len(m.slots) for m in moves) == MIGRATION_BATCH
    assert result.status.slots_to_move == 4096
    assert result.status.phase == "Resharding"
    resharding = result.status.condition("Resharding")
    assert resharding is not None and resharding.status == "True"


def test_scaling_in_drains_the_last_shard_before_removing_it() -> None:
    nodes = healthy(shards=4)
    result = plan(nodes, rc=cluster(shards=3))
    assert 3 in result.shard_sizes
    moves = [a for a in result.actions if isinstance(a, MoveSlots)]
    assert moves and {m.source_pod for m in moves} == {"rc-s3-0"}
    # Drained: no slot, no key left on the shard's nodes.
    for node in nodes:
        if node.shard == 3:
            node.slots, node.keys = (), 0
    share = [SlotRange(0, 5460), SlotRange(5461, 10921), SlotRange(10922, SLOT_COUNT - 1)]
    for shard in range(3):
        find(nodes, shard, 0).slots = (share[shard],)
    result = plan(nodes, rc=cluster(shards=3))
    assert 3 not in result.shard_sizes


def test_fewer_replicas_per_shard_fail_a_master_over_before_its_pod_goes() -> None:
    nodes = healthy(replicas=2)
    top, bottom = find(nodes, 1, 2), find(nodes, 1, 0)
    top.role, top.master, top.slots = "master", None, bottom.slots
    bottom.role, bottom.master, bottom.slots = "replica", top.id, ()
    find(nodes, 1, 1).master = top.id
    result = plan(nodes, rc=cluster(replicas=1))
    assert result.shard_sizes[1] == 3
    assert [(a.pod, a.force) for a in result.actions if isinstance(a, Failover)] == [
        ("rc-s1-0", False)
    ]


# --- rolling updates --------------------------------------------------------------------------


def test_a_rolling_update_restarts_replicas_first() -> None:
    nodes = healthy()
    result = plan(nodes, revisions={0: "r2", 1: "r2", 2: "r2"})
    assert result.step == "roll"
    assert [(type(a).__name__, a.pod) for a in result.actions] == [("DeletePod", "rc-s0-1")]
    assert result.status.phase == "Updating"


def test_a_master_is_failed_over_before_it_restarts() -> None:
    nodes = healthy()
    for node in nodes:
        if node.role == "replica":
            node.revision = "r2"
    result = plan(nodes, revisions={0: "r2", 1: "r2", 2: "r2"})
    assert result.actions == (
        Failover("rc-s0-1", find(nodes, 0, 0).id, force=False, reason="rc-s0-0 restarts next"),
    )


def test_a_lone_master_without_persistence_is_never_restarted() -> None:
    nodes = healthy(replicas=0)
    result = plan(nodes, rc=cluster(replicas=0), revisions={0: "r2"})
    assert not any(isinstance(a, DeletePod) for a in result.actions)
    assert [p.reason for p in result.problems] == ["RolloutBlocked"]
    persistent = plan(nodes, rc=cluster(replicas=0, persistence=True), revisions={0: "r2"})
    assert [a.pod for a in persistent.actions if isinstance(a, DeletePod)] == ["rc-s0-0"]


def test_nothing_rolls_while_the_cluster_is_not_settled() -> None:
    nodes = healthy()
    find(nodes, 2, 1).link_up = False
    result = plan(nodes, revisions={0: "r2", 1: "r2", 2: "r2"})
    assert not result.actions and result.step == "settling"
    progressing = result.status.condition("Progressing")
    assert progressing is not None and "shard 2" in progressing.message


def test_actions_under_way_are_not_sent_twice() -> None:
    nodes = healthy()
    find(nodes, 1, 0).seen_at = "10.9.9.9"
    first = plan(nodes)
    keys = frozenset(a.key for a in first.actions)
    again = plan_cluster(cluster(), observation(nodes), now=T0, in_flight=keys)
    assert not again.actions


# --- the hard rules, over random faults -------------------------------------------------------


@st.composite
def damaged(draw: st.DrawFn) -> tuple[list[SimNode], int, int]:
    shards = draw(st.integers(3, 5))
    replicas = draw(st.integers(0, 2))
    nodes = healthy(shards, replicas, keys=draw(st.integers(0, 3)))
    for node in nodes:
        fault = draw(st.sampled_from(["none", "none", "unreachable", "gone", "flagged", "new-id"]))
        if fault == "unreachable":
            node.reachable = False
        elif fault == "gone":
            node.pod = node.reachable = False
            node.flagged = draw(st.sampled_from([None, "fail", "fail?"]))
        elif fault == "flagged":
            node.flagged = "fail?"
        elif fault == "new-id":
            node.id = node_id(f"new-{node.shard}-{node.ordinal}")
            node.slots, node.role, node.master, node.keys = (), "master", None, 0
    wanted = draw(st.integers(3, 6))
    return nodes, shards, wanted


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged(), st.booleans())
def test_no_plan_ever_breaks_a_hard_rule(
    scenario: tuple[list[SimNode], int, int], persistent: bool
) -> None:
    nodes, _shards, wanted = scenario
    replicas = max(0, sum(1 for n in nodes if n.shard == 0) - 1)
    rc = cluster(wanted, replicas, persistence=persistent)
    observed = observation(nodes)
    result = plan_cluster(rc, observed, now=T0)
    owned = {n.id for n in nodes if n.slots}
    by_pod = {n.pod_name: n for n in nodes}
    claimed = {s for n in nodes for r in n.slots for s in range(r.start, r.end + 1)}
    for action in result.actions:
        if isinstance(action, AddSlots):
            slots = {s for r in action.ranges for s in range(r.start, r.end + 1)}
            assert not slots & claimed, "slots that have an owner are never assigned again"
        elif isinstance(action, Forget):
            assert action.node_id not in owned, "a node that owns slots is never forgotten"
        elif isinstance(action, Replicate):
            node = by_pod[action.pod]
            assert not node.slots, "a master with slots never becomes a replica"
            assert node.role == "replica" or node.keys == 0, "a node's keys are never flushed"
            master = next(n for n in nodes if n.id == action.master_id)
            assert master.slots or node.keys == 0, "an empty master never feeds data"
        elif isinstance(action, DeletePod):
            node = by_pod[action.pod]
            assert not node.slots or persistent, "a master with data is failed over first"
        elif isinstance(action, MoveSlots):
            source = by_pod[action.source_pod]
            source_slots = {s for r in source.slots for s in range(r.start, r.end + 1)}
            assert set(action.slots) <= source_slots
        elif isinstance(action, Failover):
            assert by_pod[action.pod].role == "replica"
            assert by_pod[action.pod].master == action.old_master
