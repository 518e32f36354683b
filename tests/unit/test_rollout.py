"""The rollout step machine (core/rollout.py) driven through the pool plan, on a small
simulated cluster: every write the plan asks for is applied to the observed pods, the
status it reports is what the next reconcile reads, and the clock moves on."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from swarmops.api import AgentPool
from swarmops.api.agentpool import RolloutPhase, RolloutStatus
from swarmops.core.analysis import Measurement
from swarmops.core.conditions import find_condition
from swarmops.core.expectations import NONE
from swarmops.core.pods import REVISION_LABEL, ObservedPod, PodState
from swarmops.core.pool import PoolPlan, desired_template, plan_pool
from swarmops.core.revision import template_revision
from swarmops.core.rollout import (
    ROLLED_BACK,
    RolloutAction,
    canary_count,
    decide_rollout,
    due_metrics,
    judge_metrics,
    parse_action,
)
from swarmops.core.testing import CLAIM_UID, T0, make_pod, make_pool

ACTIVE, WARM, CLAIMED = PodState.ACTIVE, PodState.WARM, PodState.CLAIMED


# --- weights -----------------------------------------------------------------------------------


def test_canary_count_rounds_like_argo_rollouts() -> None:
    assert canary_count(41, 10) == 4
    assert canary_count(25, 10) == 3  # 2.5 rounds toward the canary
    assert canary_count(1, 2) == 1  # never 0 canary pods for a 1-99 % weight
    assert canary_count(99, 2) == 1  # nor all of them
    assert canary_count(100, 7) == 7
    assert canary_count(50, 0) == 0


@given(st.integers(1, 99), st.integers(2, 10_000))
def test_a_partial_weight_always_splits_the_pods(weight: int, replicas: int) -> None:
    count = canary_count(weight, replicas)
    assert 1 <= count <= replicas - 1
    # As close to the weight as a whole pod count gets (or clamped to the bounds).
    assert abs(count - replicas * weight / 100) <= 0.5 or count in (1, replicas - 1)


@given(st.integers(0, 2_000), st.integers(1, 99), st.integers(1, 99))
def test_a_larger_weight_never_gives_fewer_canary_pods(replicas: int, a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert canary_count(low, replicas) <= canary_count(high, replicas)


def test_actions_parse_and_unknown_ones_are_none() -> None:
    assert parse_action(" Promote-Full ") is RolloutAction.PROMOTE_FULL
    assert parse_action("rollback") is None
    assert parse_action(None) is None


# --- a small simulated cluster -----------------------------------------------------------------


def canary_pool(
    steps: list[dict[str, Any]] | None,
    *,
    replicas: int = 4,
    warm: int = 2,
    image: str = "agent:2",
    rollout: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    pod_spec: dict[str, Any] | None = None,
) -> AgentPool:
    body = make_pool(replicas=replicas, warm=warm, image=image).to_wire()
    body["spec"]["rollout"] = {
        **({"canary": {"steps": steps}} if steps is not None else {}),
        **(rollout or {}),
    }
    body["spec"]["template"]["spec"].update(pod_spec or {})
    if status is not None:
        body["status"] = status
    return AgentPool.from_body(body)


def revision_of(pool: AgentPool) -> str:
    return template_revision(desired_template(pool))


@dataclasses.dataclass
class Cluster:
    """Pods, the pool's last status and a clock; `reconcile` applies one plan fully."""

    pool: AgentPool
    pods: list[ObservedPod]
    now: datetime.datetime = T0
    templates: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # How a pod of a revision turns out: (ready, restarts, crash looping, unschedulable).
    behaviour: Callable[[str], tuple[bool, int, bool, str | None]] = lambda _: (
        True,
        0,
        False,
        None,
    )
    cold_active: list[str] = dataclasses.field(default_factory=list)  # revisions
    cold_warm: list[str] = dataclasses.field(default_factory=list)
    min_ready_active: int | None = None
    plans: list[PoolPlan] = dataclasses.field(default_factory=list)
    counter: itertools.count[int] = dataclasses.field(default_factory=itertools.count)

    def set_spec(self, pool: AgentPool) -> None:
        self.templates[revision_of(self.pool)] = desired_template(self.pool)
        self.pool = pool.model_copy(update={"status": self.pool.status})

    def reconcile(
        self,
        action: RolloutAction | None = None,
        metrics_for: Callable[[str], Measurement] | None = None,
        *,
        writes: int | None = None,
    ) -> PoolPlan:
        judgement = None
        rollout = self.pool.status.rollout
        if metrics_for is not None and rollout is not None:
            due = due_metrics(self.pool.spec, rollout, self.now)
            judgement = judge_metrics(
                self.pool.spec, rollout, {m.name: metrics_for(m.name) for m in due}
            )
        plan = plan_pool(
            self.pool,
            self.pods,
            NONE,
            now=self.now,
            templates=self.templates,
            action=action,
            metrics=judgement,
        )
        self.plans.append(plan)
        self.apply(plan, writes)
        self.now += datetime.timedelta(seconds=1)
        return plan

    def apply(self, plan: PoolPlan, writes: int | None) -> None:
        """Apply the plan's writes in the handler's order (rollout progress, relabels,
        deletes, drains, creates, status); `writes`: only that many, as if the operator
        died after them."""
        budget = itertools.count()

        def allowed() -> bool:
            return writes is None or next(budget) < writes

        if plan.rollout is not None and plan.rollout.status != self.pool.status.rollout:
            if not allowed():
                return
            self.pool = self.pool.model_copy(update={"status": plan.status})
        for relabel in plan.relabels:
            if not allowed():
                return
            self.pods = [
                dataclasses.replace(p, state=relabel.state) if p.uid == relabel.pod.uid else p
                for p in self.pods
            ]
            self.observe()
        for ref in plan.all_deletes:
            if not allowed():
                return
            self.pods = [p for p in self.pods if p.uid != ref.uid]
            self.observe()
        for ref in plan.drains:
            if not allowed():
                return
            self.pods = [
                dataclasses.replace(p, drain_started_at=self.now) if p.uid == ref.uid else p
                for p in self.pods
            ]
            self.observe()
        for create in plan.creates:
            if not allowed():
                return
            revision = create.manifest["metadata"]["labels"][REVISION_LABEL]
            (self.cold_active if create.state is ACTIVE else self.cold_warm).append(revision)
            ready, restarts, looping, unschedulable = self.behaviour(revision)
            self.pods.append(
                dataclasses.replace(
                    make_pod(
                        f"p{next(self.counter)}",
                        create.state,
                        revision=revision,
                        ready=ready and unschedulable is None,
                        node=None if unschedulable else "node-a",
                        unschedulable=unschedulable,
                    ),
                    created=self.now,
                    restarts=restarts,
                    crash_looping=looping,
                )
            )
        self.pool = self.pool.model_copy(update={"status": plan.status})

    def observe(self) -> None:
        """Ready active pods (not draining) after each write: the floor the bounds keep."""
        ready_active = sum(
            p.ready for p in self.pods if p.state is ACTIVE and p.drain_started_at is None
        )
        self.min_ready_active = (
            ready_active
            if self.min_ready_active is None
            else min(self.min_ready_active, ready_active)
        )

    def until(self, done: Callable[[], bool], limit: int = 60, **kwargs: Any) -> None:
        for _ in range(limit):
            if done():
                return
            self.reconcile(**kwargs)
        raise AssertionError(f"not converged: {self.pool.status.rollout}")

    def active(self, revision: str) -> list[ObservedPod]:
        return [
            p
            for p in self.pods
            if p.state is ACTIVE and p.revision == revision and p.drain_started_at is None
        ]

    def step(self) -> int:
        rollout = self.pool.status.rollout
        return -1 if rollout is None else rollout.current_step_index

    def phase(self) -> RolloutPhase | None:
        rollout = self.pool.status.rollout
        return None if rollout is None else rollout.phase


