"""The warm pool's own decisions: refill rate limit, readiness timeout, unschedulable pods,
template changes under OnReplenish and Recreate, and the spread over nodes."""

from __future__ import annotations

import copy
import datetime
from dataclasses import replace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from swarmops.api import AgentPool
from swarmops.api.common import ConditionStatus
from swarmops.core.claims import cold_start_manifest
from swarmops.core.conditions import find_condition
from swarmops.core.expectations import NONE, Expectations, ExpectedPod
from swarmops.core.pods import POOL_LABEL, ObservedPod, PodState, observe_pod
from swarmops.core.pool import PoolPlan, desired_template, plan_pool, unschedulable_event
from swarmops.core.revision import template_revision
from swarmops.core.spread import HOSTNAME_LABEL, spread_constraint, with_hostname_spread
from swarmops.core.testing import CLAIM_UID, POOL_UID, T0, make_claim, make_pod, make_pool

ACTIVE, WARM, CLAIMED = PodState.ACTIVE, PodState.WARM, PodState.CLAIMED
NOW = T0 + datetime.timedelta(minutes=10)
SCHEDULED_LONG_AGO = T0  # ten minutes before NOW: past the default 300 s timeout
SCHEDULED_RECENTLY = NOW - datetime.timedelta(seconds=60)


def pool_with(
    replicas: int = 0,
    warm: int = 0,
    *,
    image: str = "agent:1",
    **warm_pool: Any,
) -> AgentPool:
    body = make_pool(replicas=replicas, warm=warm, image=image).to_wire()
    body["spec"]["warmPool"].update(warm_pool)
    return AgentPool.from_body(body)


def revision_of(pool: AgentPool) -> str:
    return template_revision(desired_template(pool))


def condition(plan: PoolPlan, kind: str) -> tuple[ConditionStatus, str, str]:
    found = find_condition(plan.status.conditions, kind)
    assert found is not None, kind
    return found.status, found.reason, found.message


def starting(name: str, scheduled: datetime.datetime, **kwargs: Any) -> ObservedPod:
    """A warm pod placed on a node at `scheduled` and not Ready (yet)."""
    pod = make_pod(name, WARM, ready=False, **kwargs)
    return replace(pod, scheduled_at=scheduled, created=scheduled)


# --- refill rate limit ---------------------------------------------------------------------


def test_the_refill_budget_limits_warm_creates_and_says_how_many_wait() -> None:
    plan = plan_pool(pool_with(replicas=0, warm=10), [], NONE, now=NOW, create_budget=4)
    assert [c.state for c in plan.creates] == [WARM] * 4
    assert plan.deferred == 6
    assert condition(plan, "Progressing")[:2] == (ConditionStatus.TRUE, "ScalingUp")


def test_active_pods_are_not_held_back_by_the_refill_budget() -> None:
    plan = plan_pool(pool_with(replicas=3, warm=2), [], NONE, now=NOW, create_budget=0)
    assert [c.state for c in plan.creates] == [ACTIVE] * 3
    assert plan.deferred == 2


def test_an_empty_budget_reports_the_rate_limit() -> None:
    pods = [make_pod("w1", WARM)]
    plan = plan_pool(pool_with(warm=3, refillRate=5), pods, NONE, now=NOW, create_budget=0)
    assert plan.creates == () and plan.deferred == 2
    status, reason, message = condition(plan, "Progressing")
    assert (status, reason) == (ConditionStatus.TRUE, "RefillRateLimited")
    assert "2 warm pods" in message and "5/s" in message


def test_no_budget_means_no_limit() -> None:
    plan = plan_pool(pool_with(warm=50), [], NONE, now=NOW)
    assert len(plan.creates) == 50 and plan.deferred == 0


# --- readiness timeout -----------------------------------------------------------------------


def test_a_warm_pod_not_ready_within_the_timeout_is_replaced() -> None:
    late = starting("w-late", SCHEDULED_LONG_AGO)
    plan = plan_pool(pool_with(warm=2), [late, make_pod("w-ok", WARM)], NONE, now=NOW)
    assert [ref.name for ref in plan.unready] == ["w-late"]
    assert plan.unready[0].resource_version == late.resource_version  # pinned, as deletes are
    assert [c.state for c in plan.creates] == [WARM]  # its replacement
    assert plan.deletes == () and not plan.idle
    assert condition(plan, "Progressing")[:2] == (ConditionStatus.TRUE, "ScalingUp")


