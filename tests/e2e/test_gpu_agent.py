"""`swarmops gpu-agent` end to end: the real agent process, the real pynvml bindings on the
fake libnvidia-ml.so, publishing on a kwok GPU node of the real apiserver; a fault written
into the scenario file while it runs flips what it publishes."""

from __future__ import annotations

import ctypes.util
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from swarmops.testbed import fakenvml
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.gpuagent import AgentProcess, clear_node, published, read_node
from swarmops.testbed.processes import wait_until

HOPPER = "kwok-gpu-hopper-0"  # 8 GPUs by its nvidia.com/gpu.count label
AMPERE = "kwok-gpu-ampere-0"  # 4
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def library() -> Path:
    return fakenvml.ensure_library()


@pytest.fixture
def core(testbed: TestBed) -> Iterator[Any]:
    with testbed.api_client() as api_client:
        yield testbed.core_api(api_client)


@pytest.fixture
def start_agent(
    testbed: TestBed, core: Any, library: Path, tmp_path: Path
) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def start(node: str, scenario: fakenvml.Scenario | None, **kwargs: Any) -> AgentProcess:
        kwargs.setdefault("library_dir", library)
        agent = AgentProcess(
            testbed.kubeconfig, node, tmp_path / f"{node}-{len(started)}", scenario, **kwargs
        )
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()
    for node in {agent.node for agent in started}:
        clear_node(core, node)


def wait_for(
    core: Any, node: str, agent: AgentProcess, what: str, check: Callable[[Any, Any], bool]
) -> tuple[dict[str, Any], dict[str, Any]]:
    seen: dict[str, Any] = {}

    def holds() -> bool:
        condition, report = published(read_node(core, node))
        seen.update(condition=condition, report=report)
        return condition is not None and report is not None and check(condition, report)

    try:
        wait_until(holds, timeout=TIMEOUT, what=what, interval=0.2)
    except (TimeoutError, AssertionError) as error:
        raise AssertionError(f"{error}\nlast seen: {seen}\nagent log:\n{agent.log()}") from None
    return seen["condition"], seen["report"]


@pytest.mark.e2e
def test_the_agent_publishes_health_and_a_fault_flips_it(
    testbed: TestBed, core: Any, start_agent: Callable[..., AgentProcess]
) -> None:
    scenario = fakenvml.healthy_node(8)
    agent = start_agent(HOPPER, scenario)
    condition, report = wait_for(
        core, HOPPER, agent, "a healthy report", lambda c, r: c["status"] == "True"
    )
    assert (condition["reason"], condition["message"]) == ("GPUsHealthy", "8 GPUs healthy")
    assert report["level"] == "ok"
    assert (report["foundGPUs"], report["expectedGPUs"]) == (8, 8)  # from the node's label
    node = read_node(core, HOPPER)
    assert report["bootID"] == node["status"]["nodeInfo"]["bootID"]
    assert [gpu["uuid"] for gpu in report["gpus"]] == [g.uuid for g in scenario.devices]
    with urllib.request.urlopen(agent.metrics_url, timeout=5) as response:
        metrics = response.read().decode()
    uuid = scenario.devices[0].uuid
    assert f'swarmops_gpu_health{{gpu="0",level="ok",uuid="{uuid}"}} 1.0' in metrics
    assert f'swarmops_gpu_temperature_celsius{{gpu="0",uuid="{uuid}"}} 40.0' in metrics

    # GPU 5 falls off the bus while the agent runs.
    scenario.gpu(5).lost = True
    scenario.add_xid(gpu=5, xid=79)
    agent.scenario.write(scenario)
    condition, report = wait_for(
        core, HOPPER, agent, "a critical report", lambda c, r: c["status"] == "False"
    )
    assert condition["reason"] == "GPUCritical"
    assert "GPU 5" in condition["message"] and "XID 79" in condition["message"]
    assert report["level"] == "critical"
    assert report["recovery"] == "reboot"
    # The event is published at once; the next poll adds what NVML says of the GPU.
    _, report = wait_for(
        core,
        HOPPER,
        agent,
        "the poll's verdict",
        lambda c, r: len(r["gpus"][5].get("faults", [])) == 2,
    )
    lost = report["gpus"][5]
    assert {fault["reason"] for fault in lost["faults"]} == {"Xid79", "GPULost"}
    assert lost["xids"][0]["xid"] == 79
    with urllib.request.urlopen(agent.metrics_url, timeout=5) as response:
        metrics = response.read().decode()
    uuid5 = scenario.devices[5].uuid
    assert f'swarmops_gpu_xid_errors_total{{gpu="5",uuid="{uuid5}",xid="79"}} 1.0' in metrics
    assert agent.stop() == 0  # SIGTERM: a clean exit


@pytest.mark.e2e
def test_a_restarted_agent_remembers_a_fault_that_needs_a_reset(
    core: Any, start_agent: Callable[..., AgentProcess]
) -> None:
    scenario = fakenvml.healthy_node(4)
    scenario.add_xid(gpu=2, xid=48)
    first = start_agent(AMPERE, scenario)
    wait_for(core, AMPERE, first, "XID 48 published", lambda c, r: r["level"] == "critical")
    assert first.stop() == 0
    before = published(read_node(core, AMPERE))[1]
    assert before is not None
    # NVML does not replay old events to a new event set: the restarted agent only has
    # what its predecessor wrote on the node.
    scenario.events.clear()
    second = start_agent(AMPERE, scenario)
    _, report = wait_for(
        core,
        AMPERE,
        second,
        "a report from the second agent",
        lambda c, r: r["heartbeat"] > before["heartbeat"],
    )
    assert report["level"] == "critical"
    assert report["gpus"][2]["faults"][0]["reason"] == "Xid48"
    assert "1 remembered XIDs" in second.log()


@pytest.mark.e2e
def test_nvml_that_fails_is_unknown_and_the_agent_keeps_trying(
    core: Any, start_agent: Callable[..., AgentProcess]
) -> None:
    scenario = fakenvml.healthy_node(4)
    scenario.init = "driver_not_loaded"
    agent = start_agent(AMPERE, scenario)
    condition, report = wait_for(
        core, AMPERE, agent, "an Unknown condition", lambda c, r: c["status"] == "Unknown"
    )
    assert condition["reason"] == "NVMLUnavailable"
    assert "DriverNotLoaded" in condition["message"]
    assert report["level"] == "unknown"
    assert agent.alive()
    scenario.init = "ok"  # the driver comes back
    agent.scenario.write(scenario)
    wait_for(core, AMPERE, agent, "recovery", lambda c, r: c["status"] == "True")


@pytest.mark.e2e
@pytest.mark.skipif(
    ctypes.util.find_library("nvidia-ml") is not None, reason="a real NVML is installed"
)
def test_without_an_nvml_library_the_node_is_unknown(
    core: Any, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent(AMPERE, None, library_dir=None)
    condition, _ = wait_for(
        core, AMPERE, agent, "an Unknown condition", lambda c, r: c["status"] == "Unknown"
    )
    assert "LibraryNotFound" in condition["message"]
    assert agent.alive()