def settled_cluster(pool: AgentPool) -> Cluster:
    """A cluster whose pool runs `pool`'s template, all pods Ready, status written."""
    cluster = Cluster(pool, [])
    cluster.until(
        lambda: (
            cluster.plans != []
            and cluster.plans[-1].idle
            and cluster.pool.status.replicas == pool.spec.replicas
        )
    )
    cluster.cold_active.clear()
    cluster.cold_warm.clear()
    cluster.min_ready_active = None
    return cluster


STEPS: list[dict[str, Any]] = [
    {"setWeight": 25},
    {"pause": {"durationSeconds": 5}},
    {"analysis": {"podChecks": {"maxRestarts": 0}}},
    {"setWeight": 50},
    {"pause": {}},
]


# --- a healthy canary --------------------------------------------------------------------------


def test_a_healthy_canary_goes_through_every_step_from_warm_pods_and_becomes_stable() -> None:
    cluster = settled_cluster(canary_pool(STEPS, image="agent:1"))
    stable = revision_of(cluster.pool)
    cluster.set_spec(canary_pool(STEPS))
    canary = revision_of(cluster.pool)

    cluster.until(lambda: cluster.phase() is RolloutPhase.PAUSED)
    rollout = cluster.pool.status.rollout
    assert rollout is not None
    assert (rollout.current_step_index, rollout.pause_reason) == (4, "Manual")
    assert (len(cluster.active(canary)), len(cluster.active(stable))) == (2, 2)
    assert cluster.pool.status.current_revision == stable
    assert cluster.pool.status.update_revision == canary
    # Still paused without a person: an indefinite pause waits.
    for _ in range(3):
        cluster.reconcile()
    assert cluster.phase() is RolloutPhase.PAUSED

    cluster.reconcile(action=RolloutAction.PROMOTE)
    cluster.until(lambda: cluster.phase() is RolloutPhase.COMPLETED)
    assert len(cluster.active(canary)) == 4 and not cluster.active(stable)
    assert cluster.pool.status.current_revision == canary
    # No canary pod was cold-started as an active pod: all came from warm pods.
    assert cluster.cold_active == []
    assert set(cluster.cold_warm) <= {canary, stable}
    # maxUnavailable 0: never fewer Ready active pods than replicas.
    assert cluster.min_ready_active == 4
    reasons = [e.reason for p in cluster.plans if p.rollout for e in p.rollout.events]
    assert reasons.count("RolloutStepCompleted") == 4
    assert reasons[0] == "RolloutStarted" and reasons[-1] == "RolloutCompleted"
    assert [p.rollout.finished for p in cluster.plans if p.rollout and p.rollout.finished] == [
        "Promoted"
    ]


