"""The Prometheus provider against a real Prometheus, judged by the analysis core.

Prometheus (Debian's package, started by the `prometheus` fixture) scrapes a metrics source
the test sets; the provider runs the metric's real PromQL through the HTTP API, and
`swarmops.core.analysis` records what it measured, as the rollout engine does. A missing
/usr/bin/prometheus fails these tests rather than skipping them: hack/setup.sh installs it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from swarmops.analysis.prometheus import PrometheusProvider
from swarmops.api.agentpool import AnalysisMetric, MetricPhase, MetricResult
from swarmops.core.analysis import AnalysisOutcome, Measurement, record, verdict
from swarmops.metrics import Metrics
from swarmops.testbed.processes import free_port
from swarmops.testbed.prometheus import Prometheus

T = TypeVar("T")
RATIO = "agent_task_errors_ratio"
TASKS = "agent_tasks_total"
CANARY = "5d8f9c7b6a"
STABLE = "1a2b3c4d5e"


def run(scenario: Awaitable[T]) -> T:
    return asyncio.run(asyncio.wait_for(scenario, timeout=120))


def metric(**fields: Any) -> AnalysisMetric:
    body: dict[str, Any] = {
        "name": "error-rate",
        "prometheus": {"query": f'max({RATIO}{{revision="{{{{revision}}}}"}})'},
        "successCondition": "result < 0.05",
        "count": 3,
    }
    body.update(fields)
    return AnalysisMetric.model_validate(body)


async def analyse(
    provider: PrometheusProvider, m: AnalysisMetric, attempts: int, revision: str = CANARY
) -> tuple[MetricResult | None, list[Measurement]]:
    """Measure `attempts` times (or until the metric finishes), recording each."""
    result: MetricResult | None = None
    taken: list[Measurement] = []
    for _ in range(attempts):
        measurement = await provider.measure(m, revision=revision, now=datetime.now(UTC))
        taken.append(measurement)
        result = record(m, result, measurement)
        if result.phase not in (MetricPhase.PENDING, MetricPhase.RUNNING):
            break
    return result, taken


def provider_for(prometheus: Prometheus) -> PrometheusProvider:
    return PrometheusProvider(default_address=prometheus.url, timeout_seconds=5)


def outcome_of(m: AnalysisMetric, result: MetricResult | None) -> tuple[AnalysisOutcome, str]:
    return verdict([m], [result] if result else [])


async def measured(
    prometheus: Prometheus, m: AnalysisMetric, attempts: int, revision: str = CANARY
) -> tuple[MetricResult | None, Sequence[Measurement]]:
    provider = provider_for(prometheus)
    try:
        return await analyse(provider, m, attempts, revision)
    finally:
        await provider.close()


def test_a_healthy_canary_succeeds_on_its_own_series(prometheus: Prometheus) -> None:
    prometheus.source.set(RATIO, 0.5, {"revision": STABLE})
    prometheus.set_and_wait(RATIO, 0.01, {"revision": CANARY})
    m = metric()
    result, taken = run(measured(prometheus, m, attempts=3))
    assert [t.value for t in taken] == [0.01, 0.01, 0.01]  # the stable's 0.5 is not the canary's
    assert result is not None and result.phase is MetricPhase.SUCCESSFUL
    assert outcome_of(m, result)[0] is AnalysisOutcome.SUCCESSFUL


def test_a_failing_canary_fails_naming_metric_and_value(prometheus: Prometheus) -> None:
    prometheus.set_and_wait(RATIO, 0.25, {"revision": CANARY})
    m = metric(failureLimit=1)
    result, taken = run(measured(prometheus, m, attempts=3))
    assert len(taken) == 2
    outcome, message = outcome_of(m, result)
    assert outcome is AnalysisOutcome.FAILED
    assert "error-rate" in message and "0.25" in message


def test_between_the_conditions_is_inconclusive(prometheus: Prometheus) -> None:
    prometheus.set_and_wait(RATIO, 0.1, {"revision": CANARY})
    m = metric(failureCondition="result > 0.2")
    result, _ = run(measured(prometheus, m, attempts=3))
    outcome, message = outcome_of(m, result)
    assert outcome is AnalysisOutcome.INCONCLUSIVE
    assert "0.1" in message


def test_too_few_samples_wait_then_judge(prometheus: Prometheus) -> None:
    labels = {"revision": CANARY}
    prometheus.source.set(RATIO, 0.0, labels)
    prometheus.set_and_wait(TASKS, 4, labels)
    m = metric(
        count=1,
        minSamples=20,
        sampleQuery=f'sum({TASKS}{{revision="{{{{revision}}}}"}})',
    )
    result, taken = run(measured(prometheus, m, attempts=2))
    assert [t.samples for t in taken] == [4, 4]
    assert result is not None and result.measurements == 0
    outcome, message = outcome_of(m, result)
    assert outcome is AnalysisOutcome.INSUFFICIENT_DATA
    assert "4 samples of the 20 needed" in message

    prometheus.set_and_wait(TASKS, 25, labels)
    provider = provider_for(prometheus)

    async def once_more() -> MetricResult:
        try:
            now = datetime.now(UTC)
            return record(m, result, await provider.measure(m, revision=CANARY, now=now))
        finally:
            await provider.close()

    assert outcome_of(m, run(once_more()))[0] is AnalysisOutcome.SUCCESSFUL


def test_no_series_for_the_canary_is_insufficient_data(prometheus: Prometheus) -> None:
    prometheus.set_and_wait(RATIO, 0.0, {"revision": STABLE})
    m = metric(successCondition="result >= 0")  # even a condition anything meets
    result, taken = run(measured(prometheus, m, attempts=3))
    assert all(t.value is None and t.error is None for t in taken)
    outcome, message = outcome_of(m, result)
    assert outcome is AnalysisOutcome.INSUFFICIENT_DATA
    assert "no data" in message


def test_several_series_are_a_provider_error(prometheus: Prometheus) -> None:
    prometheus.source.set(RATIO, 0.01, {"revision": CANARY, "pod": "a"})
    prometheus.set_and_wait(RATIO, 0.02, {"revision": CANARY, "pod": "b"})
    m = metric(prometheus={"query": f'{RATIO}{{revision="{{{{revision}}}}"}}'})
    _, taken = run(measured(prometheus, m, attempts=1))
    assert taken[0].error is not None and "returned 2 series" in taken[0].error


def test_a_promql_error_is_a_provider_error_never_a_failure(prometheus: Prometheus) -> None:
    m = metric(prometheus={"query": "sum(rate(x[1m]"}, consecutiveErrorLimit=1)
    result, taken = run(measured(prometheus, m, attempts=5))
    assert len(taken) == 2
    assert taken[0].error is not None and "bad_data" in taken[0].error
    assert result is not None and result.failures == 0
    assert outcome_of(m, result)[0] is AnalysisOutcome.PROVIDER_ERRORS


def test_prometheus_down_gives_consecutive_errors_then_provider_errors(
    prometheus: Prometheus,
) -> None:
    prometheus.set_and_wait(RATIO, 0.01, {"revision": CANARY})
    m = metric(consecutiveErrorLimit=2)
    prometheus.stop()
    result, taken = run(measured(prometheus, m, attempts=10))
    assert len(taken) == 3
    assert all(t.error is not None and "unreachable" in t.error for t in taken)
    outcome, message = outcome_of(m, result)
    assert outcome is AnalysisOutcome.PROVIDER_ERRORS
    assert "error-rate" in message and prometheus.url.removeprefix("http://") in message

    prometheus.start()  # back: a fresh analysis measures again
    prometheus.wait_for(RATIO, 0.01, {"revision": CANARY})
    result, _ = run(measured(prometheus, m, attempts=3))
    assert outcome_of(m, result)[0] is AnalysisOutcome.SUCCESSFUL


def test_credentials_in_the_address_stay_out_of_messages(prometheus: Prometheus) -> None:
    closed = f"http://agent:s3cret@127.0.0.1:{free_port()}"
    m = metric(prometheus={"address": closed, "query": "vector(1)"})
    _, taken = run(measured(prometheus, m, attempts=1))
    assert taken[0].error is not None and "unreachable" in taken[0].error
    assert "s3cret" not in taken[0].error


def test_no_address_anywhere_is_a_provider_error() -> None:
    provider = PrometheusProvider(default_address=None)

    async def attempt() -> Measurement:
        try:
            return await provider.measure(metric(), revision=CANARY, now=datetime.now(UTC))
        finally:
            await provider.close()

    measurement = run(attempt())
    assert measurement.error is not None and "no Prometheus address" in measurement.error


def test_measurements_are_counted_by_result(prometheus: Prometheus) -> None:
    prometheus.set_and_wait(RATIO, 0.01, {"revision": CANARY})
    metrics = Metrics()
    provider = PrometheusProvider(default_address=prometheus.url, metrics=metrics)
    answered = metric()
    no_data = metric(prometheus={"query": f'max({RATIO}{{revision="{STABLE}"}})'})
    broken = metric(prometheus={"query": "sum("})

    async def measure_each() -> None:
        try:
            for m in (answered, no_data, broken):
                await provider.measure(m, revision=CANARY, now=datetime.now(UTC))
        finally:
            await provider.close()

    run(measure_each())
    for result in ("answered", "no_data", "error"):
        counted = metrics.registry.get_sample_value(
            "swarmops_analysis_measurements_total", {"result": result}
        )
        assert counted == 1, result


def test_a_prometheus_that_never_answers_is_a_provider_error() -> None:
    # A listening socket nobody reads: the connection opens, the answer never comes.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"http://127.0.0.1:{silent.getsockname()[1]}"
        provider = PrometheusProvider(default_address=address, timeout_seconds=0.5)

        async def attempt() -> Measurement:
            try:
                return await provider.measure(metric(), revision=CANARY, now=datetime.now(UTC))
            finally:
                await provider.close()

        measurement = run(attempt())
    assert measurement.error is not None and "did not answer within 0.5s" in measurement.error
