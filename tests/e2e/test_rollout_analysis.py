"""Canary analysis on the test bed: the operator measures the canary with real PromQL on a
real Prometheus (scraping a metrics source the test sets) and promotes, rolls back, or
pauses, as docs/rollout.md#analysis says.

Each test rolls a pool from one image to another with two steps (`setWeight: 50`, then an
analysis step with one metric), and sets the canary's numbers by its revision label. The
canary's series do not exist until the test sets them, so every analysis starts with
"insufficient data", as a real canary's would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from swarmops.runtime import OperatorThread
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.processes import wait_until
from swarmops.testbed.prometheus import Prometheus

POOL = "agents"
RATIO = "agent_task_errors_ratio"
TASKS = "agent_tasks_total"
TIMEOUT = 180


def apply_pool(
    testbed: TestBed, namespace: str, image: str, metric: dict[str, Any] | None = None
) -> None:
    analysis_metric: dict[str, Any] = {
        "name": "error-rate",
        "prometheus": {"query": f'max({RATIO}{{revision="{{{{revision}}}}"}})'},
        "successCondition": "result < 0.05",
        "intervalSeconds": 1,
        "count": 2,
        "consecutiveErrorLimit": 1,
        **(metric or {}),
    }
    manifest = {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": POOL, "namespace": namespace},
        "spec": {
            "replicas": 2,
            "warmPool": {"size": 1},
            "rollout": {
                "canary": {
                    "steps": [
                        {"setWeight": 50},
                        {"analysis": {"metrics": [analysis_metric]}},
                    ]
                }
            },
            "template": {
                "spec": {
                    "nodeSelector": {"swarmops.dev/node-kind": "cpu"},
                    "containers": [{"name": "agent", "image": image}],
                }
            },
        },
    }
    testbed.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))


def pool_status(testbed: TestBed, namespace: str) -> dict[str, Any]:
    body = json.loads(
        testbed.kubectl("get", "agentpool", POOL, "-n", namespace, "-o", "json").stdout
    )
    status: dict[str, Any] = body.get("status", {})
    return status


def rollout(testbed: TestBed, namespace: str) -> dict[str, Any]:
    result: dict[str, Any] = pool_status(testbed, namespace).get("rollout") or {}
    return result


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def active_revisions(testbed: TestBed, namespace: str) -> list[str]:
    listing = json.loads(
        testbed.kubectl(
            "get",
            "pods",
            "-n",
            namespace,
            "-l",
            f"swarmops.dev/pool={POOL},swarmops.dev/state=active",
            "-o",
            "json",
        ).stdout
    )
    return sorted(
        pod["metadata"]["labels"]["swarmops.dev/revision"]
        for pod in listing["items"]
        if not pod["metadata"].get("deletionTimestamp")
    )


def event_messages(testbed: TestBed, namespace: str, reason: str) -> list[str]:
    events = json.loads(
        testbed.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            f"involvedObject.kind=AgentPool,involvedObject.name={POOL},reason={reason}",
            "-o",
            "json",
        ).stdout
    )
    return [event["message"] for event in events["items"]]


def start_rollout(
    testbed: TestBed, namespace: str, metric: dict[str, Any] | None = None
) -> tuple[str, str]:
    """A settled pool on image 1, then image 2 with the analysis: (stable, canary) revisions."""
    apply_pool(testbed, namespace, "swarmops/agent:1", metric)

    def settled() -> bool:
        status = pool_status(testbed, namespace)
        return (
            status.get("readyReplicas") == 2
            and status.get("currentRevision") is not None
            and status.get("currentRevision") == status.get("updateRevision")
        )

    wait_until(settled, timeout=TIMEOUT, what="the pool settled on its first revision")
    stable = pool_status(testbed, namespace)["currentRevision"]
    apply_pool(testbed, namespace, "swarmops/agent:2", metric)
    wait_until(
        lambda: rollout(testbed, namespace).get("canaryRevision") not in (None, stable),
        timeout=TIMEOUT,
        what="the rollout of the new template to start",
    )
    return stable, rollout(testbed, namespace)["canaryRevision"]


def reaches(
    testbed: TestBed, namespace: str, phase: str, pause_reason: str | None = None
) -> Callable[[], bool]:
    def check() -> bool:
        current = rollout(testbed, namespace)
        return current.get("phase") == phase and (
            pause_reason is None or current.get("pauseReason") == pause_reason
        )

    return check


def metric_result(testbed: TestBed, namespace: str) -> dict[str, Any]:
    results = rollout(testbed, namespace).get("analysis") or []
    return next((r for r in results if r["name"] == "error-rate"), {})


@pytest.fixture
def analysing_operator(
    operator_factory: Callable[..., OperatorThread], namespace: str, prometheus: Prometheus
) -> OperatorThread:
    """The operator, with the test's Prometheus as its default (--prometheus-url)."""
    return operator_factory(namespace, prometheus_url=prometheus.url)