def test_a_timed_pause_counts_from_the_step_start_in_status() -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {"durationSeconds": 30}}]
    cluster = settled_cluster(canary_pool(steps, image="agent:1"))
    cluster.set_spec(canary_pool(steps))
    cluster.until(lambda: cluster.step() == 1)
    rollout = cluster.pool.status.rollout
    assert rollout is not None and rollout.step_started_at is not None
    started = rollout.step_started_at
    plan = cluster.reconcile()
    assert plan.recheck_at == started + datetime.timedelta(seconds=30)
    cluster.now = started + datetime.timedelta(seconds=29)
    cluster.reconcile()
    assert cluster.step() == 1
    cluster.now = started + datetime.timedelta(seconds=30)
    cluster.until(lambda: cluster.phase() is RolloutPhase.COMPLETED)


def _never() -> Any:
    raise AssertionError("no rollout in status")


def test_without_a_canary_strategy_pods_are_replaced_within_surge_and_unavailability() -> None:
    cluster = settled_cluster(canary_pool(None, replicas=8, warm=0, image="agent:1"))
    cluster.set_spec(canary_pool(None, replicas=8, warm=0, rollout={"maxSurge": 2}))
    canary = revision_of(cluster.pool)
    most_active = 0

    def done() -> bool:
        nonlocal most_active
        most_active = max(
            most_active, sum(p.state is ACTIVE and p.drain_started_at is None for p in cluster.pods)
        )
        return cluster.phase() is RolloutPhase.COMPLETED

    cluster.until(done)
    assert len(cluster.active(canary)) == 8
    assert most_active <= 8 + 2
    assert cluster.min_ready_active == 8
    assert cluster.cold_active == []


