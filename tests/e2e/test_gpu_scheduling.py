"""GPU scheduling on the test bed's kwok GPU nodes, with the real kube-scheduler: agent pods
land only on matching, healthy nodes, and a request no node can satisfy is reported as
Degraded (UnsatisfiableGPURequest) while every other pool is served."""

from __future__ import annotations

import contextlib
import functools
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from swarmops.core.gpu import UNHEALTHY_TAINT
from swarmops.core.gpu_fit import GPU_REQUEST_SATISFIABLE, UNSATISFIABLE_GPU_REQUEST
from swarmops.runtime import OperatorThread
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.nodes import A100, H100, GPUProduct, gpu_node
from swarmops.testbed.processes import wait_until

HOPPER, AMPERE = "kwok-gpu-hopper-0", "kwok-gpu-ampere-0"
TIMEOUT = 90


def apply_pool(
    testbed: TestBed,
    namespace: str,
    name: str,
    *,
    gpu: dict[str, Any] | None,
    replicas: int = 1,
    warm: int = 0,
) -> None:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "warmPool": {"size": warm},
        "template": {"spec": {"containers": [{"name": "agent", "image": "swarmops/agent:gpu"}]}},
    }
    if gpu is not None:
        spec["gpu"] = gpu
    else:
        spec["template"]["spec"]["nodeSelector"] = {"swarmops.dev/node-kind": "cpu"}
    manifest = {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    testbed.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))


def pool_pods(testbed: TestBed, namespace: str, pool: str) -> list[dict[str, Any]]:
    listing = json.loads(
        testbed.kubectl(
            "get", "pods", "-n", namespace, "-l", f"swarmops.dev/pool={pool}", "-o", "json"
        ).stdout
    )
    return [p for p in listing["items"] if not p["metadata"].get("deletionTimestamp")]


def nodes_of(testbed: TestBed, namespace: str, pool: str) -> set[str | None]:
    return {p["spec"].get("nodeName") for p in pool_pods(testbed, namespace, pool)}


def condition(testbed: TestBed, namespace: str, pool: str, kind: str) -> dict[str, Any]:
    body = json.loads(
        testbed.kubectl("get", "agentpool", pool, "-n", namespace, "-o", "json").stdout
    )
    for found in body.get("status", {}).get("conditions", []):
        if found["type"] == kind:
            result: dict[str, Any] = found
            return result
    return {}


def is_ready(testbed: TestBed, namespace: str, pool: str) -> bool:
    return condition(testbed, namespace, pool, "Ready").get("status") == "True"


def is_unsatisfiable(testbed: TestBed, namespace: str, pool: str) -> bool:
    degraded = condition(testbed, namespace, pool, "Degraded")
    return (degraded.get("status"), degraded.get("reason")) == ("True", UNSATISFIABLE_GPU_REQUEST)


def events(testbed: TestBed, namespace: str, pool: str) -> list[dict[str, Any]]:
    listing = json.loads(
        testbed.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            f"involvedObject.kind=AgentPool,involvedObject.name={pool}",
            "-o",
            "json",
        ).stdout
    )
    items: list[dict[str, Any]] = listing["items"]
    return items


@contextlib.contextmanager
def extra_gpu_nodes(
    testbed: TestBed, product: GPUProduct, count: int, taints: list[dict[str, str]] | None = None
) -> Iterator[list[str]]:
    """kwok GPU nodes for one test, deleted afterwards: the test bed is shared by the session."""
    suffix = secrets.token_hex(3)
    names = [f"kwok-gpu-{product.family}-{suffix}-{i}" for i in range(count)]
    try:
        with testbed.api_client() as api_client:
            core = testbed.core_api(api_client)
            for name in names:
                manifest = gpu_node(name, product)
                manifest["spec"]["taints"] = [*manifest["spec"]["taints"], *(taints or [])]
                core.create_node(manifest)
                # A create may drop status; kwok's stages read capacity from it.
                core.patch_node_status(name, {"status": manifest["status"]})
        yield names
    finally:
        for name in names:
            testbed.kubectl("delete", "node", name, "--wait=false", "--ignore-not-found")


@pytest.mark.e2e
def test_gpu_pools_land_only_on_matching_nodes(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    apply_pool(testbed, namespace, "h100", gpu={"products": [H100.product]}, replicas=2, warm=1)
    apply_pool(testbed, namespace, "a100", gpu={"products": [A100.product]}, replicas=2)
    # More memory than an A100 40GB has: only the H100 node qualifies.
    apply_pool(testbed, namespace, "big-memory", gpu={"minMemoryMiB": 40961}, replicas=2)
    for pool in ("h100", "a100", "big-memory"):
        wait_until(
            functools.partial(is_ready, testbed, namespace, pool),
            timeout=TIMEOUT,
            what=f"pool {pool} to be Ready",
        )
    wait_until(
        lambda: (
            len(pool_pods(testbed, namespace, "h100")) == 3
            and None not in nodes_of(testbed, namespace, "h100")
        ),
        timeout=TIMEOUT,
        what="the h100 pool's warm pod to be placed",
    )
    assert nodes_of(testbed, namespace, "h100") == {HOPPER}
    assert nodes_of(testbed, namespace, "a100") == {AMPERE}
    assert nodes_of(testbed, namespace, "big-memory") == {HOPPER}
    for pool in ("h100", "a100", "big-memory"):
        assert condition(testbed, namespace, pool, "Degraded")["status"] == "False"
    pod = pool_pods(testbed, namespace, "a100")[0]
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
        "tolerations"
    ]