@pytest.mark.e2e
def test_a_healthy_canary_is_promoted(
    testbed: TestBed, namespace: str, prometheus: Prometheus, analysing_operator: OperatorThread
) -> None:
    stable, canary = start_rollout(testbed, namespace)
    prometheus.source.set(RATIO, 0.5, {"revision": stable})  # the stable's numbers do not count
    prometheus.set_and_wait(RATIO, 0.01, {"revision": canary})
    wait_until(
        lambda: (
            pool_status(testbed, namespace).get("currentRevision") == canary
            and active_revisions(testbed, namespace) == [canary, canary]
        ),
        timeout=TIMEOUT,
        what="the canary promoted to every active pod",
    )
    assert rollout(testbed, namespace)["phase"] == "Completed"
    assert condition(pool_status(testbed, namespace), "Degraded").get("status") == "False"
    steps = event_messages(testbed, namespace, "RolloutStepCompleted")
    assert any("metric error-rate succeeded: 2 of 2 measurements" in m for m in steps), steps


@pytest.mark.e2e
def test_a_failing_metric_rolls_back_naming_metric_and_value(
    testbed: TestBed, namespace: str, prometheus: Prometheus, analysing_operator: OperatorThread
) -> None:
    stable, canary = start_rollout(testbed, namespace)
    prometheus.set_and_wait(RATIO, 0.25, {"revision": canary})
    wait_until(reaches(testbed, namespace, "Aborted"), timeout=TIMEOUT, what="a rollback")
    wait_until(
        lambda: active_revisions(testbed, namespace) == [stable, stable],
        timeout=TIMEOUT,
        what="the stable revision back on every active pod",
    )
    status = pool_status(testbed, namespace)
    assert status["currentRevision"] == stable
    degraded = condition(status, "Degraded")
    assert degraded.get("status") == "True"
    assert "error-rate" in degraded["message"] and "0.25" in degraded["message"]
    assert metric_result(testbed, namespace)["phase"] == "Failed"
    assert any(
        "error-rate" in m and "0.25" in m
        for m in event_messages(testbed, namespace, "RolloutAborted")
    )


@pytest.mark.e2e
def test_prometheus_unreachable_pauses_after_the_error_limit_and_never_promotes(
    testbed: TestBed, namespace: str, prometheus: Prometheus, analysing_operator: OperatorThread
) -> None:
    stable, canary = start_rollout(testbed, namespace)
    prometheus.source.set(RATIO, 0.01, {"revision": canary})  # healthy, were it measured
    prometheus.stop()
    try:
        wait_until(
            reaches(testbed, namespace, "Paused", "ProviderErrors"),
            timeout=TIMEOUT,
            what="the rollout paused for provider errors",
        )
    finally:
        prometheus.start()
    result = metric_result(testbed, namespace)
    assert result["phase"] == "Error"
    assert result["consecutiveErrors"] == 2  # consecutiveErrorLimit 1, one more
    assert result.get("failures", 0) == 0
    assert "unreachable" in rollout(testbed, namespace)["message"]
    # Prometheus is back with a healthy number; the metric stays in Error (finished), so the
    # rollout waits for a person and the canary is not promoted.
    prometheus.wait_for(RATIO, 0.01, {"revision": canary})
    assert pool_status(testbed, namespace)["currentRevision"] == stable
    assert reaches(testbed, namespace, "Paused", "ProviderErrors")()
    assert event_messages(testbed, namespace, "RolloutPaused")


