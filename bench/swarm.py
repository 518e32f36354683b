"""Swarm benchmark: a 3-pool swarm of real agents from apply to Ready, then task latency
and throughput through its queues, P0 latency under a P3 flood, the claim hand-off, and
tasks lost when an agent pod is killed under load.

Starts a test bed with a process node (or reuses one: --kubeconfig, which must have its
process node running), installs the CRDs, runs the operator as a subprocess (`python -m
swarmops run`, watching one namespace), and forms a RedisCluster of real redis-server
processes there (`redis_ready_s`; 3 masters). Then (testbed/swarmbed.py):

1. `swarm_ready_s`: applying the Swarm (planner 1 -> workers `--agents` + 1 warm ->
   reviewer 1, agent processes on the process node, the RedisCluster referenced) to its
   Ready condition: pools started one after the other, each waiting for the one before
   to be Ready, every agent warmed up and probed Ready.
2. Through the workers' queue (`<swarm>.workers`), with bench/agents.py's phases:
   `tasks_per_s` (a backlog of `--tasks`), `task_p50_ms`/`task_p99_ms` (open loop at
   `--rate`), `p0_p99_ms_under_p3_flood` (submission -> start of P0 tasks while
   `--flood` P3 tasks drain).
3. `claim_to_agent_aware_ms`: an AgentClaim on the workers pool takes its warm agent;
   from the claim's boundAt to the agent's claimReceivedAt (its /status).
4. `tasks_lost`: `--tasks` tasks of 20 ms; a third of the way through, one worker
   agent's process is SIGKILLed (a crash: no drain); the process node restarts its
   container. Lost = keys without a result (must be 0); `tasks_effective_twice`
   (completions beyond one per key) must be 0; `tasks_run_twice` counts the tasks the
   dead agent held, run again by others after the visibility timeout (5 s here).
   `tasks_failed` (and each queue phase's `*_tasks_failed`): results that are errors,
   e.g. dead-lettered; must be 0 (the sample handler fails only when asked to).

Prints one JSON object. Quick run: python bench/swarm.py --agents 4 --tasks 500
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/x.py` puts bench/ first on sys.path, where bench/redis.py would shadow
# the redis package that imports below need. Hence imports after code in this file:
# ruff: noqa: E402
BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]

import argparse
import asyncio
import contextlib
import datetime
import importlib.util
import json
import logging
import os
import platform
import secrets
import subprocess
import tempfile
import time
import urllib.request
from types import ModuleType
from typing import Any

import yaml

from swarmops.agent import Priority, TaskQueue, connect, redis_config
from swarmops.agent.redisconn import RedisClient
from swarmops.testbed import redisbed, swarmbed
from swarmops.testbed.binaries import ensure_binaries, repository_root
from swarmops.testbed.cluster import TestBed, TestBedConfig
from swarmops.testbed.processes import free_port, wait_until

log = logging.getLogger("bench.swarm")
SWARM = "bench"
REDIS = "bench-redis"


def bench_agents() -> ModuleType:
    """bench/agents.py, for its queue phases (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_agents", BENCH / "agents.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Kube:
    """kubectl against the test bed (ours or a reused one)."""

    def __init__(self, bed: TestBed | None, kubeconfig: Path) -> None:
        self._bed = bed
        self._kubeconfig = kubeconfig

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        if self._bed is not None:
            return self._bed.kubectl(*args, input=input, check=check, timeout=timeout)
        return subprocess.run(
            [str(ensure_binaries() / "kubectl"), f"--kubeconfig={self._kubeconfig}", *args],
            input=input,
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)


def start_operator(kubeconfig: Path, namespace: str, log_path: Path) -> subprocess.Popen[bytes]:
    health = free_port()
    command = [
        sys.executable, "-m", "swarmops", "run",
        "--kubeconfig", str(kubeconfig),
        "--namespace", namespace,
        "--metrics-port", str(free_port()),
        "--health-port", str(health),
    ]  # fmt: skip
    with log_path.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited: see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=1):
                return True
        except OSError:
            return False

    wait_until(ready, timeout=90, what="the operator to be ready")
    return process


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def claim_handoff(kube: Kube, namespace: str) -> float:
    claim = {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "AgentClaim",
        "metadata": {"name": "bench-session", "namespace": namespace},
        "spec": {"poolRef": {"name": f"{SWARM}-workers"}, "whenNoWarmPod": "Wait"},
    }
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(claim))
    found: dict[str, Any] = {}

    def bound() -> bool:
        found.update(kube.json("agentclaim", "bench-session", "-n", namespace))
        status = found.get("status") or {}
        return status.get("phase") == "Bound" and bool(status.get("podIP"))

    wait_until(bound, timeout=120, interval=0.05, what="the claim bound")
    status = found["status"]
    seen: dict[str, Any] = {}

    def knows() -> bool:
        url = f"http://{status['podIP']}:8090/status"
        with urllib.request.urlopen(url, timeout=2) as response:
            seen.update(json.loads(response.read()))
        return (seen.get("claim") or {}).get("name") == "bench-session"

    wait_until(knows, timeout=30, interval=0.01, what="the agent to know its claim")
    delta = parse_time(seen["claimReceivedAt"]) - parse_time(status["boundAt"])
    return round(delta.total_seconds() * 1000, 1)