def test_a_pool_without_active_pods_takes_a_new_template_at_once() -> None:
    cluster = settled_cluster(canary_pool(STEPS, replicas=0, warm=2, image="agent:1"))
    cluster.set_spec(canary_pool(STEPS, replicas=0, warm=2))
    cluster.reconcile()
    assert cluster.phase() is RolloutPhase.COMPLETED
    assert cluster.pool.status.current_revision == revision_of(cluster.pool)


# --- failures, pauses and people ---------------------------------------------------------------


def test_a_crash_looping_canary_is_rolled_back_with_the_measured_value() -> None:
    cluster = settled_cluster(canary_pool(STEPS, image="agent:1"))
    stable = revision_of(cluster.pool)
    cluster.set_spec(canary_pool(STEPS))
    canary = revision_of(cluster.pool)
    cluster.behaviour = lambda rev: (
        (False, 3, True, None) if rev == canary else (True, 0, False, None)
    )
    cluster.until(lambda: cluster.phase() is RolloutPhase.ABORTED)
    cluster.until(lambda: cluster.plans[-1].idle)
    assert not [p for p in cluster.pods if p.revision == canary and p.state is not CLAIMED]
    assert len(cluster.active(stable)) == 4
    degraded = find_condition(cluster.pool.status.conditions, "Degraded")
    assert degraded is not None and degraded.reason == ROLLED_BACK
    assert "crash-looping (3 restarts)" in degraded.message
    assert cluster.pool.status.current_revision == stable
    # Aborted stays aborted: no new canary pods until a retry.
    cluster.reconcile()
    assert cluster.phase() is RolloutPhase.ABORTED
    assert not [p for p in cluster.pods if p.revision == canary]


def test_a_canary_restarting_more_than_allowed_fails_its_analysis_step() -> None:
    steps: list[dict[str, Any]] = [
        {"setWeight": 50},
        {"analysis": {"podChecks": {"maxRestarts": 1}}},
    ]
    cluster = settled_cluster(canary_pool(steps, image="agent:1"))
    cluster.set_spec(canary_pool(steps))
    canary = revision_of(cluster.pool)
    cluster.behaviour = lambda rev: (
        (True, 2, False, None) if rev == canary else (True, 0, False, None)
    )
    cluster.until(lambda: cluster.phase() is RolloutPhase.ABORTED)
    assert "restarted 2 times (maxRestarts 1)" in (cluster.pool.status.rollout or _never()).message


def test_abort_then_retry_then_promote_full() -> None:
    cluster = settled_cluster(canary_pool(STEPS, image="agent:1"))
    stable = revision_of(cluster.pool)
    cluster.set_spec(canary_pool(STEPS))
    canary = revision_of(cluster.pool)
    cluster.until(lambda: len(cluster.active(canary)) == 1)

    cluster.reconcile(action=RolloutAction.ABORT)
    assert cluster.phase() is RolloutPhase.ABORTED
    cluster.until(lambda: cluster.plans[-1].idle)
    assert len(cluster.active(stable)) == 4 and not cluster.active(canary)

    cluster.reconcile(action=RolloutAction.RETRY)
    rollout = cluster.pool.status.rollout
    assert rollout is not None and rollout.phase is RolloutPhase.PROGRESSING
    assert rollout.current_step_index == 0
    degraded = find_condition(cluster.pool.status.conditions, "Degraded")
    assert degraded is not None and degraded.status == "False"

    cluster.reconcile(action=RolloutAction.PROMOTE_FULL)
    cluster.until(lambda: cluster.phase() is RolloutPhase.COMPLETED)
    assert len(cluster.active(canary)) == 4 and cluster.cold_active == []


