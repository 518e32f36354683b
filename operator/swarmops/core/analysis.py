"""Judging a canary by its metrics: when to measure, what a measurement means, and what the
metrics of an analysis step say together. Pure: no clock, no I/O.

The semantics are Argo Rollouts' (AnalysisRun), with the agent-pool rule that "not enough data
yet" means wait:

* A metric takes `count` judged measurements, the first `initialDelaySeconds` after the step
  started, then one every `intervalSeconds`.
* A measurement is a *success* when `successCondition` holds. When `failureCondition` is absent,
  anything else is a *failure*; when present, it is checked first (a value meeting both fails),
  and a value meeting neither is *inconclusive*.
* More than `failureLimit` failures fail the metric (the rollout rolls back); more than
  `inconclusiveLimit` inconclusive measurements make it inconclusive (the rollout pauses for a
  person); `count` measurements within both limits make it successful.
* A provider error (Prometheus unreachable, a bad query) is not a measurement and never a
  failure: more than `consecutiveErrorLimit` of them in a row put the metric in Error, and the
  rollout pauses and is never promoted. A good answer resets the run of errors.
* Too few samples (`sampleQuery` below `minSamples`) or no data at all (an empty vector or NaN:
  the canary's series does not exist yet) is *insufficient data*: the metric waits and measures
  again after `intervalSeconds`, without using up one of its `count` measurements. Nothing here
  bounds the wait: if the data never comes, the rollout step's progressDeadlineSeconds does
  (the pool is marked Degraded; the canary is never promoted on missing data).
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from swarmops.api.agentpool import (
    RESULT_CONDITION_PATTERN,
    AnalysisMetric,
    MetricPhase,
    MetricResult,
)

#: Phases after which a metric takes no more measurements.
FINISHED_PHASES: Final = frozenset(
    {MetricPhase.SUCCESSFUL, MetricPhase.FAILED, MetricPhase.INCONCLUSIVE, MetricPhase.ERROR}
)

#: Longest per-metric message; MetricResult.message allows 1024 characters.
MESSAGE_LIMIT: Final = 512


@dataclass(frozen=True)
class Measurement:
    """One attempt to measure a metric, as the provider saw it.

    `value` None with no `error` means the query answered with no data (an empty vector or
    NaN); `error` is set exactly when the provider could not answer (then `value` is None).
    """

    at: datetime
    value: float | None
    samples: float | None = None
    error: str | None = None


class AnalysisOutcome(StrEnum):
    """What the metrics of an analysis step say together."""

    #: More measurements to take.
    RUNNING = "Running"
    #: Every metric finished successfully: go on to the next step.
    SUCCESSFUL = "Successful"
    #: A metric failed more often than its failureLimit: roll back.
    FAILED = "Failed"
    #: A metric was inconclusive more often than its inconclusiveLimit: pause for a person.
    INCONCLUSIVE = "Inconclusive"
    #: A metric's provider failed more often in a row than its consecutiveErrorLimit: pause,
    #: never promote.
    PROVIDER_ERRORS = "ProviderErrors"
    #: Nothing failed, but a metric waits for data (minSamples, or a series that does not
    #: exist yet): keep measuring, and say the rollout waits.
    INSUFFICIENT_DATA = "InsufficientData"


#: Outcomes that end the analysis step; the others mean "keep measuring".
FINAL_OUTCOMES: Final = frozenset(
    {
        AnalysisOutcome.SUCCESSFUL,
        AnalysisOutcome.FAILED,
        AnalysisOutcome.INCONCLUSIVE,
        AnalysisOutcome.PROVIDER_ERRORS,
    }
)


# --- Conditions -----------------------------------------------------------------------------

_COMPARISONS: Final[Mapping[str, Callable[[float, float], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_CONDITION_RE: Final = re.compile(RESULT_CONDITION_PATTERN)
_COMPARISON_RE: Final = re.compile(r"result\s*(<=|>=|==|!=|<|>)\s*(-?[0-9]+(?:\.[0-9]+)?)")


@dataclass(frozen=True)
class Comparison:
    operator: str
    threshold: float

    def holds(self, value: float) -> bool:
        return _COMPARISONS[self.operator](value, self.threshold)


@dataclass(frozen=True)
class ResultCondition:
    """A parsed successCondition or failureCondition: one comparison, or two joined by &&."""

    text: str
    comparisons: tuple[Comparison, ...]

    def holds(self, value: float) -> bool:
        return all(comparison.holds(value) for comparison in self.comparisons)


@functools.lru_cache(maxsize=256)
def parse_condition(text: str) -> ResultCondition:
    """Parse a condition in the syntax the CRD admits (RESULT_CONDITION_PATTERN)."""
    stripped = text.strip()
    if not _CONDITION_RE.match(stripped):
        raise ValueError(f"{text!r} is not a condition like 'result < 0.05'")
    comparisons = tuple(
        Comparison(op, float(number)) for op, number in _COMPARISON_RE.findall(stripped)
    )
    return ResultCondition(text=stripped, comparisons=comparisons)


class Judgement(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    INCONCLUSIVE = "inconclusive"


def judge(metric: AnalysisMetric, value: float) -> Judgement:
    """What one measured value means for the metric."""
    if metric.failure_condition is not None:
        if parse_condition(metric.failure_condition).holds(value):
            return Judgement.FAILURE
        if parse_condition(metric.success_condition).holds(value):
            return Judgement.SUCCESS
        return Judgement.INCONCLUSIVE
    if parse_condition(metric.success_condition).holds(value):
        return Judgement.SUCCESS
    return Judgement.FAILURE


# --- Scheduling -----------------------------------------------------------------------------


def pending_result(metric: AnalysisMetric) -> MetricResult:
    """A metric's result before its first measurement."""
    return MetricResult(
        name=metric.name,
        phase=MetricPhase.PENDING,
        message=f"metric {metric.name}: no measurement yet",
    )


