"""The operator's reaction end to end: GPU agents on two kwok GPU nodes (the real agent
process, pynvml on the fake NVML), the real operator, the real scheduler. A GPU falls off
the bus on one node: SwarmOps taints it, evicts the agent pods there, the pool replaces
them on the healthy node; the taint stays through clean reports until the node reboots
(its BootID changes), then it is lifted."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from swarmops.core.gpu import GPU_HEALTH_LABEL, SWARMOPS_GPU_TAINTS, UNHEALTHY_TAINT
from swarmops.gpu.reaction import MEMORY_ANNOTATION
from swarmops.testbed import fakenvml
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.gpuagent import AgentProcess, clear_node, read_node
from swarmops.testbed.processes import wait_until

HOPPER, AMPERE = "kwok-gpu-hopper-0", "kwok-gpu-ampere-0"
TIMEOUT = 90


@pytest.fixture
def core(testbed: TestBed) -> Iterator[Any]:
    with testbed.api_client() as api_client:
        yield testbed.core_api(api_client)


@pytest.fixture
def gpu_nodes_restored(testbed: TestBed, core: Any) -> Iterator[None]:
    """Put both GPU nodes back as they were (requested before the operator, so this
    runs after the operator stopped and cannot taint them again)."""
    before = {node: read_node(core, node) for node in (HOPPER, AMPERE)}
    yield
    for node, body in before.items():
        clear_node(core, node)
        current = read_node(core, node)
        taints = [
            t for t in current["spec"].get("taints") or [] if t["key"] not in SWARMOPS_GPU_TAINTS
        ]
        core.patch_node(
            node,
            {
                "metadata": {
                    "labels": {GPU_HEALTH_LABEL: None},
                    "annotations": {MEMORY_ANNOTATION: None},
                },
                "spec": {"taints": taints, "unschedulable": None},
            },
            _content_type="application/merge-patch+json",
        )
        boot = body["status"]["nodeInfo"]["bootID"]
        core.patch_node_status(
            node,
            {"status": {"nodeInfo": {"bootID": boot}}},
            _content_type="application/merge-patch+json",
        )


def node_facts(core: Any, node: str) -> tuple[str | None, set[str]]:
    body = read_node(core, node)
    label = (body["metadata"].get("labels") or {}).get(GPU_HEALTH_LABEL)
    taints = {t["key"] for t in body["spec"].get("taints") or []}
    return label, taints & SWARMOPS_GPU_TAINTS


def running_pods(testbed: TestBed, namespace: str, pool: str) -> list[dict[str, Any]]:
    listing = json.loads(
        testbed.kubectl(
            "get", "pods", "-n", namespace, "-l", f"swarmops.dev/pool={pool}", "-o", "json"
        ).stdout
    )
    return [
        p
        for p in listing["items"]
        if not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") == "Running"
    ]


@pytest.mark.e2e
@pytest.mark.usefixtures("gpu_nodes_restored")
def test_a_gpu_fault_taints_the_node_moves_the_agents_and_clears_after_a_reboot(
    testbed: TestBed,
    core: Any,
    namespace: str,
    operator_factory: Callable[..., Any],
    tmp_path: Path,
) -> None:
    library = fakenvml.ensure_library()

    def agent(node: str, scenario: fakenvml.Scenario, tag: str) -> AgentProcess:
        return AgentProcess(
            testbed.kubeconfig, node, tmp_path / f"{node}-{tag}", scenario, library_dir=library
        )

    hopper_gpus, ampere_gpus = fakenvml.healthy_node(8), fakenvml.healthy_node(4, prefix="GPU-a")
    agents = [agent(HOPPER, hopper_gpus, "1"), agent(AMPERE, ampere_gpus, "1")]
    try:
        operator_factory(namespace)
        for node in (HOPPER, AMPERE):
            wait_until(
                lambda node=node: node_facts(core, node) == ("ok", set()),
                timeout=TIMEOUT,
                what=f"{node} labelled healthy by the operator",
            )
        # Every agent pod starts on the hopper node: the ampere node is cordoned meanwhile.
        testbed.kubectl("cordon", AMPERE)
        pool = {
            "apiVersion": "swarmops.dev/v1alpha1",
            "kind": "AgentPool",
            "metadata": {"name": "gpu-agents", "namespace": namespace},
            "spec": {
                "replicas": 3,
                "gpu": {"count": 1},
                "template": {"spec": {"containers": [{"name": "agent", "image": "agent:gpu"}]}},
            },
        }
        testbed.kubectl("apply", "-f", "-", input=yaml.safe_dump(pool))
        wait_until(
            lambda: (
                [p["spec"]["nodeName"] for p in running_pods(testbed, namespace, "gpu-agents")]
                == [HOPPER] * 3
            ),
            timeout=TIMEOUT,
            what="three agent pods running on the hopper node",
        )
        testbed.kubectl("uncordon", AMPERE)

        # GPU 2 of the hopper node falls off the bus.
        hopper_gpus.gpu(2).lost = True
        hopper_gpus.add_xid(gpu=2, xid=79)
        agents[0].scenario.write(hopper_gpus)
        wait_until(
            lambda: node_facts(core, HOPPER) == ("critical", {UNHEALTHY_TAINT}),
            timeout=TIMEOUT,
            what="the hopper node tainted and labelled critical",
        )
        wait_until(
            lambda: (
                sorted(
                    p["spec"].get("nodeName", "")
                    for p in running_pods(testbed, namespace, "gpu-agents")
                )
                == [AMPERE] * 3
            ),
            timeout=TIMEOUT,
            what="the agent pods evicted and running again on the ampere node",
        )
        assert node_facts(core, AMPERE) == ("ok", set())
        events = testbed.kubectl(
            "get", "events", "-n", "default", "--field-selector", f"involvedObject.name={HOPPER}"
        ).stdout
        assert "GPUQuarantined" in events

        # The GPU comes back, but nothing rebooted: the agent still remembers XID 79
        # (it needs a reboot), so the taint stays.
        agents[0].stop()
        healthy = fakenvml.healthy_node(8)
        agents[0] = agent(HOPPER, healthy, "2")
        wait_until(
            lambda: agents[0].log().count("1 remembered XIDs") == 1,
            timeout=TIMEOUT,
            what="the restarted agent",
        )
        memory = json.loads(read_node(core, HOPPER)["metadata"]["annotations"][MEMORY_ANNOTATION])
        assert (memory["quarantine"], memory["recovery"]) == ("critical", "reboot")
        assert node_facts(core, HOPPER) == ("critical", {UNHEALTHY_TAINT})

        # The node reboots: a new BootID, a new agent, clean reports: the taint is lifted.
        agents[0].stop()
        core.patch_node_status(
            HOPPER,
            {"status": {"nodeInfo": {"bootID": "rebooted-" + memory["faultBootID"]}}},
            _content_type="application/merge-patch+json",
        )
        agents[0] = agent(HOPPER, healthy, "3")
        wait_until(
            lambda: node_facts(core, HOPPER) == ("ok", set()),
            timeout=TIMEOUT,
            what="the hopper node's quarantine lifted after the reboot",
        )
        events = testbed.kubectl(
            "get", "events", "-n", "default", "--field-selector", f"involvedObject.name={HOPPER}"
        ).stdout
        assert "GPUQuarantineLifted" in events
    finally:
        for running in agents:
            running.stop()
