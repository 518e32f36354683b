"""The rollout step machine: how a template change reaches an AgentPool's active pods.

`decide_rollout` is one pure function from the pool, the revision its template hashes
to, the pods observed, a manual action and the analysis verdict, to the active and
warm pods wanted per revision and the next `RolloutStatus`. All progress lives in that
status (step index, when the step started), so an operator killed at any point resumes
at the same step, and a timed pause counts from the timestamp in status.

Rules (docs/rollout.md says the same for users):
* The stable revision is the one status names (`rollout.stableRevision`, else
  `currentRevision`); a template that hashes differently is the canary. A pool with
  no replicas, or no active pod of the stable revision, has nothing to protect: the
  new revision becomes stable at once.
* `setWeight` moves that share of the active pods (by count, rounded like Argo
  Rollouts: never 0 canary pods for a 1-99 % weight when replicas >= 2, never all of
  them) to the canary. Canary pods are never cold-started as active pods: the canary
  revision is prewarmed in the warm pool and warm pods are relabelled active, so no pod
  is started twice for one rollout. After the last step the canary is promoted to all
  pods the same way, and becomes stable.
* Stable pods leave drain-aware (the pool plan drains them); at most `maxSurge` extra
  active pods exist, and at most `maxUnavailable` Ready ones are missing.
* Pod checks (readiness, restarts, crash loops, time to Ready) of the next analysis
  step judge the canary pods, prewarmed ones included, from the step they belong to
  onwards: a failure rolls back. Canary pods the scheduler cannot place pause the
  rollout with its reason; they are not a failure.
* Rollback (abort): the canary is scaled to zero, stable restored to full size (from
  the stable warm pool first); the rollout stays Aborted until `retry` or a new
  template. A new template mid-rollout restarts at step 0 with the stable kept.
* Without a canary strategy the rollout is one implicit `setWeight: 100`: a rolling
  replacement bounded by maxSurge and maxUnavailable.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from swarmops.api.agentpool import (
    AgentPoolSpec,
    AnalysisMetric,
    CanaryStep,
    MetricResult,
    PodChecks,
    RolloutPhase,
    RolloutStatus,
)
from swarmops.api.common import IntOrPercent
from swarmops.core.analysis import (
    AnalysisOutcome,
    Measurement,
    measurement_due,
    next_measurement_at,
    record,
    verdict,
)
from swarmops.core.pods import ObservedPod, PodState

#: The annotation people (or tools) set on an AgentPool to steer its rollout; the
#: operator acts on it once and removes it.
ROLLOUT_ACTION_ANNOTATION = "swarmops.dev/rollout-action"

# Reasons, shared by status, conditions and Events.
PAUSED_MANUAL = "Manual"
PAUSED_UNSCHEDULABLE = "Unschedulable"
PAUSED_INCONCLUSIVE = "Inconclusive"
PAUSED_INSUFFICIENT_DATA = "InsufficientData"
PAUSED_PROVIDER_ERRORS = "ProviderErrors"
ROLLED_BACK = "RolloutAborted"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"


class RolloutAction(enum.StrEnum):
    """What a person asks of a rollout through ROLLOUT_ACTION_ANNOTATION."""

    PROMOTE = "promote"  # end the current step (a pause, a paused analysis) and go on
    PROMOTE_FULL = "promote-full"  # skip the remaining steps: promote to all pods now
    ABORT = "abort"  # roll back to the stable revision
    RETRY = "retry"  # start an aborted rollout again from step 0


@dataclass(frozen=True)
class MetricsJudgement:
    """The verdict of the current step's metrics, and the metric results to keep in status."""

    step_index: int  # the step the metrics belong to: a verdict on another step is ignored
    verdict: AnalysisOutcome
    message: str
    results: tuple[MetricResult, ...] = ()


def step_metrics(spec: AgentPoolSpec, status: RolloutStatus | None) -> list[AnalysisMetric]:
    """The metrics of the step the rollout is in (empty outside a running analysis step)."""
    if status is None or status.phase not in _UNDER_WAY:
        return []
    steps = _steps(spec)
    index = status.current_step_index
    analysis = steps[index].analysis if index < len(steps) else None
    return list(analysis.metrics) if analysis is not None else []


