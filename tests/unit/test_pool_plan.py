"""The pool plan: which pods to create, promote and delete, and the status to report."""

from __future__ import annotations

import datetime
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmops.api.common import ConditionStatus
from swarmops.core.agentenv import pod_env
from swarmops.core.conditions import find_condition
from swarmops.core.expectations import NONE, Expectations, ExpectedPod
from swarmops.core.pods import POOL_LABEL, REVISION_LABEL, STATE_LABEL, PodState, observe_pod
from swarmops.core.pool import PoolPlan, desired_template, plan_pool, with_write_failure
from swarmops.core.revision import template_revision
from swarmops.core.testing import POOL_UID, T0, make_pod, make_pool

ACTIVE, WARM, CLAIMED = PodState.ACTIVE, PodState.WARM, PodState.CLAIMED
# A minute after the pods' creation (make_pod's ages are before T0): a not-Ready pod is
# still within the default readiness timeout (300 s) unless a test says otherwise.
NOW = T0 + datetime.timedelta(minutes=1)


def states(plan: PoolPlan) -> list[PodState]:
    return [create.state for create in plan.creates]


def condition(plan: PoolPlan, kind: str) -> tuple[ConditionStatus, str]:
    found = find_condition(plan.status.conditions, kind)
    assert found is not None, kind
    return found.status, found.reason


def test_an_empty_pool_creates_active_and_warm_pods() -> None:
    plan = plan_pool(make_pool(replicas=2, warm=1), [], NONE, now=NOW)
    assert states(plan) == [ACTIVE, ACTIVE, WARM]
    assert plan.relabels == () and plan.deletes == ()


def test_a_created_pod_is_a_full_manifest_owned_by_the_pool() -> None:
    pool = make_pool(replicas=1)
    plan = plan_pool(pool, [], NONE, now=NOW)
    manifest = plan.creates[0].manifest
    revision = template_revision(desired_template(pool))
    assert manifest["apiVersion"] == "v1" and manifest["kind"] == "Pod"
    assert manifest["metadata"]["generateName"] == "agents-"
    assert manifest["metadata"]["namespace"] == "team"
    assert manifest["metadata"]["labels"] == {
        "app": "agent",
        POOL_LABEL: "agents",
        REVISION_LABEL: revision,
        STATE_LABEL: "active",
    }
    assert manifest["metadata"]["annotations"] == {"note": "hi"}
    assert manifest["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "swarmops.dev/v1alpha1",
            "kind": "AgentPool",
            "name": "agents",
            "uid": POOL_UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert manifest["spec"] == {
        # The agent's environment comes from core/agentenv.py (tests/unit/test_swarm_agentenv.py).
        "containers": [
            {"name": "agent", "image": "agent:1", "args": ["--serve"], "env": pod_env(pool)}
        ],
        "terminationGracePeriodSeconds": 5,
        # Every pool spreads its pods over nodes (core/spread.py).
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {POOL_LABEL: "agents"}},
            }
        ],
    }
    assert plan.revision == revision


def test_a_pool_at_its_targets_is_left_alone() -> None:
    pods = [make_pod("a1", ACTIVE), make_pod("a2", ACTIVE), make_pod("w1", WARM)]
    plan = plan_pool(make_pool(replicas=2, warm=1), pods, NONE, now=NOW)
    assert plan.idle
    assert condition(plan, "Ready") == (ConditionStatus.TRUE, "ReplicasReady")
    assert condition(plan, "WarmPoolReady") == (ConditionStatus.TRUE, "WarmPoolFull")
    assert condition(plan, "Progressing") == (ConditionStatus.FALSE, "Stable")
    assert condition(plan, "Degraded") == (ConditionStatus.FALSE, "AsExpected")


def test_scaling_up_promotes_warm_pods_first_ready_and_oldest_first() -> None:
    pods = [
        make_pod("a1", ACTIVE),
        make_pod("w-young", WARM, age=10),
        make_pod("w-old", WARM, age=100),
        make_pod("w-starting", WARM, ready=False, age=200),
    ]
    plan = plan_pool(make_pool(replicas=3, warm=3), pods, NONE, now=NOW)
    assert [(r.pod.name, r.state) for r in plan.relabels] == [
        ("w-old", ACTIVE),
        ("w-young", ACTIVE),
    ]
    # The warm pool refills with new pods; no active pod is cold-started.
    assert states(plan) == [WARM, WARM]
    assert condition(plan, "Progressing") == (ConditionStatus.TRUE, "ScalingUp")