@pytest.mark.e2e
def test_more_gpus_than_any_node_has_degrades_that_pool_only(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    apply_pool(testbed, namespace, "too-many", gpu={"count": 16})
    apply_pool(testbed, namespace, "healthy", gpu=None, replicas=2)
    wait_until(
        lambda: is_unsatisfiable(testbed, namespace, "too-many"),
        timeout=TIMEOUT,
        what="too-many to be Degraded with UnsatisfiableGPURequest",
    )
    wait_until(
        lambda: is_ready(testbed, namespace, "healthy"),
        timeout=TIMEOUT,
        what="the healthy pool beside it to be Ready",
    )
    message = condition(testbed, namespace, "too-many", "Degraded")["message"]
    assert message.startswith("no node offers 16 GPUs per pod; GPU products on nodes: ")
    assert f"{H100.product} ({H100.memory_mib} MiB, 8 per node" in message
    assert f"{A100.product} ({A100.memory_mib} MiB, 4 per node" in message
    ready = condition(testbed, namespace, "too-many", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", UNSATISFIABLE_GPU_REQUEST)
    # The pod exists anyway and waits: what a cluster autoscaler acts on.
    wait_until(
        lambda: len(pool_pods(testbed, namespace, "too-many")) == 1,
        timeout=TIMEOUT,
        what="the pool's pod to be created",
    )
    assert nodes_of(testbed, namespace, "too-many") == {None}
    wait_until(
        lambda: any(
            e["reason"] == UNSATISFIABLE_GPU_REQUEST and e["type"] == "Warning"
            for e in events(testbed, namespace, "too-many")
        ),
        timeout=TIMEOUT,
        what="a Warning Event UnsatisfiableGPURequest",
    )
    # Later reconciles (the pod's own status changes, the healthy pool's) add none.
    warnings = [
        e
        for e in events(testbed, namespace, "too-many")
        if e["reason"] == UNSATISFIABLE_GPU_REQUEST
    ]
    assert len(warnings) == 1 and warnings[0]["message"] == message


@pytest.mark.e2e
def test_an_unknown_product_is_degraded_until_a_node_with_it_appears(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    b200 = GPUProduct(f"NVIDIA-B200-{secrets.token_hex(2)}", 183359, 8, "blackwell")
    apply_pool(testbed, namespace, "b200", gpu={"products": [b200.product]}, replicas=2)
    wait_until(
        lambda: is_unsatisfiable(testbed, namespace, "b200"),
        timeout=TIMEOUT,
        what="the pool to be Degraded with UnsatisfiableGPURequest",
    )
    message = condition(testbed, namespace, "b200", "Degraded")["message"]
    assert message.startswith(f"no node offers 1 GPU of {b200.product} per pod;")
    assert H100.product in message and A100.product in message

    with extra_gpu_nodes(testbed, b200, 1) as (new_node,):
        wait_until(
            lambda: (
                is_ready(testbed, namespace, "b200")
                and condition(testbed, namespace, "b200", "Degraded").get("status") == "False"
            ),
            timeout=TIMEOUT,
            what="Degraded to clear and the pool to be Ready once a B200 node exists",
        )
        assert nodes_of(testbed, namespace, "b200") == {new_node}
        wait_until(
            lambda: any(
                e["reason"] == GPU_REQUEST_SATISFIABLE for e in events(testbed, namespace, "b200")
            ),
            timeout=TIMEOUT,
            what="an Event that the request can be satisfied now",
        )
        reasons = [e["reason"] for e in events(testbed, namespace, "b200")]
        assert reasons.count(UNSATISFIABLE_GPU_REQUEST) == 1


@pytest.mark.e2e
def test_nodes_swarmops_marked_unhealthy_receive_no_new_pods(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    product = GPUProduct(f"SWARMOPS-TEST-GPU-{secrets.token_hex(2)}", 24576, 2, "test")
    with extra_gpu_nodes(testbed, product, 2) as (sick, well):
        testbed.kubectl("taint", "node", sick, f"{UNHEALTHY_TAINT}=xid-79:NoSchedule")
        apply_pool(testbed, namespace, "agents", gpu={"products": [product.product]}, replicas=2)
        wait_until(
            lambda: is_ready(testbed, namespace, "agents"),
            timeout=TIMEOUT,
            what="the pool to be Ready on the healthy node",
        )
        assert nodes_of(testbed, namespace, "agents") == {well}

        # Both marked: nothing can host a new pod; running pods stay (NoSchedule).
        testbed.kubectl("taint", "node", well, f"{UNHEALTHY_TAINT}=xid-79:NoSchedule")
        wait_until(
            lambda: is_unsatisfiable(testbed, namespace, "agents"),
            timeout=TIMEOUT,
            what="the pool to be Degraded once every matching node is marked unhealthy",
        )
        message = condition(testbed, namespace, "agents", "Degraded")["message"]
        assert f"{product.product} (24576 MiB, 2 per node, 2 nodes, 2 excluded" in message
        testbed.kubectl("scale", "agentpool", "agents", "-n", namespace, "--replicas=3")
        wait_until(
            lambda: len(pool_pods(testbed, namespace, "agents")) == 3,
            timeout=TIMEOUT,
            what="the third pod to be created",
        )
        assert nodes_of(testbed, namespace, "agents") == {well, None}

        # The sick node heals (SwarmOps removes its own taint): the waiting pod lands there.
        testbed.kubectl("taint", "node", sick, f"{UNHEALTHY_TAINT}:NoSchedule-")
        wait_until(
            lambda: (
                nodes_of(testbed, namespace, "agents") == {well, sick}
                and is_ready(testbed, namespace, "agents")
                and condition(testbed, namespace, "agents", "Degraded").get("status") == "False"
            ),
            timeout=TIMEOUT,
            what="the waiting pod to land on the healed node and Degraded to clear",
        )