def due_metrics(
    spec: AgentPoolSpec, status: RolloutStatus | None, now: datetime.datetime
) -> list[AnalysisMetric]:
    """The current step's metrics to measure now (the handler does the measuring)."""
    if status is None or status.step_started_at is None:
        return []
    results = {r.name: r for r in status.analysis}
    return [
        metric
        for metric in step_metrics(spec, status)
        if measurement_due(metric, results.get(metric.name), status.step_started_at, now)
    ]


def judge_metrics(
    spec: AgentPoolSpec, status: RolloutStatus, measurements: Mapping[str, Measurement]
) -> MetricsJudgement | None:
    """The current step's metric results with `measurements` (by metric name) recorded,
    and their verdict; None outside an analysis step with metrics."""
    metrics = step_metrics(spec, status)
    if not metrics:
        return None
    before = {r.name: r for r in status.analysis}
    results = []
    for metric in metrics:
        result = before.get(metric.name)
        taken = measurements.get(metric.name)
        if taken is not None:
            result = record(metric, result, taken)
        if result is not None:
            results.append(result)
    outcome, message = verdict(metrics, results)
    return MetricsJudgement(status.current_step_index, outcome, message, tuple(results))


def next_measurement(spec: AgentPoolSpec, status: RolloutStatus | None) -> datetime.datetime | None:
    """When the current step's next metric measurement is due (to look again then)."""
    if status is None or status.step_started_at is None:
        return None
    results = {r.name: r for r in status.analysis}
    times = [
        next_measurement_at(metric, results.get(metric.name), status.step_started_at)
        for metric in step_metrics(spec, status)
    ]
    present = [t for t in times if t is not None]
    return min(present) if present else None


def parse_action(value: str | None) -> RolloutAction | None:
    try:
        return RolloutAction(value.strip().lower()) if value else None
    except ValueError:
        return None


def canary_count(weight: int, replicas: int) -> int:
    """Active pods of the canary for `weight` percent of `replicas`, by pod count.

    Rounded to the nearest count, halves up (Argo Rollouts breaks ties toward the
    canary); for a 1-99 % weight with at least 2 replicas, never 0 and never all of them.
    """
    if replicas <= 0 or weight <= 0:
        return 0
    if weight >= 100:
        return replicas
    count = math.floor(replicas * weight / 100 + 0.5)
    if replicas >= 2:
        count = min(max(count, 1), replicas - 1)
    return count


def scaled(value: IntOrPercent, replicas: int, *, round_up: bool) -> int:
    """maxSurge (rounded up) or maxUnavailable (rounded down) as a pod count."""
    if isinstance(value, int):
        return value
    percent = int(value.rstrip("%"))
    exact = replicas * percent / 100
    return math.ceil(exact) if round_up else math.floor(exact)


@dataclass(frozen=True)
class ActiveTarget:
    """Active pods wanted of one revision, and how the pool may get there."""

    count: int
    # False for the canary: its pods come from Ready warm pods only, never cold-started.
    cold_start: bool = True
    # Most warm pods to relabel active now (maxSurge); None: as many as are missing.
    max_promotions: int | None = None


@dataclass(frozen=True)
class RolloutEvent:
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class RolloutDecision:
    """What the pool plan should make of the active and warm pods, and what to report."""

    stable_revision: str
    #: Active pods wanted per revision; revisions not named here are drained to zero.
    active: Mapping[str, ActiveTarget]
    #: Warm pods of the canary revision wanted on top of the spare warm pool.
    prewarm: Mapping[str, int]
    #: The revision new spare warm pods get (the stable one while a rollout runs).
    spare_revision: str
    status: RolloutStatus | None
    events: tuple[RolloutEvent, ...] = ()
    #: (reason, message) for the pool's Degraded condition; None: the rollout is fine.
    degraded: tuple[str, str] | None = None
    #: The rollout ended in this reconcile: Promoted, Aborted or Superseded (for metrics).
    finished: str | None = None
    #: When to look again though nothing changes (a timed pause ends, a deadline passes).
    recheck_at: datetime.datetime | None = None
    #: The rollout is under way (Progressing, or Paused): the pool is Progressing.
    in_progress: bool = False


def _steps(spec: AgentPoolSpec) -> Sequence[CanaryStep]:
    if spec.rollout.canary is None:
        return (CanaryStep(set_weight=100),)
    return spec.rollout.canary.steps


def _weight_at(steps: Sequence[CanaryStep], index: int) -> int:
    """The canary weight in force at step `index` (100 once past the last step)."""
    if index >= len(steps):
        return 100
    weights = [s.set_weight for s in steps[: index + 1] if s.set_weight is not None]
    return weights[-1] if weights else 0