def test_a_new_template_mid_rollout_restarts_at_step_zero_keeping_the_stable() -> None:
    cluster = settled_cluster(canary_pool(STEPS, image="agent:1"))
    stable = revision_of(cluster.pool)
    cluster.set_spec(canary_pool(STEPS, image="agent:2"))
    first = revision_of(cluster.pool)
    cluster.until(lambda: cluster.step() >= 3)

    cluster.set_spec(canary_pool(STEPS, image="agent:3"))
    second = revision_of(cluster.pool)
    plan = cluster.reconcile()
    assert plan.rollout is not None and plan.rollout.finished == "Superseded"
    rollout = cluster.pool.status.rollout
    assert rollout is not None
    assert (rollout.stable_revision, rollout.canary_revision) == (stable, second)
    assert rollout.current_step_index == 0
    cluster.until(lambda: cluster.phase() is RolloutPhase.PAUSED)
    assert not [p for p in cluster.pods if p.revision == first and p.state is ACTIVE]
    assert len(cluster.active(stable)) == 2 and len(cluster.active(second)) == 2


def test_unschedulable_canary_pods_pause_the_rollout_with_the_schedulers_reason() -> None:
    cluster = settled_cluster(canary_pool(STEPS, image="agent:1"))
    stable = revision_of(cluster.pool)
    cluster.set_spec(canary_pool(STEPS))
    canary = revision_of(cluster.pool)
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    cluster.behaviour = lambda rev: (
        (False, 0, False, message) if rev == canary else (True, 0, False, None)
    )
    for _ in range(5):
        cluster.reconcile()
    rollout = cluster.pool.status.rollout
    assert rollout is not None and rollout.phase is RolloutPhase.PAUSED
    assert rollout.pause_reason == "Unschedulable" and message in rollout.message
    assert len(cluster.active(stable)) == 4  # nothing given up for pods that cannot run
    # Room appears: the rollout goes on by itself.
    cluster.behaviour = lambda _: (True, 0, False, None)
    cluster.pods = [
        dataclasses.replace(p, unschedulable=None, node_name="node-a", ready=True, phase="Running")
        for p in cluster.pods
    ]
    cluster.until(
        lambda: len(cluster.active(canary)) == 1 and cluster.phase() is not RolloutPhase.PAUSED
    )


def test_claimed_pods_keep_their_revision_throughout() -> None:
    cluster = settled_cluster(canary_pool(STEPS, image="agent:1"))
    stable = revision_of(cluster.pool)
    claimed = dataclasses.replace(
        make_pod("claimed", CLAIMED, revision=stable, owner=CLAIM_UID), created=T0
    )
    cluster.pods.append(claimed)
    cluster.set_spec(canary_pool(STEPS))
    cluster.until(lambda: cluster.phase() is RolloutPhase.PAUSED)
    cluster.reconcile(action=RolloutAction.PROMOTE)
    cluster.until(lambda: cluster.phase() is RolloutPhase.COMPLETED)
    assert claimed in cluster.pods
    for plan in cluster.plans:
        touched = {r.uid for r in plan.all_deletes + plan.drains} | {
            r.pod.uid for r in plan.relabels
        }
        assert claimed.uid not in touched


# --- analysis metrics --------------------------------------------------------------------------

METRIC_STEPS: list[dict[str, Any]] = [
    {"setWeight": 50},
    {
        "analysis": {
            "metrics": [
                {
                    "name": "errors",
                    "prometheus": {"query": "x"},
                    "successCondition": "result < 0.05",
                    "intervalSeconds": 2,
                    "count": 2,
                }
            ]
        }
    },
]


def measured(value: float | None, now: datetime.datetime, error: str | None = None) -> Measurement:
    return Measurement(at=now, value=value, error=error)


def test_a_failing_metric_rolls_back_naming_the_metric_and_value() -> None:
    cluster = settled_cluster(canary_pool(METRIC_STEPS, image="agent:1"))
    cluster.set_spec(canary_pool(METRIC_STEPS))
    cluster.until(
        lambda: cluster.phase() is RolloutPhase.ABORTED,
        metrics_for=lambda _: measured(0.4, cluster.now),
    )
    message = (cluster.pool.status.rollout or _never()).message
    assert "errors" in message and "0.4" in message