async def crash(redis: RedisClient, kube: Kube, namespace: str, tasks: int) -> dict[str, Any]:
    queue = TaskQueue(redis, f"{SWARM}.workers")
    # The queue's counters include the earlier phases' tasks: count from here.
    counters = (await queue.stats()).counters
    before = sum(counters.get(name, 0) for name in ("completed", "failed", "dead"))
    keys = await queue.submit_many(
        [({"value": i, "sleep": 0.02}, Priority(i % 4), None) for i in range(tasks)]
    )
    deadline = time.monotonic() + 300
    while (await queue.stats()).counters.get("completed", 0) - counters.get(
        "completed", 0
    ) < tasks // 3:
        if time.monotonic() > deadline:
            raise TimeoutError("the crash phase's tasks are not being served")
        await asyncio.sleep(0.05)
    victim = next(
        pod["metadata"]["name"]
        for pod in swarmbed.pool_pods(kube, namespace, f"{SWARM}-workers")
        if pod["metadata"]["labels"].get("swarmops.dev/state") == "active"
    )
    killed = swarmbed.kill_agent(victim)
    results = await queue.wait(keys, 600)
    # First completions, ok or not (a result and its count are written together).
    counters = (await queue.stats()).counters
    completed = sum(counters.get(name, 0) for name in ("completed", "failed", "dead")) - before
    raw = await redis.hgetall(f"{queue.keys.tag}:executions")
    ours = set(keys)
    return {
        "crash_tasks": tasks,
        "killed_pod": victim,
        "killed_pids": killed,
        "tasks_lost": tasks - len(results),
        "tasks_effective_twice": completed - len(results),
        # A task that failed (or was dead-lettered) has a result too: which, and why.
        "tasks_failed": sum(1 for r in results.values() if not r.ok),
        "failures": sorted({f"{r.error_type}: {r.error}" for r in results.values() if not r.ok})[
            :3
        ],
        "tasks_run_twice": sum(1 for key, n in raw.items() if int(n) > 1 and key in ours),
    }


async def queue_phases(
    args: argparse.Namespace, kube: Kube, namespace: str, url: str, password: str
) -> dict[str, Any]:
    agents = bench_agents()
    config = redis_config({"SWARMOPS_REDIS_URL": url, "SWARMOPS_REDIS_PASSWORD": password})
    assert config is not None
    redis = await connect(config)
    queue = f"{SWARM}.workers"
    figures: dict[str, Any] = {}
    try:
        keys = await agents.backlog(redis, args.tasks, queue)
        figures.update(await agents.throughput(redis, keys, queue))
        figures.update(await agents.steady(redis, args.rate, args.seconds, queue))
        figures.update(await agents.flood(redis, args.flood, args.flood_task_ms, queue))
        figures["claim_to_agent_aware_ms"] = await asyncio.to_thread(claim_handoff, kube, namespace)
        figures.update(await crash(redis, kube, namespace, args.tasks))
    finally:
        await redis.aclose()
    return figures