def test_scaling_up_past_the_warm_pool_creates_the_rest() -> None:
    pods = [make_pod("w1", WARM)]
    plan = plan_pool(make_pool(replicas=3, warm=1), pods, NONE, now=NOW)
    assert [r.pod.name for r in plan.relabels] == ["w1"]
    assert states(plan) == [ACTIVE, ACTIVE, WARM]


def test_scaling_down_deletes_the_cheapest_active_pods_and_no_warm_pod() -> None:
    pods = [
        make_pod("a-old", ACTIVE, age=100),
        make_pod("a-new", ACTIVE, age=1),
        make_pod("a-unready", ACTIVE, ready=False, age=50),
        make_pod("a-unplaced", ACTIVE, ready=False, node=None, age=60),
        make_pod("w1", WARM),
    ]
    plan = plan_pool(make_pool(replicas=1, warm=1), pods, NONE, now=NOW)
    assert [ref.name for ref in plan.deletes] == ["a-unplaced", "a-unready", "a-new"]
    assert plan.creates == () and plan.relabels == ()
    assert condition(plan, "Progressing") == (ConditionStatus.TRUE, "ScalingDown")


def test_deletes_are_pinned_to_the_seen_version() -> None:
    pods = [make_pod("a1", ACTIVE, resource_version="41"), make_pod("a2", ACTIVE, age=9)]
    plan = plan_pool(make_pool(replicas=1), pods, NONE, now=NOW)
    assert [(r.name, r.uid, r.resource_version) for r in plan.deletes] == [("a1", "uid-a1", "41")]


def test_shrinking_the_warm_pool_deletes_warm_pods_only() -> None:
    pods = [make_pod("a1", ACTIVE), make_pod("w1", WARM, age=5), make_pod("w2", WARM, age=1)]
    plan = plan_pool(make_pool(replicas=1, warm=1), pods, NONE, now=NOW)
    assert [ref.name for ref in plan.deletes] == ["w2"]


def test_claimed_pods_are_counted_and_never_touched() -> None:
    pods = [make_pod(f"c{i}", CLAIMED, owner="uid-claim") for i in range(5)]
    pods.append(make_pod("w1", WARM))
    plan = plan_pool(make_pool(replicas=0, warm=0), pods, NONE, now=NOW)
    assert [ref.name for ref in plan.deletes] == ["w1"]
    assert plan.status.claimed == 5


def test_pods_of_an_earlier_pool_with_the_same_name_are_not_ours() -> None:
    pods = [make_pod("old-a1", ACTIVE, owner="uid-previous-pool")]
    plan = plan_pool(make_pool(replicas=1), pods, NONE, now=NOW)
    assert states(plan) == [ACTIVE]
    assert plan.deletes == ()
    assert plan.status.replicas == 0


def test_pods_of_other_pools_or_without_a_state_are_ignored() -> None:
    pods = [make_pod("x", ACTIVE, pool="other"), make_pod("y", None)]
    plan = plan_pool(make_pool(replicas=1), pods, NONE, now=NOW)
    assert states(plan) == [ACTIVE]
    assert plan.deletes == ()


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_terminating_and_finished_pods_are_replaced_not_counted(phase: str) -> None:
    pods = [make_pod("gone", ACTIVE, terminating=True), make_pod("done", ACTIVE, phase=phase)]
    plan = plan_pool(make_pool(replicas=2), pods, NONE, now=NOW)
    assert states(plan) == [ACTIVE, ACTIVE]
    assert plan.deletes == ()
    assert plan.status.replicas == 0


def test_created_but_unseen_pods_are_not_created_again() -> None:
    pool = make_pool(replicas=2)
    revision = template_revision(desired_template(pool))
    expected = Expectations(creates=(ExpectedPod("a-x", "uid-x", ACTIVE, revision),))
    plan = plan_pool(pool, [make_pod("a1", ACTIVE)], expected, now=NOW)
    assert plan.idle
    # Status counts what exists; the pending create keeps the pool Progressing.
    assert plan.status.replicas == 1
    assert condition(plan, "Progressing") == (ConditionStatus.TRUE, "PodsStarting")