def test_passing_metrics_promote_and_provider_errors_pause_without_promoting() -> None:
    cluster = settled_cluster(canary_pool(METRIC_STEPS, image="agent:1"))
    cluster.set_spec(canary_pool(METRIC_STEPS))
    cluster.until(
        lambda: cluster.phase() is RolloutPhase.COMPLETED,
        metrics_for=lambda _: measured(0.01, cluster.now),
    )

    cluster.set_spec(canary_pool(METRIC_STEPS, image="agent:3"))
    cluster.until(
        lambda: cluster.phase() is RolloutPhase.PAUSED,
        limit=120,
        metrics_for=lambda _: measured(None, cluster.now, error="connection refused"),
    )
    rollout = cluster.pool.status.rollout
    assert rollout is not None and rollout.pause_reason == "ProviderErrors"
    for _ in range(20):
        cluster.reconcile(metrics_for=lambda _: measured(None, cluster.now, error="refused"))
    assert cluster.phase() is RolloutPhase.PAUSED  # never promoted


# --- drain -------------------------------------------------------------------------------------


def test_active_pods_with_an_agent_are_drained_and_removed_at_the_deadline() -> None:
    pool = canary_pool(None, replicas=1, warm=0, rollout={"drainTimeoutSeconds": 60})
    agent = dataclasses.replace(
        make_pod("busy", ACTIVE, revision=revision_of(pool)), has_agent=True
    )
    plain = make_pod("plain", ACTIVE, revision=revision_of(pool))
    pool = pool.model_copy(
        update={"status": pool.status.model_copy(update={"current_revision": revision_of(pool)})}
    )
    plan = plan_pool(
        pool,
        [agent, plain, make_pod("keep", ACTIVE, revision=revision_of(pool), age=100)],
        NONE,
        now=T0,
    )
    # The pool shrank by two: the agent is drained, the pod without one deleted at once.
    assert [r.name for r in plan.drains] == ["busy"]
    assert [r.name for r in plan.deletes] == ["plain"]

    draining = dataclasses.replace(agent, drain_started_at=T0)
    keep = make_pod("keep", ACTIVE, revision=revision_of(pool), age=100)
    plan = plan_pool(pool, [draining, keep], NONE, now=T0 + datetime.timedelta(seconds=10))
    assert [r.name for r in plan.draining] == ["busy"] and not plan.deletes
    assert plan.status.replicas == 1  # a draining pod no longer counts as active
    assert plan.recheck_at == T0 + datetime.timedelta(seconds=60)
    plan = plan_pool(pool, [draining, keep], NONE, now=T0 + datetime.timedelta(seconds=60))
    assert [r.name for r in plan.deletes] == ["busy"]


# --- killed at any point -----------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=80))
def test_an_operator_killed_mid_reconcile_converges_without_cold_starts(
    interruptions: list[int],
) -> None:
    """Each reconcile gets through only some of its writes (the operator died); the next
    one starts from what the cluster and the status show. Same end, same guarantees."""
    steps: list[dict[str, Any]] = [{"setWeight": 25}, {"analysis": {}}, {"setWeight": 75}]
    cluster = settled_cluster(canary_pool(steps, replicas=4, warm=1, image="agent:1"))
    cluster.set_spec(canary_pool(steps, replicas=4, warm=1))
    canary = revision_of(cluster.pool)
    for writes in interruptions:
        cluster.reconcile(writes=writes)
    cluster.until(lambda: cluster.phase() is RolloutPhase.COMPLETED, limit=80)
    assert len(cluster.active(canary)) == 4
    assert cluster.cold_active == []
    assert cluster.min_ready_active is not None and cluster.min_ready_active >= 4
    # Every canary pod started is still there: none was started and thrown away.
    assert cluster.cold_warm.count(canary) == len([p for p in cluster.pods if p.revision == canary])