def measure(args: argparse.Namespace, kube: Kube, kubeconfig: Path) -> dict[str, Any]:
    namespace = f"bench-swarm-{secrets.token_hex(3)}"
    kube.kubectl("create", "namespace", namespace)
    wait_until(
        lambda: (
            kube.kubectl(
                "get", "serviceaccount", "default", "-n", namespace, check=False
            ).returncode
            == 0
        ),
        timeout=30,
        what="the namespace's default service account",
    )
    log_path = Path(tempfile.gettempdir()) / f"{namespace}-operator.log"
    operator = start_operator(kubeconfig, namespace, log_path)
    figures: dict[str, Any] = {"operator_log": str(log_path)}
    try:
        started = time.perf_counter()
        url = swarmbed.start_redis(kube, namespace, REDIS, timeout=300)
        figures["redis_ready_s"] = round(time.perf_counter() - started, 2)
        password = redisbed.password(kube, namespace, f"{REDIS}-auth")
        manifest = swarmbed.swarm_manifest(
            SWARM, namespace, redis_cluster=REDIS, redis_url=url, workers=args.agents,
            workers_warm=1,
        )  # fmt: skip
        started = time.perf_counter()
        kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
        body = swarmbed.wait_ready(kube, namespace, SWARM, timeout=600)
        figures["swarm_ready_s"] = round(time.perf_counter() - started, 2)
        figures["pools_started_at"] = {p["name"]: p["startedAt"] for p in body["status"]["pools"]}
        figures.update(asyncio.run(queue_phases(args, kube, namespace, url, password)))
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            kube.kubectl("delete", "swarm", SWARM, "-n", namespace, "--wait=false", check=False)
            # Let the operator stop the pools in order before it goes itself.
            wait_until(
                lambda: (
                    kube.kubectl("get", "swarm", SWARM, "-n", namespace, check=False).returncode
                    != 0
                ),
                timeout=120,
                what="the swarm deleted",
            )
        operator.terminate()
        try:
            operator.wait(30)
        except subprocess.TimeoutExpired:
            operator.kill()
        if not args.keep:
            kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", type=Path, help="reuse this running test bed")
    parser.add_argument("--state", type=Path, help="test bed state folder (default: temporary)")
    parser.add_argument("--agents", type=int, default=10, help="worker agents")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0, help="steady phase, tasks/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="steady phase length")
    parser.add_argument("--flood", type=int, default=2000)
    # Longer than bench/agents.py's 5 ms: the flood must outpace the agents to queue up
    # behind them, and the producer shares two cores with the whole test bed here.
    parser.add_argument("--flood-task-ms", type=float, default=20.0)
    parser.add_argument("--keep", action="store_true", help="leave the namespace in place")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    with contextlib.ExitStack() as stack:
        bed: TestBed | None = None
        if args.kubeconfig is not None:
            kubeconfig = args.kubeconfig
        else:
            state = args.state or Path(stack.enter_context(tempfile.TemporaryDirectory()))
            bed = TestBed(state, TestBedConfig(cpu_nodes=1, gpu_products=()))
            log.info("starting a test bed with a process node in %s", state)
            bed.start()
            stack.callback(bed.stop)
            kubeconfig = bed.kubeconfig
        kube = Kube(bed, kubeconfig)
        crds = repository_root() / "crds"
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
        kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(crds))
        figures = measure(args, kube, kubeconfig)
    report = {
        "agents": args.agents,
        **figures,
        "settings": {
            "tasks": args.tasks,
            "rate": args.rate,
            "seconds": args.seconds,
            "flood": args.flood,
            "flood_task_ms": args.flood_task_ms,
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