def _next_weight(steps: Sequence[CanaryStep], index: int) -> int:
    """The weight the canary grows to next: prewarm for it ahead of time."""
    for step in steps[index:]:
        if step.set_weight is not None:
            return step.set_weight
    return 100


def pod_checks_in_force(steps: Sequence[CanaryStep], index: int) -> PodChecks | None:
    """The pod checks of the first analysis step at or after `index`; None: none left."""
    for step in steps[index:]:
        if step.analysis is not None:
            return step.analysis.pod_checks
    return None


def failed_pod_check(
    checks: PodChecks, pods: Sequence[ObservedPod], now: datetime.datetime
) -> str | None:
    """The first check a canary pod fails, with the measured value; None: all pass.

    Readiness itself is not a failure here (a pod may still be starting; the step waits
    for it): only time to Ready is, when `maxTimeToReadySeconds` is set.
    """
    for pod in sorted(pods, key=lambda p: p.name):
        if pod.crash_looping:
            return f"canary pod {pod.name} is crash-looping ({pod.restarts} restarts)"
        if pod.restarts > checks.max_restarts:
            return (
                f"canary pod {pod.name} restarted {pod.restarts} times "
                f"(maxRestarts {checks.max_restarts})"
            )
        limit = checks.max_time_to_ready_seconds
        start = pod.scheduled_at or pod.created
        if limit is not None and start is not None and pod.node_name is not None:
            if pod.ready and pod.ready_changed_at is not None:
                took = (pod.ready_changed_at - start).total_seconds()
            elif not pod.ready:
                took = (now - start).total_seconds()
            else:
                took = 0.0
            if took > limit:
                state = "became Ready" if pod.ready else "is not Ready"
                return (
                    f"canary pod {pod.name} {state} after {took:.0f}s "
                    f"(maxTimeToReadySeconds {limit})"
                )
    return None


@dataclass(frozen=True)
class _Pods:
    """The pool's active and warm pods (not draining), by revision."""

    active: Mapping[str, Sequence[ObservedPod]]
    warm: Mapping[str, Sequence[ObservedPod]]

    @classmethod
    def of(cls, pods: Sequence[ObservedPod]) -> _Pods:
        active: dict[str, list[ObservedPod]] = {}
        warm: dict[str, list[ObservedPod]] = {}
        for pod in pods:
            into = active if pod.state is PodState.ACTIVE else warm
            into.setdefault(pod.revision or "", []).append(pod)
        return cls(active, warm)

    def count(self, revision: str) -> int:
        return len(self.active.get(revision, ()))

    def ready(self, revision: str) -> int:
        return sum(p.ready for p in self.active.get(revision, ()))

    def others(self, *revisions: str) -> int:
        return sum(len(v) for r, v in self.active.items() if r not in revisions)


def _steady(spec: AgentPoolSpec, revision: str, status: RolloutStatus | None) -> RolloutDecision:
    return RolloutDecision(
        stable_revision=revision,
        active={revision: ActiveTarget(spec.replicas)},
        prewarm={},
        spare_revision=revision,
        status=status,
    )


def decide_rollout(
    spec: AgentPoolSpec,
    *,
    update_revision: str,
    current_revision: str | None,
    previous: RolloutStatus | None,
    pods: Sequence[ObservedPod],
    action: RolloutAction | None,
    now: datetime.datetime,
    metrics: MetricsJudgement | None = None,
) -> RolloutDecision:
    """The rollout's next state and the pods it wants (see the module's rules).

    `pods` are the pool's active and warm pods that are not draining; `previous` the
    rollout status last written; `current_revision` the pool's status.currentRevision
    (the stable revision of a pool that has never rolled out). `metrics`: the verdict
    of the current analysis step's metrics, when it has metrics.
    """
    stable = (previous.stable_revision if previous else None) or current_revision
    stable = stable or update_revision
    observed = _Pods.of(pods)
    if stable == update_revision:
        if previous is not None and previous.phase in _UNDER_WAY | {RolloutPhase.ABORTED}:
            # The template went back to the stable one: nothing left to roll out.
            ended = previous.model_copy(
                update={
                    "phase": RolloutPhase.COMPLETED,
                    "pause_reason": None,
                    "canary_revision": update_revision,
                    "message": "the template is the stable revision again",
                    "analysis": [],
                }
            )
            return dataclasses.replace(_steady(spec, stable, ended), finished="Superseded")
        return _steady(spec, stable, previous)
    if spec.replicas == 0 or (
        observed.count(stable) == 0 and (previous is None or previous.phase not in _UNDER_WAY)
    ):
        # No active pod of the stable revision to protect: the new one is stable at once.
        done = RolloutStatus(
            phase=RolloutPhase.COMPLETED,
            stable_revision=update_revision,
            canary_revision=update_revision,
            current_step_index=len(_steps(spec)),
            started_at=now,
            step_started_at=now,
            canary_weight=100,
            message="no active pods of the previous revision: promoted at once",
        )
        return _steady(spec, update_revision, done)
    return _Machine(spec, stable, update_revision, observed, now).run(previous, action, metrics)