def next_measurement_at(
    metric: AnalysisMetric, result: MetricResult | None, step_started_at: datetime
) -> datetime | None:
    """When the metric should next be measured; None once it is finished.

    The first attempt comes initialDelaySeconds after the step started; each later one
    intervalSeconds after the previous attempt, whether that was a measurement, an error or
    insufficient data.
    """
    # Finished is the phase, not `measurements >= count`: if the spec lowered count mid-step,
    # the next measurement finishes the metric rather than leaving it running for ever.
    if result is not None and result.phase in FINISHED_PHASES:
        return None
    if result is None or result.last_measured_at is None:
        return step_started_at + timedelta(seconds=metric.initial_delay_seconds)
    return result.last_measured_at + timedelta(seconds=metric.interval_seconds)


def measurement_due(
    metric: AnalysisMetric,
    result: MetricResult | None,
    step_started_at: datetime,
    now: datetime,
) -> bool:
    """Whether the metric should be measured now."""
    due = next_measurement_at(metric, result, step_started_at)
    return due is not None and now >= due


# --- Recording ------------------------------------------------------------------------------


def _number(value: float | None) -> str:
    if value is None:
        return "no data"
    return f"{value:g}"


def _limit(message: str) -> str:
    line = " ".join(message.split())
    return line if len(line) <= MESSAGE_LIMIT else line[: MESSAGE_LIMIT - 1] + "…"


def record(metric: AnalysisMetric, result: MetricResult | None, m: Measurement) -> MetricResult:
    """The metric's result with one more attempt recorded. A finished metric is returned
    unchanged (a late or repeated measurement never reopens it)."""
    before = result if result is not None else pending_result(metric)
    if before.phase in FINISHED_PHASES:
        return before
    if m.error is not None:
        return _record_error(metric, before, m)
    value = None if m.value is None or math.isnan(m.value) else m.value
    samples = None if m.samples is None or math.isnan(m.samples) else m.samples
    if value is None or (metric.min_samples > 0 and (samples or 0) < metric.min_samples):
        return _record_insufficient(metric, before, m.at, value, samples)
    return _record_value(metric, before, m.at, value, samples)


def _record_error(metric: AnalysisMetric, before: MetricResult, m: Measurement) -> MetricResult:
    errors = before.consecutive_errors + 1
    over = errors > metric.consecutive_error_limit
    message = (
        f"metric {metric.name}: {errors} provider errors in a row, more than the "
        f"consecutiveErrorLimit of {metric.consecutive_error_limit}; last: {m.error}"
        if over
        else f"metric {metric.name}: provider error ({errors} in a row, "
        f"{metric.consecutive_error_limit} tolerated): {m.error}"
    )
    return before.model_copy(
        update={
            "phase": MetricPhase.ERROR if over else _running(before),
            "consecutive_errors": errors,
            "last_measured_at": m.at,
            "message": _limit(message),
        }
    )


def _running(before: MetricResult) -> MetricPhase:
    return MetricPhase.RUNNING if before.measurements else MetricPhase.PENDING


def _record_insufficient(
    metric: AnalysisMetric,
    before: MetricResult,
    at: datetime,
    value: float | None,
    samples: float | None,
) -> MetricResult:
    if value is None:
        why = "the query returned no data (an empty result or NaN)"
    else:
        why = (
            f"{_number(samples)} samples of the {metric.min_samples} needed "
            f"(value {_number(value)})"
        )
    return before.model_copy(
        update={
            "phase": _running(before),
            "consecutive_errors": 0,
            "last_value": value,
            "last_samples": samples,
            "last_measured_at": at,
            "insufficient_data": True,
            "message": _limit(f"metric {metric.name}: insufficient data, waiting: {why}"),
        }
    )


