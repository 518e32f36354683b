"""GPU health benchmark: fault → taint → agents running elsewhere, and the agent's cost.

Brings up its own test bed (or reuses one: --state DIR keeps it between runs), runs the
real operator in this process and one real `swarmops gpu-agent` process per kwok GPU node
(pynvml on the fake NVML), places an AgentPool's pods on the hopper node, then makes one
of its GPUs fall off the bus (XID 79 and GPU lost, written into the scenario file) and
times:

* fault_to_taint_s: from the scenario write to the node carrying swarmops.dev/gpu-unhealthy;
* fault_to_rescheduled_s: to every agent pod Running again on the healthy node;
* agent_cpu_percent, agent_rss_mb (agent_uss_mb: its private part): the hopper agent
  (8 GPUs) over --sample seconds at a --poll-interval poll, before the fault (CPU time of
  the process / wall time; peak memory).

Prints one JSON object. Usage: python bench/gpu.py [--poll-interval 10] [--sample 60]
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/x.py` puts bench/ first on sys.path, where bench/redis.py would shadow
# the redis package that imports below need. Hence imports after code in this file:
# ruff: noqa: E402
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import logging
import tempfile
import time
from typing import Any

import psutil
import yaml

from swarmops.core.gpu import GPU_HEALTH_LABEL, UNHEALTHY_TAINT
from swarmops.runtime import OperatorThread, build_services
from swarmops.settings import Settings
from swarmops.testbed import fakenvml
from swarmops.testbed.binaries import repository_root
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.gpuagent import AgentProcess, read_node
from swarmops.testbed.processes import free_port, wait_until

HOPPER, AMPERE = "kwok-gpu-hopper-0", "kwok-gpu-ampere-0"
NAMESPACE = "bench-gpu"
POOL = "gpu-agents"
REPLICAS = 3


def running_nodes(core: Any) -> list[str]:
    pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"swarmops.dev/pool={POOL}").items
    return sorted(
        p.spec.node_name or ""
        for p in pods
        if p.metadata.deletion_timestamp is None and p.status.phase == "Running"
    )


def node_taints(core: Any, node: str) -> set[str]:
    return {t["key"] for t in read_node(core, node)["spec"].get("taints") or []}


def sample_process(pid: int, seconds: float) -> tuple[float, float, float]:
    """CPU percent of one core, peak RSS and peak USS (MB) of a process over `seconds`."""
    process = psutil.Process(pid)
    before = process.cpu_times()
    started = time.monotonic()
    rss = uss = 0
    while time.monotonic() - started < seconds:
        memory = process.memory_full_info()
        rss, uss = max(rss, memory.rss), max(uss, memory.uss)
        time.sleep(0.5)
    after = process.cpu_times()
    wall = time.monotonic() - started
    used = (after.user - before.user) + (after.system - before.system)
    return 100.0 * used / wall, rss / 2**20, uss / 2**20


def run(args: argparse.Namespace, bed: TestBed, work: Path) -> dict[str, Any]:
    bed.kubectl("apply", "--server-side", "-f", str(repository_root() / "crds"))
    bed.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "-f",
        str(repository_root() / "crds"),
    )
    bed.namespace_ready(NAMESPACE)
    library = fakenvml.ensure_library()
    hopper_gpus = fakenvml.healthy_node(8)
    agents = [
        AgentProcess(
            bed.kubeconfig,
            node,
            work / node,
            scenario,
            library_dir=library,
            poll_interval=args.poll_interval,
            heartbeat_interval=max(30.0, args.poll_interval),
        )
        for node, scenario in (
            (HOPPER, hopper_gpus),
            (AMPERE, fakenvml.healthy_node(4, prefix="GPU-a")),
        )
    ]
    settings = Settings(
        namespaces=(NAMESPACE,),
        kubeconfig=bed.kubeconfig,
        health_port=free_port(),
        metrics_port=free_port(),
        gpu_reaction="on",
    )
    operator = OperatorThread(settings, build_services(settings, environ={}))
    operator.start()
    try:
        with bed.api_client() as api_client:
            core = bed.core_api(api_client)

            def labelled_ok(node: str) -> bool:
                labels = read_node(core, node)["metadata"].get("labels") or {}
                return bool(labels.get(GPU_HEALTH_LABEL) == "ok")

            for node in (HOPPER, AMPERE):
                wait_until(lambda node=node: labelled_ok(node), timeout=120, what=f"{node} ok")
            bed.kubectl("cordon", AMPERE)
            pool = {
                "apiVersion": "swarmops.dev/v1alpha1",
                "kind": "AgentPool",
                "metadata": {"name": POOL, "namespace": NAMESPACE},
                "spec": {
                    "replicas": REPLICAS,
                    "gpu": {"count": 1},
                    "template": {"spec": {"containers": [{"name": "a", "image": "agent:gpu"}]}},
                },
            }
            bed.kubectl("apply", "-f", "-", input=yaml.safe_dump(pool))
            wait_until(
                lambda: running_nodes(core) == [HOPPER] * REPLICAS,
                timeout=120,
                what="the pool on the hopper node",
            )
            bed.kubectl("uncordon", AMPERE)

            cpu, rss, uss = sample_process(agents[0].process.pid, args.sample)

            hopper_gpus.gpu(2).lost = True
            hopper_gpus.add_xid(gpu=2, xid=79)
            fault = time.monotonic()
            agents[0].scenario.write(hopper_gpus)
            tainted = rescheduled = None
            deadline = fault + 120
            while time.monotonic() < deadline and rescheduled is None:
                if tainted is None and UNHEALTHY_TAINT in node_taints(core, HOPPER):
                    tainted = time.monotonic() - fault
                if tainted is not None and running_nodes(core) == [AMPERE] * REPLICAS:
                    rescheduled = time.monotonic() - fault
                time.sleep(0.02)
    finally:
        operator.stop()
        for agent in agents:
            agent.stop()
    return {
        "fault_to_taint_s": None if tainted is None else round(tainted, 3),
        "fault_to_rescheduled_s": None if rescheduled is None else round(rescheduled, 3),
        "agent_cpu_percent": round(cpu, 3),
        "agent_rss_mb": round(rss, 1),
        "agent_uss_mb": round(uss, 1),
        "agent_gpus": 8,
        "poll_interval_s": args.poll_interval,
        "sample_s": args.sample,
        "agent_pods": REPLICAS,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poll-interval", type=float, default=10.0)
    parser.add_argument("--sample", type=float, default=60.0, help="seconds of agent sampling")
    parser.add_argument("--state", type=Path, help="test bed folder (default: a temporary one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    state = args.state or work / "testbed"
    with TestBed(state) as bed:
        result = run(args, bed, work)
    print(json.dumps(result))
    return 0 if result["fault_to_rescheduled_s"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
