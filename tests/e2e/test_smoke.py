"""Issue 2's proof: an AgentPool becomes Running pods on kwok nodes, and deleting the
pool removes them through owner references, by the real garbage collector."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
import yaml

from swarmops.runtime import OperatorThread
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.processes import wait_until

POOL = "smoke"
SELECTOR = f"swarmops.dev/pool={POOL}"


def pool_manifest(namespace: str, replicas: int) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "swarmops.dev/v1alpha1",
            "kind": "AgentPool",
            "metadata": {"name": POOL, "namespace": namespace},
            "spec": {
                "replicas": replicas,
                "template": {
                    "metadata": {"labels": {"app": "smoke-agent"}},
                    "spec": {
                        # kwok's simulated CPU nodes: nothing really runs the image.
                        "nodeSelector": {"swarmops.dev/node-kind": "cpu"},
                        "containers": [{"name": "agent", "image": "swarmops/agent:smoke"}],
                    },
                },
            },
        }
    )


def pods(testbed: TestBed, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = testbed.get_json("pods", "-n", namespace, "-l", SELECTOR)["items"]
    return items


def running_on(pod: dict[str, Any], nodes: list[str]) -> bool:
    return pod["status"].get("phase") == "Running" and pod["spec"].get("nodeName") in nodes


@pytest.mark.e2e
def test_pool_pods_run_on_kwok_and_are_garbage_collected(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    testbed.kubectl("apply", "-f", "-", input=pool_manifest(namespace, replicas=2))
    pool = testbed.get_json("agentpool", POOL, "-n", namespace)

    wait_until(
        lambda: (
            len(pods(testbed, namespace)) == 2
            and all(running_on(p, testbed.cpu_nodes) for p in pods(testbed, namespace))
        ),
        timeout=60,
        what="two pool pods Running on kwok CPU nodes",
    )
    for pod in pods(testbed, namespace):
        assert pod["metadata"]["generateName"] == f"{POOL}-"
        assert pod["metadata"]["labels"]["swarmops.dev/state"] == "active"
        assert pod["metadata"]["labels"]["app"] == "smoke-agent"
        assert pod["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "swarmops.dev/v1alpha1",
                "kind": "AgentPool",
                "name": POOL,
                "uid": pool["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]

    def status() -> dict[str, Any]:
        result: dict[str, Any] = testbed.get_json("agentpool", POOL, "-n", namespace).get(
            "status", {}
        )
        return result

    wait_until(
        lambda: status().get("readyReplicas") == 2,
        timeout=60,
        what="the pool's status to count two Ready pods",
    )
    final = status()
    assert (final["replicas"], final["readyReplicas"]) == (2, 2)
    assert final["observedGeneration"] == pool["metadata"]["generation"]
    assert final["selector"] == f"{SELECTOR},swarmops.dev/state=active"
    conditions = {c["type"]: c for c in final["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Degraded"]["status"] == "False"
    # kubectl wait, as a person or a GitOps tool would use it.
    testbed.kubectl(
        "wait", "--for=condition=Ready", f"agentpool/{POOL}", "-n", namespace, "--timeout=30s"
    )
    # kopf stored nothing on the pool: no finalizer, no progress annotations.
    assert not pool["metadata"].get("finalizers")
    current = testbed.get_json("agentpool", POOL, "-n", namespace)
    assert not current["metadata"].get("finalizers")
    assert not any(k.startswith("kopf.") for k in current["metadata"].get("annotations", {}))
    metrics_url = f"http://127.0.0.1:{operator.settings.metrics_port}/metrics"
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        exposition = response.read().decode()
    active_gauge = f'swarmops_pool_pods{{namespace="{namespace}",pool="{POOL}",state="active"}}'
    assert f"{active_gauge} 2.0" in exposition

    # From here on only the cluster acts: if the pods go, the garbage collector took them.
    operator.stop()
    names = {p["metadata"]["name"] for p in pods(testbed, namespace)}
    testbed.kubectl("delete", "agentpool", POOL, "-n", namespace, "--wait=false")
    wait_until(
        lambda: not pods(testbed, namespace),
        timeout=90,
        what=f"the garbage collector to delete pods {sorted(names)}",
    )