def _record_value(
    metric: AnalysisMetric,
    before: MetricResult,
    at: datetime,
    value: float,
    samples: float | None,
) -> MetricResult:
    judgement = judge(metric, value)
    measurements = before.measurements + 1
    successes = before.successes + (judgement is Judgement.SUCCESS)
    failures = before.failures + (judgement is Judgement.FAILURE)
    inconclusive = before.inconclusive + (judgement is Judgement.INCONCLUSIVE)
    shown = _number(value)
    if failures > metric.failure_limit:
        phase = MetricPhase.FAILED
        message = (
            f"metric {metric.name} failed: measured {shown}, "
            f"{_against(metric, judgement)}; {failures} of {measurements} measurements failed, "
            f"more than the failureLimit of {metric.failure_limit}"
        )
    elif inconclusive > metric.inconclusive_limit:
        phase = MetricPhase.INCONCLUSIVE
        message = (
            f"metric {metric.name} is inconclusive: measured {shown}, "
            f"{_against(metric, judgement)}; {inconclusive} of {measurements} measurements "
            f"inconclusive, more than the inconclusiveLimit of {metric.inconclusive_limit}"
        )
    elif measurements >= metric.count:
        phase = MetricPhase.SUCCESSFUL
        message = (
            f"metric {metric.name} succeeded: {successes} of {measurements} measurements "
            f"met '{metric.success_condition}', last measured {shown}"
        )
    else:
        phase = MetricPhase.RUNNING
        message = (
            f"metric {metric.name}: measured {shown} ({judgement}), "
            f"{measurements} of {metric.count} measurements taken"
        )
    return before.model_copy(
        update={
            "phase": phase,
            "measurements": measurements,
            "successes": successes,
            "failures": failures,
            "inconclusive": inconclusive,
            "consecutive_errors": 0,
            "last_value": value,
            "last_samples": samples,
            "last_measured_at": at,
            "insufficient_data": False,
            "message": _limit(message),
        }
    )


def _against(metric: AnalysisMetric, judgement: Judgement) -> str:
    if judgement is Judgement.FAILURE and metric.failure_condition is not None:
        return f"which meets failureCondition '{metric.failure_condition}'"
    if judgement is Judgement.SUCCESS:
        return f"which meets successCondition '{metric.success_condition}'"
    if judgement is Judgement.INCONCLUSIVE:
        return (
            f"which meets neither successCondition '{metric.success_condition}' nor "
            f"failureCondition '{metric.failure_condition}'"
        )
    return f"which does not meet successCondition '{metric.success_condition}'"


# --- Verdict --------------------------------------------------------------------------------


def verdict(
    metrics: Sequence[AnalysisMetric], results: Sequence[MetricResult]
) -> tuple[AnalysisOutcome, str]:
    """What the step's metrics say together, and a sentence naming the deciding metric.

    A failed metric decides at once (roll back), then a metric in provider errors (pause);
    an inconclusive metric pauses the rollout once no other metric can still fail it; the
    step succeeds when every metric has. While metrics run, a metric waiting for data makes
    the outcome InsufficientData rather than Running. Results of metrics that are not in
    `metrics` (left over from an earlier spec) are ignored; a metric without a result has
    not been measured yet.

    A final outcome (FINAL_OUTCOMES) stands: finished metrics never change, so the only way
    it moves is from ProviderErrors to Failed, when another metric fails later (a rollback is
    the safer of the two). The engine stops measuring at a final outcome anyway.
    """
    if not metrics:
        return AnalysisOutcome.SUCCESSFUL, "no metrics to measure"
    by_name = {result.name: result for result in results}
    current = [by_name.get(metric.name) or pending_result(metric) for metric in metrics]
    for phase, outcome in (
        (MetricPhase.FAILED, AnalysisOutcome.FAILED),
        (MetricPhase.ERROR, AnalysisOutcome.PROVIDER_ERRORS),
    ):
        deciding = next((r for r in current if r.phase == phase), None)
        if deciding is not None:
            return outcome, deciding.message
    unfinished = [r for r in current if r.phase not in FINISHED_PHASES]
    if unfinished:
        waiting = next((r for r in unfinished if r.insufficient_data), None)
        if waiting is not None:
            return AnalysisOutcome.INSUFFICIENT_DATA, waiting.message
        return AnalysisOutcome.RUNNING, unfinished[0].message
    inconclusive = next((r for r in current if r.phase == MetricPhase.INCONCLUSIVE), None)
    if inconclusive is not None:
        return AnalysisOutcome.INCONCLUSIVE, inconclusive.message
    if len(current) == 1:
        return AnalysisOutcome.SUCCESSFUL, current[0].message
    names = ", ".join(metric.name for metric in metrics)
    return AnalysisOutcome.SUCCESSFUL, f"all {len(current)} metrics succeeded ({names})"