def test_a_step_waiting_for_pods_past_its_deadline_is_degraded_but_not_rolled_back() -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {"durationSeconds": 7200}}]
    rollout = {"progressDeadlineSeconds": 60}
    cluster = settled_cluster(canary_pool(steps, image="agent:1", rollout=rollout))
    cluster.set_spec(canary_pool(steps, rollout=rollout))
    canary = revision_of(cluster.pool)
    cluster.behaviour = lambda rev: (
        (False, 0, False, None) if rev == canary else (True, 0, False, None)
    )
    cluster.until(lambda: cluster.step() == 0)
    cluster.now += datetime.timedelta(seconds=61)
    cluster.reconcile()
    degraded = find_condition(cluster.pool.status.conditions, "Degraded")
    assert degraded is not None and degraded.reason == "ProgressDeadlineExceeded"
    assert cluster.phase() is RolloutPhase.PROGRESSING

    # Pods Ready: on to the two-hour pause, which is no lack of progress.
    cluster.pods = [dataclasses.replace(p, ready=True, phase="Running") for p in cluster.pods]
    cluster.behaviour = lambda _: (True, 0, False, None)
    cluster.until(lambda: cluster.step() == 1)
    cluster.now += datetime.timedelta(seconds=3600)
    cluster.reconcile()
    degraded = find_condition(cluster.pool.status.conditions, "Degraded")
    assert degraded is not None and degraded.status == "False"


def test_require_ready_false_lets_the_analysis_judge_canary_pods_that_are_not_ready() -> None:
    def at_analysis(require_ready: bool) -> int:
        steps: list[dict[str, Any]] = [
            {"setWeight": 50},
            {"analysis": {"podChecks": {"requireReady": require_ready}}},
            {"pause": {}},
        ]
        old = canary_pool(steps, replicas=2, warm=0, image="agent:1")
        pool = canary_pool(steps, replicas=2, warm=0)
        stable, canary = revision_of(old), revision_of(pool)
        previous = RolloutStatus(
            phase=RolloutPhase.PROGRESSING,
            stable_revision=stable,
            canary_revision=canary,
            current_step_index=1,
            step_started_at=T0,
        )
        pods = [
            make_pod("s", ACTIVE, revision=stable),
            make_pod("c", ACTIVE, revision=canary, ready=False),
        ]
        decision = decide_rollout(
            pool.spec,
            update_revision=canary,
            current_revision=stable,
            previous=previous,
            pods=pods,
            action=None,
            now=T0,
        )
        assert decision.status is not None
        return decision.status.current_step_index

    assert at_analysis(require_ready=True) == 1  # waits for the pod
    assert at_analysis(require_ready=False) == 2  # judged as it is: on to the pause


@settings(max_examples=60, deadline=None)
@given(
    replicas=st.integers(1, 8),
    warm=st.integers(0, 3),
    surge=st.integers(0, 3),
    unavailable=st.integers(0, 2),
    weights=st.lists(st.integers(1, 99), max_size=3, unique=True).map(sorted),
    interruptions=st.lists(st.integers(0, 4), max_size=30),
)
def test_any_rollout_keeps_its_bounds_and_starts_each_canary_pod_once(
    *,
    replicas: int,
    warm: int,
    surge: int,
    unavailable: int,
    weights: list[int],
    interruptions: list[int],
) -> None:
    if surge == 0 and unavailable == 0:
        surge = 1  # the schema refuses both at zero: the rollout could never move
    steps: list[dict[str, Any]] = [{"setWeight": w} for w in weights] + [{"analysis": {}}]
    rollout = {"maxSurge": surge, "maxUnavailable": unavailable}
    cluster = settled_cluster(
        canary_pool(steps, replicas=replicas, warm=warm, image="agent:1", rollout=rollout)
    )
    cluster.set_spec(canary_pool(steps, replicas=replicas, warm=warm, rollout=rollout))
    canary = revision_of(cluster.pool)
    most_active = 0

    def done() -> bool:
        nonlocal most_active
        live = [p for p in cluster.pods if p.state is ACTIVE and p.drain_started_at is None]
        most_active = max(most_active, len(live))
        return cluster.phase() is RolloutPhase.COMPLETED

    for writes in interruptions:
        cluster.reconcile(writes=writes)
        done()
    cluster.until(done, limit=120)
    assert len(cluster.active(canary)) == replicas
    assert cluster.cold_active == []
    assert cluster.min_ready_active is not None
    assert cluster.min_ready_active >= replicas - unavailable
    assert most_active <= replicas + surge
    assert cluster.cold_warm.count(canary) == len([p for p in cluster.pods if p.revision == canary])