def test_deleted_but_still_listed_pods_are_not_deleted_again() -> None:
    pods = [make_pod("a1", ACTIVE), make_pod("a2", ACTIVE, age=5), make_pod("a3", ACTIVE, age=9)]
    expected = Expectations(deletes=frozenset({"uid-a1"}))
    plan = plan_pool(make_pool(replicas=1), pods, expected, now=NOW)
    assert [ref.name for ref in plan.deletes] == ["a2"]


def test_promoted_but_still_warm_looking_pods_are_not_promoted_again() -> None:
    pods = [make_pod("w1", WARM), make_pod("w2", WARM, age=5)]
    expected = Expectations(relabels=MappingProxyType({"uid-w1": ACTIVE}))
    plan = plan_pool(make_pool(replicas=1, warm=1), pods, expected, now=NOW)
    assert plan.idle
    assert (plan.status.replicas, plan.status.warm) == (1, 1)


def test_status_counts_and_selector() -> None:
    pods = [
        make_pod("a1", ACTIVE),
        make_pod("a2", ACTIVE, ready=False),
        make_pod("w1", WARM),
        make_pod("w2", WARM, ready=False, node=None, unschedulable="0/3 nodes are available"),
        make_pod("c1", CLAIMED, owner="uid-claim"),
    ]
    pool = make_pool(replicas=2, warm=2, generation=7)
    status = plan_pool(pool, pods, NONE, now=NOW).status
    assert (status.replicas, status.ready_replicas) == (2, 1)
    assert (status.warm, status.warm_ready, status.claimed, status.unschedulable) == (2, 1, 1, 1)
    assert status.selector == "swarmops.dev/pool=agents,swarmops.dev/state=active"
    assert status.observed_generation == 7
    assert status.current_revision == template_revision(desired_template(pool))
    assert all(c.observed_generation == 7 for c in status.conditions)
    degraded = find_condition(status.conditions, "Degraded")
    assert degraded is not None and degraded.status == ConditionStatus.TRUE
    assert degraded.reason == "Unschedulable"
    assert "0/3 nodes are available" in degraded.message
    assert find_condition(status.conditions, "Ready").status == ConditionStatus.FALSE  # type: ignore[union-attr]


def test_status_counts_per_revision() -> None:
    pool = make_pool(replicas=2, warm=1)
    current = template_revision(desired_template(pool))
    pods = [
        make_pod("a1", ACTIVE, revision=current),
        make_pod("a2", ACTIVE, revision="0ld", ready=False),
        make_pod("w1", WARM, revision=current),
        make_pod("c1", CLAIMED, revision="0ld", owner="uid-claim"),
        make_pod("odd", ACTIVE, revision="Not_A_Label!", age=3),
    ]
    status = plan_pool(pool, pods, NONE, now=NOW).status
    assert [
        (r.revision, r.replicas, r.ready_replicas, r.warm, r.warm_ready, r.claimed)
        for r in status.revisions
    ] == [(current, 1, 1, 1, 1, 0), ("0ld", 1, 0, 0, 0, 1)]