def test_a_warm_pod_within_the_timeout_is_kept_and_looked_at_again_when_it_expires() -> None:
    pod = starting("w-starting", SCHEDULED_RECENTLY)
    plan = plan_pool(pool_with(warm=1, readinessTimeoutSeconds=120), [pod], NONE, now=NOW)
    assert plan.idle
    assert plan.recheck_at == SCHEDULED_RECENTLY + datetime.timedelta(seconds=120)


def test_the_timeout_counts_from_the_last_loss_of_readiness() -> None:
    pod = replace(
        starting("w", SCHEDULED_LONG_AGO),
        ready_changed_at=NOW - datetime.timedelta(seconds=10),
    )
    plan = plan_pool(pool_with(warm=1), [pod], NONE, now=NOW)
    assert plan.unready == ()
    assert plan.recheck_at == NOW + datetime.timedelta(seconds=290)


def test_unschedulable_pods_are_never_churned_but_counted_with_the_schedulers_message() -> None:
    message = "0/3 nodes are available: 3 Insufficient cpu."
    pool = pool_with(warm=3)
    pods = [
        make_pod(
            f"w{i}",
            WARM,
            ready=False,
            node=None,
            unschedulable=message,
            age=3600,
            revision=revision_of(pool),
        )
        for i in range(2)
    ] + [make_pod("w-ok", WARM)]
    plan = plan_pool(pool, pods, NONE, now=NOW)
    assert plan.idle and plan.recheck_at is None  # no replacement, no extra pod
    assert plan.status.unschedulable == 2
    assert condition(plan, "Degraded") == (
        ConditionStatus.TRUE,
        "Unschedulable",
        f"2 pods cannot be scheduled: {message}",
    )
    status, reason, text = condition(plan, "WarmPoolReady")
    assert (status, reason) == (ConditionStatus.FALSE, "Unschedulable")
    assert text == f"1/3 warm pods are Ready; 2 cannot be scheduled: {message}"
    assert unschedulable_event(plan.status.conditions) == f"2 pods cannot be scheduled: {message}"


def test_no_unschedulable_event_for_a_healthy_pool() -> None:
    plan = plan_pool(pool_with(warm=1), [make_pod("w", WARM)], NONE, now=NOW)
    assert unschedulable_event(plan.status.conditions) is None


def test_active_pods_are_not_subject_to_the_warm_readiness_timeout() -> None:
    pod = replace(make_pod("a", ACTIVE, ready=False), scheduled_at=SCHEDULED_LONG_AGO)
    plan = plan_pool(pool_with(replicas=1), [pod], NONE, now=NOW)
    assert plan.idle and plan.recheck_at is None


def test_not_ready_since_reads_the_pod_conditions() -> None:
    body = {
        "metadata": {"name": "p", "uid": "u", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"nodeName": "n1"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastTransitionTime": "2026-01-01T00:00:02Z",
                },
                {"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:01Z"},
            ],
        },
    }
    pod = observe_pod(body)
    assert pod.scheduled_at == T0 + datetime.timedelta(seconds=2)
    assert pod.not_ready_since == T0 + datetime.timedelta(seconds=2)
    unplaced = observe_pod({**body, "spec": {}})
    assert unplaced.not_ready_since is None
    ready = observe_pod(
        {
            **body,
            "status": {
                "phase": "Running",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "lastTransitionTime": "2026-01-01T00:00:05Z",
                    }
                ],
            },
        }
    )
    assert ready.not_ready_since is None
    # Bound without the scheduler (no PodScheduled): the creation time stands in.
    bare = observe_pod({**body, "status": {"phase": "Pending"}})
    assert bare.not_ready_since == T0


# --- template changes --------------------------------------------------------------------


def test_on_replenish_keeps_stale_warm_pods_and_refills_from_the_new_template() -> None:
    old = pool_with(warm=3, image="agent:1")
    new = pool_with(warm=3, image="agent:2", updatePolicy="OnReplenish")
    stale = [make_pod(f"w{i}", WARM, revision=revision_of(old)) for i in range(2)]
    plan = plan_pool(new, stale, NONE, now=NOW)
    assert plan.stale == () and plan.deletes == ()
    assert len(plan.creates) == 1
    assert plan.creates[0].manifest["spec"]["containers"][0]["image"] == "agent:2"