_UNDER_WAY = frozenset({RolloutPhase.PROGRESSING, RolloutPhase.PAUSED})


class _Machine:
    """One rollout's step machine for one reconcile (stable != canary)."""

    def __init__(
        self,
        spec: AgentPoolSpec,
        stable: str,
        canary: str,
        pods: _Pods,
        now: datetime.datetime,
    ) -> None:
        self.spec = spec
        self.stable = stable
        self.canary = canary
        self.pods = pods
        self.now = now
        self.steps = _steps(spec)
        self.replicas = spec.replicas
        self.events: list[RolloutEvent] = []
        self.finished: str | None = None

    # --- transitions ------------------------------------------------------------------------

    def _fresh(self, started_at: datetime.datetime | None = None) -> RolloutStatus:
        return RolloutStatus(
            phase=RolloutPhase.PROGRESSING,
            stable_revision=self.stable,
            canary_revision=self.canary,
            current_step_index=0,
            started_at=started_at or self.now,
            step_started_at=self.now,
        )

    def _enter_step(self, status: RolloutStatus, index: int) -> RolloutStatus:
        return status.model_copy(
            update={
                "current_step_index": index,
                "step_started_at": self.now,
                "phase": RolloutPhase.PROGRESSING,
                "pause_reason": None,
                "analysis": [],
            }
        )

    def _abort(self, status: RolloutStatus, why: str) -> RolloutStatus:
        self.events.append(
            RolloutEvent(
                ROLLED_BACK,
                f"Rolling back revision {self.canary} to {self.stable}: {why}",
                warning=True,
            )
        )
        self.finished = "Aborted"
        return status.model_copy(
            update={"phase": RolloutPhase.ABORTED, "pause_reason": None, "message": why}
        )

    def run(
        self,
        previous: RolloutStatus | None,
        action: RolloutAction | None,
        metrics: MetricsJudgement | None,
    ) -> RolloutDecision:
        status = previous
        if (
            status is None
            or status.canary_revision != self.canary
            or (status.phase is RolloutPhase.COMPLETED)
        ):
            if status is not None and status.phase in _UNDER_WAY:
                self.finished = "Superseded"
                self.events.append(
                    RolloutEvent(
                        "RolloutRestarted",
                        f"The template changed during the rollout of {status.canary_revision}: "
                        f"rolling out {self.canary} from step 0, {self.stable} stays stable",
                    )
                )
            else:
                self.events.append(
                    RolloutEvent(
                        "RolloutStarted", f"Rolling out revision {self.canary} over {self.stable}"
                    )
                )
            status = self._fresh()
        if status.phase is RolloutPhase.ABORTED:
            if action is RolloutAction.RETRY:
                self.events.append(
                    RolloutEvent("RolloutRetried", f"Retrying the rollout of {self.canary}")
                )
                status = self._fresh(status.started_at)
            else:
                return self._decision(status)
        if action is RolloutAction.ABORT:
            return self._decision(self._abort(status, "aborted by request"))
        if action is RolloutAction.PROMOTE_FULL:
            self.events.append(RolloutEvent("RolloutPromotedFully", "Promoting to all pods now"))
            status = self._enter_step(status, len(self.steps))
        elif action is RolloutAction.PROMOTE and status.current_step_index < len(self.steps):
            self.events.append(
                RolloutEvent(
                    "RolloutPromoted",
                    f"Step {status.current_step_index} ended by request",
                )
            )
            status = self._enter_step(status, status.current_step_index + 1)
        # Steps already satisfied end at once: bounded by the number of steps.
        for _ in range(len(self.steps) + 2):
            status, advanced = self._step(status, metrics)
            if not advanced or status.phase is not RolloutPhase.PROGRESSING:
                break
        return self._decision(status)

    def _step(
        self, status: RolloutStatus, metrics: MetricsJudgement | None
    ) -> tuple[RolloutStatus, bool]:
        """Judge the current step; returns the status and whether the step ended."""
        index = status.current_step_index
        checks = pod_checks_in_force(self.steps, index)
        canary_pods = [
            *self.pods.active.get(self.canary, ()),
            *self.pods.warm.get(self.canary, ()),
        ]
        if checks is not None:
            failed = failed_pod_check(checks, canary_pods, self.now)
            if failed is not None:
                return self._abort(status, failed), False
        unplaced = [p.unschedulable for p in canary_pods if p.unschedulable]
        if unplaced:
            message = f"{len(unplaced)} canary pods cannot be scheduled: {unplaced[0]}"
            return self._paused(status, PAUSED_UNSCHEDULABLE, message), False
        if index >= len(self.steps):
            return self._promotion(status)
        step = self.steps[index]
        # An analysis step with requireReady: false judges canary pods that are not Ready.
        require_ready = step.analysis is None or step.analysis.pod_checks.require_ready
        in_place = self._weight_in_place(_weight_at(self.steps, index), ready=require_ready)
        if step.set_weight is not None:
            if in_place:
                return self._next(status, f"canary at {step.set_weight}%"), True
            return self._progressing(status, f"moving {step.set_weight}% of pods to the canary")
        if not in_place:
            # A pause or analysis holds the weight of the step before it; pods lost on
            # the way (a node went) are made up before judging.
            return self._progressing(status, "waiting for the canary pods")
        if step.pause is not None:
            seconds = step.pause.duration_seconds
            if seconds is None:
                return self._paused(status, PAUSED_MANUAL, "paused until promoted"), False
            started = status.step_started_at or self.now
            if self.now >= started + datetime.timedelta(seconds=seconds):
                return self._next(status, f"paused {seconds}s"), True
            return self._progressing(status, f"pausing for {seconds}s")
        assert step.analysis is not None
        if not step.analysis.metrics:
            return self._next(status, "pod checks passed"), True
        if metrics is None or metrics.step_index != index:
            return self._progressing(status, "analysis running")
        status = status.model_copy(update={"analysis": list(metrics.results)})
        if metrics.verdict is AnalysisOutcome.SUCCESSFUL:
            return self._next(status, f"analysis successful: {metrics.message}"), True
        if metrics.verdict is AnalysisOutcome.FAILED:
            return self._abort(status, f"analysis failed: {metrics.message}"), False
        if metrics.verdict is AnalysisOutcome.RUNNING:
            return self._progressing(status, f"analysis running: {metrics.message}")
        reason = {
            AnalysisOutcome.INCONCLUSIVE: PAUSED_INCONCLUSIVE,
            AnalysisOutcome.PROVIDER_ERRORS: PAUSED_PROVIDER_ERRORS,
            AnalysisOutcome.INSUFFICIENT_DATA: PAUSED_INSUFFICIENT_DATA,
        }[metrics.verdict]
        return self._paused(status, reason, metrics.message), False

    def _promotion(self, status: RolloutStatus) -> tuple[RolloutStatus, bool]:
        """After the last step: every active pod becomes the canary, then it is stable."""
        if not self._weight_in_place(100):
            return self._progressing(status, "promoting the canary to all pods")
        self.finished = "Promoted"
        self.events.append(
            RolloutEvent("RolloutCompleted", f"Revision {self.canary} is stable on all pods")
        )
        done = status.model_copy(
            update={
                "phase": RolloutPhase.COMPLETED,
                "stable_revision": self.canary,
                "pause_reason": None,
                "message": "promoted to all pods",
            }
        )
        self.stable = self.canary
        return done, False

    def _weight_in_place(self, weight: int, *, ready: bool = True) -> bool:
        want = canary_count(weight, self.replicas)
        return (
            self.pods.count(self.canary) == want
            and (not ready or self.pods.ready(self.canary) == want)
            and self.pods.count(self.stable) == self.replicas - want
            and self.pods.others(self.canary, self.stable) == 0
        )

    def _next(self, status: RolloutStatus, done: str) -> RolloutStatus:
        index = status.current_step_index
        self.events.append(RolloutEvent("RolloutStepCompleted", f"Step {index} done: {done}"))
        return self._enter_step(status, index + 1)

    def _progressing(self, status: RolloutStatus, message: str) -> tuple[RolloutStatus, bool]:
        return (
            status.model_copy(
                update={"phase": RolloutPhase.PROGRESSING, "pause_reason": None, "message": message}
            ),
            False,
        )

    def _paused(self, status: RolloutStatus, reason: str, message: str) -> RolloutStatus:
        if status.phase is not RolloutPhase.PAUSED or status.pause_reason != reason:
            self.events.append(
                RolloutEvent(
                    "RolloutPaused",
                    f"Step {status.current_step_index} paused ({reason}): {message}",
                    warning=reason != PAUSED_MANUAL,
                )
            )
        return status.model_copy(
            update={"phase": RolloutPhase.PAUSED, "pause_reason": reason, "message": message}
        )

    # --- the pods wanted --------------------------------------------------------------------

    def _decision(self, status: RolloutStatus) -> RolloutDecision:
        n = self.replicas
        if status.phase is RolloutPhase.COMPLETED:
            return dataclasses.replace(
                _steady(self.spec, self.stable, self._counted(status, 100)),
                events=tuple(self.events),
                finished=self.finished,
            )
        if status.phase is RolloutPhase.ABORTED:
            return RolloutDecision(
                stable_revision=self.stable,
                active={self.stable: ActiveTarget(n), self.canary: ActiveTarget(0)},
                prewarm={},
                spare_revision=self.stable,
                status=self._counted(status, 0),
                events=tuple(self.events),
                degraded=(ROLLED_BACK, status.message),
                finished=self.finished,
            )
        index = status.current_step_index
        weight = _weight_at(self.steps, index)
        want = canary_count(weight, n)
        surge = scaled(self.spec.rollout.max_surge, n, round_up=True)
        unavailable = scaled(self.spec.rollout.max_unavailable, n, round_up=False)
        active_now = self.pods.count(self.canary) + self.pods.count(self.stable)
        promotions = max(0, n + surge - active_now - self.pods.others(self.canary, self.stable))
        stable_floor = max(n - want, n - unavailable - self.pods.ready(self.canary))
        # Prewarm for the weight the canary grows to next, so that its pods are warm and
        # Ready by the time the step that needs them comes.
        grow_to = canary_count(_next_weight(self.steps, index), n)
        prewarm = max(0, grow_to - self.pods.count(self.canary))
        if self.spec.warm_pool.max_size is not None:
            spare = self.spec.warm_pool.size
            prewarm = min(prewarm, max(0, self.spec.warm_pool.max_size - spare))
        recheck_at = self._recheck_at(status)
        degraded = None
        deadline = (status.step_started_at or self.now) + datetime.timedelta(
            seconds=self.spec.rollout.progress_deadline_seconds
        )
        # The deadline bounds waiting for pods; timed pauses and metrics keep their own time.
        waiting_for_pods = status.phase is RolloutPhase.PROGRESSING and (
            index >= len(self.steps)
            or self.steps[index].set_weight is not None
            or not self._weight_in_place(weight)
        )
        if waiting_for_pods and self.now >= deadline:
            degraded = (
                PROGRESS_DEADLINE_EXCEEDED,
                f"step {index} made no progress in "
                f"{self.spec.rollout.progress_deadline_seconds}s: {status.message}",
            )
        elif waiting_for_pods:
            recheck_at = deadline if recheck_at is None else min(recheck_at, deadline)
        return RolloutDecision(
            stable_revision=self.stable,
            active={
                self.stable: ActiveTarget(stable_floor),
                self.canary: ActiveTarget(want, cold_start=False, max_promotions=promotions),
            },
            prewarm={self.canary: prewarm},
            spare_revision=self.stable,
            status=self._counted(status, weight),
            events=tuple(self.events),
            degraded=degraded,
            finished=self.finished,
            recheck_at=recheck_at,
            in_progress=True,
        )

    def _recheck_at(self, status: RolloutStatus) -> datetime.datetime | None:
        index = status.current_step_index
        if status.phase is not RolloutPhase.PROGRESSING or index >= len(self.steps):
            return None
        pause = self.steps[index].pause
        if pause is None or pause.duration_seconds is None:
            return None
        started = status.step_started_at or self.now
        return started + datetime.timedelta(seconds=pause.duration_seconds)

    def _counted(self, status: RolloutStatus, weight: int) -> RolloutStatus:
        return status.model_copy(
            update={
                "canary_weight": weight,
                "canary_replicas": self.pods.count(status.canary_revision or self.canary),
                "canary_ready_replicas": self.pods.ready(status.canary_revision or self.canary),
            }
        )