@pytest.mark.e2e
def test_an_inconclusive_metric_pauses_for_a_person(
    testbed: TestBed, namespace: str, prometheus: Prometheus, analysing_operator: OperatorThread
) -> None:
    stable, canary = start_rollout(testbed, namespace, {"failureCondition": "result > 0.2"})
    prometheus.set_and_wait(RATIO, 0.1, {"revision": canary})
    wait_until(
        reaches(testbed, namespace, "Paused", "Inconclusive"),
        timeout=TIMEOUT,
        what="the rollout paused as inconclusive",
    )
    assert metric_result(testbed, namespace)["phase"] == "Inconclusive"
    assert "0.1" in rollout(testbed, namespace)["message"]
    assert pool_status(testbed, namespace)["currentRevision"] == stable


@pytest.mark.e2e
def test_insufficient_data_waits_then_goes_on_by_itself(
    testbed: TestBed, namespace: str, prometheus: Prometheus, analysing_operator: OperatorThread
) -> None:
    sample_query = f'sum({TASKS}{{revision="{{{{revision}}}}"}})'
    stable, canary = start_rollout(
        testbed, namespace, {"minSamples": 20, "sampleQuery": sample_query}
    )
    labels = {"revision": canary}
    prometheus.source.set(RATIO, 0.01, labels)
    prometheus.set_and_wait(TASKS, 4, labels)
    wait_until(
        lambda: (
            reaches(testbed, namespace, "Paused", "InsufficientData")()
            and metric_result(testbed, namespace).get("lastSamples") == 4
        ),
        timeout=TIMEOUT,
        what="the rollout waiting for samples",
    )
    result = metric_result(testbed, namespace)
    assert result.get("measurements", 0) == 0 and result["insufficientData"] is True
    assert "4 samples of the 20 needed" in rollout(testbed, namespace)["message"]
    assert pool_status(testbed, namespace)["currentRevision"] == stable

    prometheus.set_and_wait(TASKS, 25, labels)
    wait_until(
        lambda: pool_status(testbed, namespace).get("currentRevision") == canary,
        timeout=TIMEOUT,
        what="the canary promoted once the samples are there",
    )
    assert rollout(testbed, namespace)["phase"] == "Completed"


@pytest.mark.e2e
def test_analysis_progress_survives_an_operator_restart(
    testbed: TestBed,
    namespace: str,
    prometheus: Prometheus,
    operator_factory: Callable[..., OperatorThread],
) -> None:
    # An hour between measurements: a restarted operator that lost the count (or the time of
    # the last measurement) would measure again at once.
    labels = {"pool": namespace}
    prometheus.set_and_wait(RATIO, 0.01, labels)
    first = operator_factory(namespace, prometheus_url=prometheus.url)
    start_rollout(
        testbed,
        namespace,
        {
            "prometheus": {"query": f'max({RATIO}{{pool="{namespace}"}})'},
            "intervalSeconds": 3600,
            "count": 2,
        },
    )
    wait_until(
        lambda: metric_result(testbed, namespace).get("measurements") == 1,
        timeout=TIMEOUT,
        what="the first measurement",
    )
    before = rollout(testbed, namespace)
    first.stop()

    second = operator_factory(namespace, prometheus_url=prometheus.url)
    registry = second.services.metrics.registry
    wait_until(
        lambda: (
            (
                registry.get_sample_value(
                    "swarmops_reconcile_total", {"kind": "AgentPool", "result": "ok"}
                )
                or 0
            )
            >= 1
        ),
        timeout=TIMEOUT,
        what="the restarted operator to reconcile the pool",
    )
    after = rollout(testbed, namespace)
    assert after["currentStepIndex"] == before["currentStepIndex"]
    assert after["analysis"] == before["analysis"]  # same count, same time: nothing re-measured
