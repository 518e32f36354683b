"""The AgentPool reconcile on the real control plane: warm pool, promotion on scale-up,
scale-down that spares warm pods, the scale subresource, refills, and restarts."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from swarmops.runtime import OperatorThread
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.processes import wait_until

POOL = "workers"


def apply_pool(testbed: TestBed, namespace: str, replicas: int, warm: int) -> None:
    manifest = {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": POOL, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "warmPool": {"size": warm},
            "template": {
                "spec": {
                    "nodeSelector": {"swarmops.dev/node-kind": "cpu"},
                    "containers": [{"name": "agent", "image": "swarmops/agent:e2e"}],
                }
            },
        },
    }
    testbed.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))


def pods_by_state(testbed: TestBed, namespace: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Live (not terminating) pool pods: state -> name -> pod."""
    listing = json.loads(
        testbed.kubectl(
            "get", "pods", "-n", namespace, "-l", f"swarmops.dev/pool={POOL}", "-o", "json"
        ).stdout
    )
    result: dict[str, dict[str, dict[str, Any]]] = {"active": {}, "warm": {}, "claimed": {}}
    for pod in listing["items"]:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        result[pod["metadata"]["labels"]["swarmops.dev/state"]][pod["metadata"]["name"]] = pod
    return result


def ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


def pool_status(testbed: TestBed, namespace: str) -> dict[str, Any]:
    body = json.loads(
        testbed.kubectl("get", "agentpool", POOL, "-n", namespace, "-o", "json").stdout
    )
    status: dict[str, Any] = body.get("status", {})
    return status


def settled(testbed: TestBed, namespace: str, active: int, warm: int) -> Callable[[], bool]:
    def check() -> bool:
        pods = pods_by_state(testbed, namespace)
        status = pool_status(testbed, namespace)
        return (
            len(pods["active"]) == active
            and len(pods["warm"]) == warm
            and all(ready(p) for state in ("active", "warm") for p in pods[state].values())
            and (status.get("readyReplicas"), status.get("warmReady")) == (active, warm)
        )

    return check


def event_reasons(testbed: TestBed, namespace: str) -> set[str]:
    events = json.loads(
        testbed.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            f"involvedObject.kind=AgentPool,involvedObject.name={POOL}",
            "-o",
            "json",
        ).stdout
    )
    return {event["reason"] for event in events["items"]}


@pytest.mark.e2e
def test_warm_pods_are_promoted_on_scale_up_and_spared_on_scale_down(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    apply_pool(testbed, namespace, replicas=1, warm=2)
    wait_until(settled(testbed, namespace, 1, 2), timeout=90, what="1 active + 2 warm Ready pods")
    status = pool_status(testbed, namespace)
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "Ready": "True",
        "WarmPoolReady": "True",
        "Progressing": "False",
        "Degraded": "False",
    }
    before = pods_by_state(testbed, namespace)
    warm_uids = {p["metadata"]["uid"] for p in before["warm"].values()}

    # The scale subresource, as `kubectl scale` and an HPA use it.
    testbed.kubectl("scale", "agentpool", POOL, "-n", namespace, "--replicas=3")
    wait_until(settled(testbed, namespace, 3, 2), timeout=90, what="3 active + 2 warm Ready pods")
    after = pods_by_state(testbed, namespace)
    active_uids = {p["metadata"]["uid"] for p in after["active"].values()}
    # No cold start: both former warm pods, the very same pods, now serve as active.
    assert warm_uids <= active_uids
    assert not warm_uids & {p["metadata"]["uid"] for p in after["warm"].values()}
    assert "PodsPromoted" in event_reasons(testbed, namespace)

    # Scaling down removes active pods only: the warm pool is the spare.
    testbed.kubectl("scale", "agentpool", POOL, "-n", namespace, "--replicas=1")
    wait_until(settled(testbed, namespace, 1, 2), timeout=90, what="1 active + 2 warm again")
    assert set(pods_by_state(testbed, namespace)["warm"]) == set(after["warm"])

    # A warm pod that goes away is replaced.
    lost = sorted(after["warm"])[0]
    testbed.kubectl("delete", "pod", lost, "-n", namespace, "--wait=false")
    wait_until(
        lambda: (
            settled(testbed, namespace, 1, 2)()
            and lost not in pods_by_state(testbed, namespace)["warm"]
        ),
        timeout=90,
        what="the warm pool to refill",
    )
    assert {"PodsCreated", "PodsDeleted"} <= event_reasons(testbed, namespace)


@pytest.mark.e2e
def test_a_restarted_operator_converges_without_over_creating(
    testbed: TestBed, namespace: str, operator_factory: Callable[..., OperatorThread]
) -> None:
    first = operator_factory(namespace)
    apply_pool(testbed, namespace, replicas=2, warm=1)
    wait_until(settled(testbed, namespace, 2, 1), timeout=90, what="2 active + 1 warm Ready pods")
    first.stop()

    # Changes while no operator runs; the next one picks them up from a full list.
    apply_pool(testbed, namespace, replicas=4, warm=2)
    second = operator_factory(namespace)
    wait_until(settled(testbed, namespace, 4, 2), timeout=90, what="4 active + 2 warm Ready pods")
    all_pods = json.loads(
        testbed.kubectl(
            "get", "pods", "-n", namespace, "-l", f"swarmops.dev/pool={POOL}", "-o", "json"
        ).stdout
    )["items"]
    assert len(all_pods) == 6  # nothing extra was created, nothing is terminating
    assert second.alive