def test_on_replenish_replaces_stale_warm_pods_never_placed_on_a_node() -> None:
    old_revision = revision_of(pool_with(image="agent:1"))
    new = pool_with(warm=2, image="agent:2")
    pods = [
        make_pod("w-placed", WARM, revision=old_revision),
        make_pod(
            "w-unplaced",
            WARM,
            ready=False,
            node=None,
            unschedulable="no room",
            revision=old_revision,
        ),
    ]
    plan = plan_pool(new, pods, NONE, now=NOW)
    assert [ref.name for ref in plan.stale] == ["w-unplaced"]
    assert len(plan.creates) == 1
    # The same unplaced pod under the current template is left to wait for room.
    current = replace(pods[1], revision=revision_of(new))
    assert plan_pool(new, [pods[0], current], NONE, now=NOW).idle


def test_recreate_replaces_stale_warm_pods_and_never_touches_active_or_claimed_ones() -> None:
    old_revision = revision_of(pool_with(image="agent:1"))
    new = pool_with(replicas=1, warm=2, image="agent:2", updatePolicy="Recreate")
    pods = [
        make_pod("w-old-1", WARM, revision=old_revision),
        make_pod("w-old-2", WARM, revision=old_revision),
        make_pod("w-new", WARM, revision=revision_of(new)),
        # Active pods are the rollout's (core/rollout.py): this one already runs the new one.
        make_pod("a-new", ACTIVE, revision=revision_of(new)),
        make_pod("c-old", CLAIMED, revision=old_revision, owner=CLAIM_UID),
    ]
    plan = plan_pool(new, pods, NONE, now=NOW)
    assert sorted(ref.name for ref in plan.stale) == ["w-old-1", "w-old-2"]
    assert [c.state for c in plan.creates] == [WARM]  # w-new plus one replacement
    assert plan.creates[0].manifest["metadata"]["labels"]["swarmops.dev/revision"] == (
        revision_of(new)
    )
    touched = {ref.name for ref in plan.all_deletes} | {r.pod.name for r in plan.relabels}
    assert plan.relabels == () and plan.deletes == ()
    assert not touched & {"a-new", "c-old"}
    assert plan.status.claimed == 1
    assert condition(plan, "Progressing")[0] == ConditionStatus.TRUE


def test_recreate_does_not_promote_stale_warm_pods() -> None:
    old_revision = revision_of(pool_with(image="agent:1"))
    new = pool_with(replicas=1, warm=0, image="agent:2", updatePolicy="Recreate")
    plan = plan_pool(new, [make_pod("w-old", WARM, revision=old_revision)], NONE, now=NOW)
    assert plan.relabels == ()
    assert [c.state for c in plan.creates] == [ACTIVE]
    assert [ref.name for ref in plan.stale] == ["w-old"]


def test_recreate_leaves_unseen_stale_creates_out_of_the_count() -> None:
    old_revision = revision_of(pool_with(image="agent:1"))
    new = pool_with(warm=1, image="agent:2", updatePolicy="Recreate")
    expected = Expectations(creates=(ExpectedPod("w-unseen", "uid-unseen", WARM, old_revision),))
    plan = plan_pool(new, [], expected, now=NOW)
    assert [c.state for c in plan.creates] == [WARM]
    assert plan.stale == ()  # nothing to pin a delete to until the cache shows it


# --- spread over nodes -------------------------------------------------------------------


def test_every_pool_pod_spreads_over_hostnames_and_once_only_with_gpus() -> None:
    plain = plan_pool(pool_with(warm=1), [], NONE, now=NOW).creates[0].manifest["spec"]
    assert plain["topologySpreadConstraints"] == [spread_constraint("agents")]
    body = pool_with(warm=1).to_wire()
    body["spec"]["gpu"] = {"count": 1}
    gpu_spec = plan_pool(AgentPool.from_body(body), [], NONE, now=NOW).creates[0].manifest["spec"]
    hostname = [
        c for c in gpu_spec["topologySpreadConstraints"] if c["topologyKey"] == HOSTNAME_LABEL
    ]
    assert hostname == [spread_constraint("agents")]


def test_cold_started_pods_spread_like_the_pools_own() -> None:
    pool = pool_with(warm=1)
    manifest = cold_start_manifest(pool, make_claim(), now=NOW)
    assert manifest["spec"]["topologySpreadConstraints"] == [spread_constraint("agents")]


