"""Analysis of a canary's metrics: conditions, scheduling, recording and the verdict."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmops.api.agentpool import AnalysisMetric, MetricPhase, MetricResult
from swarmops.api.testing import analysis_metrics
from swarmops.core.analysis import (
    FINAL_OUTCOMES,
    AnalysisOutcome,
    Judgement,
    Measurement,
    judge,
    measurement_due,
    next_measurement_at,
    parse_condition,
    record,
    verdict,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def metric(**fields: Any) -> AnalysisMetric:
    body: dict[str, Any] = {
        "name": "error-rate",
        "prometheus": {"query": 'agent_task_errors_ratio{revision="{{revision}}"}'},
        "successCondition": "result < 0.05",
        "intervalSeconds": 10,
        "count": 3,
    }
    body.update(fields)
    return AnalysisMetric.model_validate(body)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def value(v: float | None, *, samples: float | None = None, t: float = 0) -> Measurement:
    return Measurement(at=at(t), value=v, samples=samples)


def error(message: str = "connection refused", *, t: float = 0) -> Measurement:
    return Measurement(at=at(t), value=None, error=message)


def replay(m: AnalysisMetric, measurements: Sequence[Measurement]) -> MetricResult | None:
    result: MetricResult | None = None
    for measurement in measurements:
        result = record(m, result, measurement)
    return result


# --- Conditions -----------------------------------------------------------------------------

OPERATORS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
thresholds = st.sampled_from(["0", "0.05", "1", "-3", "100.5", "42"])
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)


@given(st.sampled_from(sorted(OPERATORS)), thresholds, finite)
def test_a_comparison_means_what_it_says(op: str, threshold: str, v: float) -> None:
    assert parse_condition(f"result {op} {threshold}").holds(v) == OPERATORS[op](
        v, float(threshold)
    )


@given(
    st.sampled_from(sorted(OPERATORS)),
    thresholds,
    st.sampled_from(sorted(OPERATORS)),
    thresholds,
    finite | st.sampled_from([0.0, 0.05, 1.0, -3.0, 42.0]),
)
def test_two_comparisons_both_hold(op1: str, t1: str, op2: str, t2: str, v: float) -> None:
    condition = parse_condition(f"result {op1} {t1} && result{op2}{t2}")
    assert condition.holds(v) == (OPERATORS[op1](v, float(t1)) and OPERATORS[op2](v, float(t2)))


@pytest.mark.parametrize("text", ["", "result", "result < x", "0.5 > result", "result < 1 || 2"])
def test_what_the_schema_rejects_does_not_parse(text: str) -> None:
    with pytest.raises(ValueError, match="not a condition"):
        parse_condition(text)


def test_without_failure_condition_whatever_is_not_a_success_fails() -> None:
    m = metric()
    assert judge(m, 0.01) is Judgement.SUCCESS
    assert judge(m, 0.05) is Judgement.FAILURE


def test_with_failure_condition_the_gap_is_inconclusive_and_failure_wins() -> None:
    m = metric(successCondition="result < 0.05", failureCondition="result > 0.2")
    assert judge(m, 0.01) is Judgement.SUCCESS
    assert judge(m, 0.1) is Judgement.INCONCLUSIVE
    assert judge(m, 0.3) is Judgement.FAILURE
    overlapping = metric(successCondition="result < 1", failureCondition="result > 0.5")
    assert judge(overlapping, 0.7) is Judgement.FAILURE


# --- Scheduling -----------------------------------------------------------------------------


def test_first_measurement_waits_for_the_initial_delay() -> None:
    m = metric(initialDelaySeconds=30)
    assert not measurement_due(m, None, T0, at(29))
    assert measurement_due(m, None, T0, at(30))
    assert next_measurement_at(m, None, T0) == at(30)


def test_later_measurements_follow_the_interval_from_the_last_attempt() -> None:
    m = metric(intervalSeconds=10)
    for attempt in (value(0.01, t=5), error(t=5), value(None, t=5)):
        result = record(m, None, attempt)
        assert not measurement_due(m, result, T0, at(14))
        assert measurement_due(m, result, T0, at(15))


def test_a_finished_metric_is_never_due() -> None:
    m = metric(count=1)
    result = record(m, None, value(0.01))
    assert result.phase is MetricPhase.SUCCESSFUL
    assert next_measurement_at(m, result, T0) is None
    assert not measurement_due(m, result, T0, at(10_000))


def test_a_count_lowered_mid_step_finishes_at_the_next_measurement() -> None:
    long = metric(count=5)
    result = replay(long, [value(0.01), value(0.01), value(0.01)])
    short = metric(count=2)
    assert measurement_due(short, result, T0, at(10_000))
    finished = record(short, result, value(0.01))
    assert finished.phase is MetricPhase.SUCCESSFUL
    assert verdict([short], [finished])[0] is AnalysisOutcome.SUCCESSFUL


# --- Recording ------------------------------------------------------------------------------


def test_count_successes_make_the_metric_successful() -> None:
    m = metric(count=3)
    result = replay(m, [value(0.01, t=0), value(0.02, t=10), value(0.0, t=20)])
    assert result is not None
    assert result.phase is MetricPhase.SUCCESSFUL
    assert (result.measurements, result.successes, result.failures) == (3, 3, 0)
    assert verdict([m], [result])[0] is AnalysisOutcome.SUCCESSFUL


def test_one_failure_past_the_limit_fails_and_names_the_value() -> None:
    m = metric(count=5, failureLimit=1)
    result = replay(m, [value(0.2), value(0.01), value(0.3)])
    assert result is not None
    assert result.phase is MetricPhase.FAILED
    outcome, message = verdict([m], [result])
    assert outcome is AnalysisOutcome.FAILED
    assert "error-rate" in message
    assert "0.3" in message
    assert "failureLimit of 1" in message


def test_inconclusive_past_the_limit() -> None:
    m = metric(count=5, failureCondition="result > 0.2", inconclusiveLimit=1)
    result = replay(m, [value(0.1), value(0.1)])
    assert result is not None
    assert result.phase is MetricPhase.INCONCLUSIVE
    outcome, message = verdict([m], [result])
    assert outcome is AnalysisOutcome.INCONCLUSIVE
    assert "error-rate" in message and "0.1" in message


def test_errors_past_the_limit_are_provider_errors_never_failures() -> None:
    m = metric(consecutiveErrorLimit=2)
    result = replay(m, [error(), error()])
    assert result is not None
    assert result.phase is MetricPhase.PENDING
    assert verdict([m], [result])[0] is AnalysisOutcome.RUNNING
    result = record(m, result, error("Prometheus at http://p:9090 unreachable"))
    assert result.phase is MetricPhase.ERROR
    assert result.failures == 0 and result.measurements == 0
    outcome, message = verdict([m], [result])
    assert outcome is AnalysisOutcome.PROVIDER_ERRORS
    assert "error-rate" in message and "unreachable" in message


def test_a_good_answer_resets_the_run_of_errors() -> None:
    m = metric(consecutiveErrorLimit=1, count=5)
    result = replay(m, [error(), value(0.01), error()])
    assert result is not None
    assert result.consecutive_errors == 1
    assert result.phase is MetricPhase.RUNNING


def test_too_few_samples_wait_without_using_a_measurement() -> None:
    m = metric(minSamples=20, sampleQuery="sum(agent_tasks_total)")
    result = record(m, None, value(0.5, samples=3))
    assert result.measurements == 0
    assert result.insufficient_data
    assert result.last_samples == 3
    outcome, message = verdict([m], [result])
    assert outcome is AnalysisOutcome.INSUFFICIENT_DATA
    assert "3 samples of the 20 needed" in message
    result = record(m, result, value(0.01, samples=25, t=10))
    assert result.measurements == 1 and not result.insufficient_data
    assert verdict([m], [result])[0] is AnalysisOutcome.RUNNING


@pytest.mark.parametrize("empty", [None, math.nan])
def test_no_data_is_insufficient_never_a_success(empty: float | None) -> None:
    m = metric(successCondition="result >= 0", count=1)
    result = record(m, None, value(empty))
    assert result.phase is MetricPhase.PENDING
    assert result.insufficient_data and result.measurements == 0
    outcome, message = verdict([m], [result])
    assert outcome is AnalysisOutcome.INSUFFICIENT_DATA
    assert "no data" in message


def test_a_finished_metric_ignores_late_measurements() -> None:
    m = metric(count=1)
    done = record(m, None, value(0.01))
    assert record(m, done, value(0.9)) == done
    assert record(m, done, error()) == done


def test_messages_are_one_bounded_line() -> None:
    m = metric(consecutiveErrorLimit=0)
    result = record(m, None, error("line one\nline two " + "x" * 5000))
    assert "\n" not in result.message
    assert len(result.message) <= 1024


# --- Verdict --------------------------------------------------------------------------------


def test_failure_decides_before_the_other_metrics_finish() -> None:
    fast = metric(name="errors", count=2)
    slow = metric(name="latency", successCondition="result < 2", count=10)
    results = [record(fast, None, value(0.5)), record(slow, None, value(1))]
    outcome, message = verdict([fast, slow], results)
    assert outcome is AnalysisOutcome.FAILED
    assert message.startswith("metric errors failed")


def test_a_failure_outranks_provider_errors() -> None:
    failing = metric(name="errors", count=2)
    erring = metric(name="latency", consecutiveErrorLimit=0)
    results = [record(erring, None, error()), record(failing, None, value(0.5))]
    outcome, message = verdict([failing, erring], results)
    assert outcome is AnalysisOutcome.FAILED
    assert message.startswith("metric errors failed")


def test_inconclusive_waits_until_no_metric_can_still_fail() -> None:
    unsure = metric(name="errors", failureCondition="result > 0.2", count=2)
    other = metric(name="latency", successCondition="result < 2", count=2)
    results = [record(unsure, None, value(0.1)), record(other, None, value(1))]
    assert verdict([unsure, other], results)[0] is AnalysisOutcome.RUNNING
    results[1] = record(other, results[1], value(1, t=10))
    assert verdict([unsure, other], results)[0] is AnalysisOutcome.INCONCLUSIVE


def test_results_of_metrics_no_longer_in_the_spec_are_ignored() -> None:
    kept = metric(name="errors", count=1)
    stale = MetricResult(name="gone", phase=MetricPhase.FAILED, message="old")
    assert verdict([kept], [stale])[0] is AnalysisOutcome.RUNNING
    assert verdict([], [stale])[0] is AnalysisOutcome.SUCCESSFUL


# --- Properties over sequences of measurements ----------------------------------------------

attempts = st.one_of(
    st.builds(Measurement, at=st.just(T0), value=finite, samples=st.none() | finite),
    st.builds(Measurement, at=st.just(T0), value=st.just(None), error=st.just("boom")),
    st.builds(Measurement, at=st.just(T0), value=st.just(None) | st.just(math.nan)),
)


@given(analysis_metrics("m"), st.lists(attempts, max_size=40))
def test_counters_stay_consistent(m: AnalysisMetric, sequence: list[Measurement]) -> None:
    result = replay(m, sequence)
    if result is None:
        return
    assert result.measurements == result.successes + result.failures + result.inconclusive
    assert result.measurements <= m.count
    if result.phase is MetricPhase.SUCCESSFUL:
        assert result.failures <= m.failure_limit
        assert result.inconclusive <= m.inconclusive_limit
        assert result.measurements == m.count
    if result.phase is MetricPhase.FAILED:
        assert result.failures == m.failure_limit + 1


@given(analysis_metrics("m"), st.lists(attempts, max_size=40))
def test_errors_and_missing_data_never_fail_or_pass(
    m: AnalysisMetric, sequence: list[Measurement]
) -> None:
    without_values = [
        s for s in sequence if s.error is not None or s.value is None or math.isnan(s.value)
    ]
    result = replay(m, without_values)
    assert result is None or result.measurements == 0
    outcome, _ = verdict([m], [result] if result else [])
    assert outcome not in {AnalysisOutcome.FAILED, AnalysisOutcome.SUCCESSFUL}


@given(
    analysis_metrics("a"),
    analysis_metrics("b"),
    st.lists(st.tuples(st.booleans(), attempts), max_size=60),
)
def test_a_final_verdict_stands(
    a: AnalysisMetric, b: AnalysisMetric, sequence: list[tuple[bool, Measurement]]
) -> None:
    metrics = [a, b]
    results: dict[str, MetricResult] = {}
    final: AnalysisOutcome | None = None
    for to_a, attempt in sequence:
        target = a if to_a else b
        results[target.name] = record(target, results.get(target.name), attempt)
        outcome, _ = verdict(metrics, list(results.values()))
        if final is not None:
            # The one change allowed: a metric failing while another is in provider errors
            # (only if the engine kept measuring) turns the pause into a rollback.
            assert outcome is final or (final, outcome) == (
                AnalysisOutcome.PROVIDER_ERRORS,
                AnalysisOutcome.FAILED,
            )
        if outcome in FINAL_OUTCOMES:
            final = outcome


@given(analysis_metrics("m"), st.lists(attempts, max_size=40))
def test_never_successful_with_a_failure_past_the_limit(
    m: AnalysisMetric, sequence: list[Measurement]
) -> None:
    result = None
    for attempt in sequence:
        result = record(m, result, attempt)
        if result.failures > m.failure_limit:
            assert verdict([m], [result])[0] is AnalysisOutcome.FAILED
