"""The claim plan: from a claim, its pool and its pods, what to write and what to report."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmops.api import AgentClaim, AgentClaimStatus
from swarmops.api.agentclaim import ClaimPhase
from swarmops.api.common import ConditionStatus
from swarmops.core.claims import (
    RETAIN_FINALIZER,
    BindMode,
    ClaimedPod,
    ClaimEvent,
    ClaimPlan,
    bind_failed_status,
    claim_events,
    phase_rank,
    plan_claim,
)
from swarmops.core.pods import PodState
from swarmops.core.testing import CLAIM_UID, T0, make_claim, make_pod, make_pool

POOL = make_pool(replicas=0, warm=2)
SOON = T0 + datetime.timedelta(seconds=1)


def claimed(
    name: str = "p1",
    *,
    owner: str = CLAIM_UID,
    bound_at: datetime.datetime | None = SOON,
    warm: bool | None = True,
    ready: bool = True,
    phase: str | None = None,
    terminating: bool = False,
    node: str | None = "node-a",
    unschedulable: str | None = None,
) -> ClaimedPod:
    return ClaimedPod(
        pod=make_pod(
            name,
            PodState.CLAIMED,
            owner=owner,
            ready=ready,
            phase=phase,
            terminating=terminating,
            node=node,
            revision="r1",
            unschedulable=unschedulable,
        ),
        claim="session",
        pod_ip="10.0.0.9" if ready else None,
        bound_at=bound_at,
        warm_hit=warm,
        owner_uids=(owner,),
    )


def plan(
    claim: AgentClaim,
    *,
    pods: tuple[ClaimedPod, ...] = (),
    now: datetime.datetime = SOON,
    status: AgentClaimStatus | None = None,
    **kwargs: Any,
) -> ClaimPlan:
    kwargs.setdefault("pool", POOL)
    return plan_claim(
        claim, claim.status if status is None else status, own_pods=pods, now=now, **kwargs
    )


def conditions(status: AgentClaimStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (str(c.status), c.reason) for c in status.conditions}


def bound_status(**fields: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Bound", "podName": "p1", "warmHit": True}
    return status | fields


# --- Pending ----------------------------------------------------------------------------------


def test_a_new_claim_binds_warm_or_cold_by_its_policy() -> None:
    cold = plan(make_claim())
    assert cold.bind is BindMode.WARM_OR_COLD and not cold.waiting
    wait = plan(make_claim(when_no_warm_pod="Wait", bind_timeout=30))
    assert wait.bind is BindMode.WARM_ONLY and wait.waiting
    assert wait.status.phase is ClaimPhase.PENDING
    assert conditions(wait.status) == {
        "Ready": ("False", "WaitingForWarmPod"),
        "Bound": ("False", "WaitingForWarmPod"),
        "Degraded": ("False", "AsExpected"),
    }
    assert wait.requeue_after == pytest.approx(29.0)  # the bind deadline, from creation


def test_a_missing_pool_is_degraded_then_failed_at_the_deadline() -> None:
    claim = make_claim(bind_timeout=10)
    pending = plan(claim, pool=None)
    assert pending.bind is None and pending.blocked
    assert pending.status.phase is ClaimPhase.PENDING
    assert conditions(pending.status)["Degraded"] == ("True", "PoolNotFound")
    degraded = pending.status.condition("Degraded")
    assert degraded is not None and degraded.message == "AgentPool agents does not exist"
    failed = plan(claim, pool=None, now=T0 + datetime.timedelta(seconds=10))
    assert failed.status.phase is ClaimPhase.FAILED and not failed.blocked
    assert conditions(failed.status) == {
        "Ready": ("False", "PoolNotFound"),
        "Bound": ("False", "PoolNotFound"),
        "Degraded": ("True", "PoolNotFound"),
    }


def test_a_pool_that_appears_in_time_resolves_the_claim() -> None:
    claim = make_claim(bind_timeout=10)
    missing = plan(claim, pool=None).status
    found = plan(claim, status=missing)
    assert found.bind is BindMode.WARM_OR_COLD
    assert conditions(found.status)["Degraded"] == ("False", "AsExpected")


def test_a_pool_being_deleted_or_invalid_cannot_serve() -> None:
    deleting = POOL.model_copy(
        update={"metadata": POOL.metadata.model_copy(update={"deletion_timestamp": T0})}
    )
    assert conditions(plan(make_claim(), pool=deleting).status)["Degraded"] == (
        "True",
        "PoolNotFound",
    )
    # A pool body that does not parse is no AgentPool: only the message says why.
    invalid = plan(make_claim(), pool=None, pool_invalid="spec.template: required")
    assert conditions(invalid.status)["Degraded"] == ("True", "PoolInvalid")
    degraded = invalid.status.condition("Degraded")
    assert degraded is not None
    assert degraded.message == "AgentPool agents is invalid: spec.template: required"


def test_capabilities_the_pool_lacks_are_degraded_not_a_silent_wait() -> None:
    result = plan(make_claim(capabilities=("browser", "python")))
    assert result.bind is None and result.blocked
    degraded = result.status.condition("Degraded")
    assert degraded is not None and degraded.reason == "CapabilitiesNotOffered"
    assert degraded.message == "AgentPool agents does not offer browser, python"


def test_waiting_past_the_deadline_fails_with_bind_timeout() -> None:
    claim = make_claim(when_no_warm_pod="Wait", bind_timeout=5)
    result = plan(claim, now=T0 + datetime.timedelta(seconds=6))
    assert result.bind is None and result.status.phase is ClaimPhase.FAILED
    assert conditions(result.status)["Bound"] == ("False", "BindTimeout")
    assert result.requeue_after is None


def test_a_retained_claim_takes_its_finalizer_before_it_binds() -> None:
    result = plan(make_claim(shutdown_policy="Retain"))
    assert result.finalizer is True and result.bind is BindMode.WARM_OR_COLD
    held = plan(make_claim(shutdown_policy="Retain", finalizers=(RETAIN_FINALIZER,)))
    assert held.finalizer is None
    # The policy changed to Delete: the garbage collector will release, not the operator.
    dropped = plan(make_claim(finalizers=(RETAIN_FINALIZER,)))
    assert dropped.finalizer is False


def test_a_refused_pod_write_keeps_the_claim_pending_and_degraded() -> None:
    claim = make_claim()
    status = bind_failed_status(claim, claim.status, "exceeded quota: pods=10", now=SOON)
    assert status.phase is ClaimPhase.PENDING
    assert conditions(status)["Degraded"] == ("True", "BindFailed")


def test_a_pod_write_refused_until_the_deadline_fails_the_claim_with_the_refusal() -> None:
    claim = make_claim(bind_timeout=5)
    refused = bind_failed_status(claim, claim.status, "exceeded quota: pods=10", now=SOON)
    result = plan(claim, status=refused, now=T0 + datetime.timedelta(seconds=6))
    assert result.bind is None and result.status.phase is ClaimPhase.FAILED
    bound = result.status.condition("Bound")
    assert bound is not None and bound.reason == "BindFailed"
    assert bound.message == "exceeded quota: pods=10; gave up after 5s"
    assert [e.reason for e in claim_events(refused, result.status)] == ["BindFailed"]


# --- Bound ------------------------------------------------------------------------------------


def test_a_bound_pod_makes_the_claim_bound_with_every_field_from_the_pod() -> None:
    claim = make_claim(ttl=60)
    result = plan(claim, pods=(claimed(),))
    status = result.status
    assert result.bind is None
    assert status.phase is ClaimPhase.BOUND
    assert (status.pod_name, status.pod_ip, status.node_name) == ("p1", "10.0.0.9", "node-a")
    assert status.warm_hit is True and status.revision == "r1"
    assert status.bound_at == SOON and status.time_to_bind_milliseconds == 1000
    assert status.expires_at == SOON + datetime.timedelta(seconds=60)
    assert result.requeue_after == pytest.approx(60.0)
    assert conditions(status) == {
        "Ready": ("True", "PodReady"),
        "Bound": ("True", "WarmPodBound"),
        "Degraded": ("False", "AsExpected"),
    }


def test_a_cold_start_is_bound_at_once_and_ready_when_its_pod_is() -> None:
    starting = plan(make_claim(), pods=(claimed(warm=False, ready=False, node=None),)).status
    assert starting.phase is ClaimPhase.BOUND and starting.warm_hit is False
    assert conditions(starting)["Bound"] == ("True", "ColdStarted")
    assert conditions(starting)["Ready"] == ("False", "PodNotReady")
    stuck = plan(make_claim(), pods=(claimed(ready=False, unschedulable="0/3 nodes"),)).status
    assert conditions(stuck)["Ready"] == ("False", "PodUnschedulable")


def test_a_second_pod_bound_to_one_claim_is_deleted_and_the_named_one_kept() -> None:
    first, second = claimed("p1", bound_at=SOON), claimed("p2", bound_at=T0)
    claim = make_claim(status=bound_status(podName="p1"))
    result = plan(claim, pods=(second, first))
    assert result.status.pod_name == "p1"
    assert result.duplicates == (second,)
    # Without a name in status, the first bound wins.
    fresh = plan(make_claim(), pods=(first, second))
    assert fresh.status.pod_name == "p2" and fresh.duplicates == (first,)


def test_pods_of_another_claim_with_the_same_name_are_not_ours() -> None:
    result = plan(make_claim(), pods=(claimed(owner="uid-earlier-claim"),))
    assert result.status.phase is ClaimPhase.PENDING and result.bind is not None


@pytest.mark.parametrize(
    ("policy", "deleted", "released"), [("Delete", True, False), ("Retain", False, True)]
)
def test_the_ttl_ends_the_claim_per_its_shutdown_policy(
    policy: str, deleted: bool, released: bool
) -> None:
    finalizers = (RETAIN_FINALIZER,) if policy == "Retain" else ()
    claim = make_claim(ttl=5, shutdown_policy=policy, finalizers=finalizers)
    pod = claimed()
    result = plan(claim, pods=(pod,), now=SOON + datetime.timedelta(seconds=5))
    assert result.status.phase is ClaimPhase.RELEASED
    assert conditions(result.status)["Bound"] == ("False", "TTLExpired")
    assert (result.deletes == (pod,)) is deleted
    assert (result.releases == (pod,)) is released
    assert result.finalizer is (False if policy == "Retain" else None)
    assert result.status.pod_name == "p1"  # the record of what it held


def test_a_failed_pod_fails_the_claim_and_a_completed_one_releases_it() -> None:
    failed = plan(make_claim(), pods=(claimed(ready=False, phase="Failed"),))
    assert failed.status.phase is ClaimPhase.FAILED
    assert conditions(failed.status)["Degraded"] == ("True", "PodFailed")
    done = plan(make_claim(), pods=(claimed(ready=False, phase="Succeeded"),))
    assert done.status.phase is ClaimPhase.RELEASED
    assert conditions(done.status)["Bound"] == ("False", "PodCompleted")


def test_a_bound_claim_whose_pod_vanished_fails_and_is_never_rebound() -> None:
    claim = make_claim(status=bound_status())
    for pods in ((), (claimed(terminating=True),)):
        result = plan(claim, pods=pods)
        assert result.bind is None
        assert result.status.phase is ClaimPhase.FAILED
        assert conditions(result.status)["Degraded"] == ("True", "PodLost")


# --- the end ----------------------------------------------------------------------------------


def test_deleting_a_retained_claim_releases_its_pod_then_drops_the_finalizer() -> None:
    claim = make_claim(shutdown_policy="Retain", finalizers=(RETAIN_FINALIZER,), deleting=True)
    pod = claimed()
    result = plan(claim, pods=(pod,))
    assert result.releases == (pod,) and result.deletes == ()
    assert result.finalizer is False and result.bind is None
    assert plan(claim).finalizer is False  # nothing left to release


def test_deleting_a_claim_with_delete_policy_leaves_the_pod_to_the_garbage_collector() -> None:
    result = plan(make_claim(deleting=True), pods=(claimed(),))
    assert result == ClaimPlan(result.status)


def test_a_finished_claim_tidies_up_a_pod_that_outlived_it() -> None:
    claim = make_claim(status={"phase": "Released", "podName": "p1"})
    pod = claimed()
    result = plan(claim, pods=(pod,))
    assert result.deletes == (pod,) and result.bind is None
    assert result.status == claim.status
    assert plan(claim) == ClaimPlan(claim.status)


@given(
    phase=st.sampled_from(list(ClaimPhase)),
    pool_exists=st.booleans(),
    pods=st.lists(
        st.tuples(st.booleans(), st.sampled_from(["Running", "Pending", "Failed", "Succeeded"])),
        max_size=3,
    ),
    seconds=st.integers(0, 100),
)
def test_phases_never_go_backwards(
    phase: ClaimPhase, pool_exists: bool, pods: list[tuple[bool, str]], seconds: int
) -> None:
    claim = make_claim(ttl=20, bind_timeout=30, status={"phase": str(phase), "podName": "p0"})
    own = tuple(
        claimed(f"p{i}", ready=phase_ == "Running", phase=phase_, terminating=terminating)
        for i, (terminating, phase_) in enumerate(pods)
    )
    result = plan(
        claim,
        pods=own,
        pool=POOL if pool_exists else None,
        now=T0 + datetime.timedelta(seconds=seconds),
    )
    assert phase_rank(result.status.phase) >= phase_rank(phase)
    if result.bind is not None:
        assert result.status.phase is ClaimPhase.PENDING
        assert all(not p.held for p in own)


# --- Events -----------------------------------------------------------------------------------


def test_events_say_what_changed_once() -> None:
    claim = make_claim(bind_timeout=10)
    missing = plan(claim, pool=None).status
    assert claim_events(claim.status, missing) == [
        ClaimEvent("PoolNotFound", "AgentPool agents does not exist", warning=True)
    ]
    assert claim_events(missing, plan(claim, pool=None, status=missing).status) == []
    bound = plan(claim, pods=(claimed(),), status=missing).status
    (event,) = claim_events(missing, bound, latency_ms=12.4)
    assert event == ClaimEvent("Bound", "Bound warm pod p1 on node node-a in 12 ms")
    released = plan(
        make_claim(ttl=1, status=bound.to_wire()),
        pods=(claimed(),),
        now=SOON + datetime.timedelta(seconds=2),
    ).status
    (event,) = claim_events(bound, released)
    assert event.reason == "Released" and "pod p1 deleted" in event.message
    failed = plan(claim, pool=None, now=T0 + datetime.timedelta(seconds=11)).status
    (event,) = claim_events(missing, failed)
    assert event.warning and event.reason == "PoolNotFound"
    assert "gave up after 10s" in event.message


def test_conditions_keep_their_transition_time_while_they_hold() -> None:
    claim = make_claim()
    first = plan(claim, pool=None, now=SOON).status
    later = plan(claim, pool=None, now=SOON + datetime.timedelta(seconds=30), status=first)
    degraded = later.status.condition("Degraded")
    assert degraded is not None and degraded.status == ConditionStatus.TRUE
    assert degraded.last_transition_time == SOON.replace(microsecond=0)