def test_the_users_hostname_spread_wins_and_other_keys_are_kept() -> None:
    zone = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "X"}
    mine = {"maxSkew": 3, "topologyKey": HOSTNAME_LABEL, "whenUnsatisfiable": "DoNotSchedule"}
    template = {"spec": {"containers": [], "topologySpreadConstraints": [zone]}}
    assert with_hostname_spread(template, "p")["spec"]["topologySpreadConstraints"] == [
        zone,
        spread_constraint("p"),
    ]
    template = {"spec": {"containers": [], "topologySpreadConstraints": [zone, mine]}}
    assert with_hostname_spread(template, "p") == template


constraints = st.lists(
    st.fixed_dictionaries(
        {
            "maxSkew": st.integers(1, 3),
            "topologyKey": st.sampled_from([HOSTNAME_LABEL, "zone", "rack"]),
            "whenUnsatisfiable": st.sampled_from(["ScheduleAnyway", "DoNotSchedule"]),
        }
    ),
    max_size=3,
)


@given(constraints)
def test_the_spread_merge_is_idempotent_keeps_the_users_and_adds_one_hostname_spread(
    users: list[dict[str, Any]],
) -> None:
    template: dict[str, Any] = {"spec": {"containers": [{"name": "a", "image": "a"}]}}
    if users:
        template["spec"]["topologySpreadConstraints"] = users
    before = copy.deepcopy(template)
    result = with_hostname_spread(template, "p")
    assert template == before
    assert with_hostname_spread(result, "p") == result
    merged = result["spec"]["topologySpreadConstraints"]
    assert merged[: len(users)] == users
    assert sum(c["topologyKey"] == HOSTNAME_LABEL for c in merged) == max(
        1, sum(c["topologyKey"] == HOSTNAME_LABEL for c in users)
    )
    if not any(c["topologyKey"] == HOSTNAME_LABEL for c in users):
        assert merged[-1]["labelSelector"] == {"matchLabels": {POOL_LABEL: "p"}}
        assert merged[-1]["whenUnsatisfiable"] == "ScheduleAnyway"


# --- all of it at once ---------------------------------------------------------------------


pod_specs = st.lists(
    st.tuples(
        st.sampled_from([ACTIVE, WARM, CLAIMED]),
        st.sampled_from(["ready", "starting", "late", "unschedulable"]),
        st.booleans(),  # of the current revision
    ),
    max_size=16,
)


@given(
    replicas=st.integers(0, 6),
    warm=st.integers(0, 6),
    policy=st.sampled_from(["OnReplenish", "Recreate"]),
    pods=pod_specs,
)
def test_a_pool_converges_and_claimed_pods_are_never_touched(
    replicas: int, warm: int, policy: str, pods: list[tuple[PodState, str, bool]]
) -> None:
    pool = pool_with(replicas=replicas, warm=warm, image="agent:2", updatePolicy=policy)
    current, old = revision_of(pool), revision_of(pool_with(image="agent:1"))
    observed = []
    for i, (state, health, fresh) in enumerate(pods):
        pod = make_pod(
            f"p{i}",
            state,
            ready=health == "ready",
            node=None if health == "unschedulable" else "n1",
            unschedulable="no room" if health == "unschedulable" else None,
            revision=current if fresh else old,
            owner=CLAIM_UID if state is CLAIMED else POOL_UID,
        )
        scheduled = {"starting": SCHEDULED_RECENTLY, "late": SCHEDULED_LONG_AGO}.get(health)
        observed.append(replace(pod, scheduled_at=scheduled, created=scheduled or T0))
    plan = plan_pool(pool, observed, NONE, now=NOW)
    claimed = {p.uid for p in observed if p.state is CLAIMED}
    assert not claimed & {ref.uid for ref in plan.all_deletes}
    assert not claimed & {r.pod.uid for r in plan.relabels}

    # Apply the plan: new pods come up Ready; what was deleted is gone.
    gone = {ref.uid for ref in plan.all_deletes}
    moved = {r.pod.uid: r.state for r in plan.relabels}
    after = [replace(p, state=moved.get(p.uid, p.state)) for p in observed if p.uid not in gone]
    after += [make_pod(f"new{i}", c.state, revision=current) for i, c in enumerate(plan.creates)]
    again = plan_pool(pool, after, NONE, now=NOW)
    assert again.idle
    alive_warm = [p for p in after if p.state is WARM]
    assert sum(p.state is ACTIVE for p in after) == replicas
    assert len(alive_warm) == warm
    if policy == "Recreate":
        assert all(p.revision == current for p in alive_warm)
    assert sum(p.state is CLAIMED for p in after) == len(claimed)