def test_status_keeps_what_it_does_not_own_and_transition_times() -> None:
    first = plan_pool(make_pool(replicas=1), [make_pod("a1", ACTIVE)], NONE, now=NOW)
    previous = first.status.to_wire()
    previous["conditions"].append(
        {
            "type": "RolloutHealthy",
            "status": "True",
            "reason": "Fine",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    )
    previous["rollout"] = {"phase": "Completed"}
    later = NOW + datetime.timedelta(minutes=3)
    pool = make_pool(replicas=1, status=previous)
    second = plan_pool(pool, [make_pod("a1", ACTIVE)], NONE, now=later)
    assert second.status.rollout is not None
    assert [c.type for c in second.status.conditions][-1] == "RolloutHealthy"
    ready = find_condition(second.status.conditions, "Ready")
    assert ready is not None and ready.last_transition_time == NOW.replace(microsecond=0)
    # Unchanged world, unchanged status: the handler writes nothing.
    assert second.status.to_wire() == pool.status.to_wire()


def test_a_write_failure_degrades_the_status_and_a_lasting_one_is_stable() -> None:
    pool = make_pool(replicas=1)
    plan = plan_pool(pool, [], NONE, now=NOW)
    status = with_write_failure(pool, plan.status, "PodWriteFailed", "quota exceeded", now=NOW)
    degraded = find_condition(status.conditions, "Degraded")
    assert degraded is not None
    assert (degraded.status, degraded.reason, degraded.message) == (
        ConditionStatus.TRUE,
        "PodWriteFailed",
        "quota exceeded",
    )
    # The same failure on the next reconcile: the very same status (nothing to write).
    failed_pool = make_pool(replicas=1, status=status.to_wire())
    later = NOW + datetime.timedelta(seconds=30)
    again = plan_pool(failed_pool, [], NONE, now=later)
    assert find_condition(again.status.conditions, "Degraded").status == ConditionStatus.FALSE  # type: ignore[union-attr]
    repeated = with_write_failure(
        failed_pool, again.status, "PodWriteFailed", "quota exceeded", now=later
    )
    assert repeated.to_wire() == failed_pool.status.to_wire()


def test_zero_replicas_and_zero_warm_is_ready() -> None:
    plan = plan_pool(make_pool(replicas=0, warm=0), [], NONE, now=NOW)
    assert plan.idle
    assert condition(plan, "Ready") == (ConditionStatus.TRUE, "ReplicasReady")


def test_observe_pod_reads_what_the_plan_needs() -> None:
    metadata: dict[str, Any] = {
        "name": "agents-x1",
        "namespace": "team",
        "uid": "u1",
        "resourceVersion": "77",
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": {POOL_LABEL: "agents", STATE_LABEL: "warm", REVISION_LABEL: "abc"},
        "ownerReferences": [
            {"kind": "Other", "uid": "nope", "controller": False},
            {"kind": "AgentPool", "uid": POOL_UID, "controller": True},
        ],
    }
    unschedulable = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/4 nodes are available: insufficient nvidia.com/gpu.",
    }
    body = {
        "metadata": metadata,
        "spec": {},
        "status": {"phase": "Pending", "conditions": [unschedulable]},
    }
    pod = observe_pod(body)
    assert (pod.name, pod.uid, pod.resource_version, pod.pool) == (
        "agents-x1",
        "u1",
        "77",
        "agents",
    )
    assert (pod.state, pod.revision, pod.controller_uid) == (WARM, "abc", POOL_UID)
    assert pod.created == T0
    assert not pod.ready and not pod.terminating and pod.alive
    assert pod.unschedulable == "0/4 nodes are available: insufficient nvidia.com/gpu."
    running = {
        "metadata": {**metadata, "deletionTimestamp": "2026-01-01T00:01:00Z"},
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    pod = observe_pod(running)
    assert pod.ready and pod.terminating and not pod.alive
    assert pod.node_name == "n1" and pod.unschedulable is None
    assert observe_pod({**body, "metadata": {**metadata, "labels": {}}}).state is None


@given(
    replicas=st.integers(0, 8),
    warm=st.integers(0, 8),
    pods=st.lists(
        st.tuples(st.sampled_from([ACTIVE, WARM, CLAIMED]), st.booleans(), st.integers(0, 99)),
        max_size=20,
    ),
)
def test_applying_a_plan_to_a_fully_observed_pool_converges_in_one_step(
    replicas: int, warm: int, pods: list[tuple[PodState, bool, int]]
) -> None:
    observed = [
        make_pod(
            f"p{i}",
            state,
            ready=ready,
            age=age,
            owner="uid-claim" if state is CLAIMED else POOL_UID,
        )
        for i, (state, ready, age) in enumerate(pods)
    ]
    pool = make_pool(replicas=replicas, warm=warm)
    plan = plan_pool(pool, observed, NONE, now=NOW)
    deleted = {ref.uid for ref in plan.all_deletes}
    relabelled = {r.pod.uid: r.state for r in plan.relabels}
    after = [
        make_pod(p.name, relabelled.get(p.uid, p.state), ready=p.ready, owner=p.controller_uid)
        for p in observed
        if p.uid not in deleted
    ] + [make_pod(f"new{i}", c.state) for i, c in enumerate(plan.creates)]
    assert plan_pool(pool, after, NONE, now=NOW).idle
    counts = {s: sum(p.state is s for p in after) for s in (ACTIVE, WARM, CLAIMED)}
    assert counts[ACTIVE] == replicas
    assert counts[WARM] == warm
    assert counts[CLAIMED] == sum(s is CLAIMED for s, _, _ in pods)  # claimed: never touched
