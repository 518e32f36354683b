"""Agent runtime benchmark: task latency and throughput through the queues, P0 latency
under a P3 flood, and tasks lost when an agent is killed under load.

Starts a real redis-server (loopback, with a password) and `--agents` agent processes
(`python -m swarmops agent --handler swarmops.agent.examples:work`, as the process node
runs agent pods), then, on a queue of each phase's own:

1. throughput: `--tasks` tasks of mixed priority queued before the agents start;
   `tasks_per_s` = tasks / (first start -> last finish): what the agents drain, with
   the producer out of the way. Then steady: `--rate` tasks/s for `--seconds` (open
   loop); `task_p50_ms`/`task_p99_ms` = the result's finish - its submission (one
   machine, one clock), queueing included.
2. flood: `--flood` P3 tasks of `--flood-task-ms` each, then one P0 task every 50 ms
   while the flood drains; `p0_p99_ms_under_p3_flood` = submission -> start of the P0
   tasks (what priority controls: how long a P0 waits for an agent).
3. crash: `--tasks` tasks of 20 ms; one agent is SIGKILLed mid-load and a replacement
   started; `tasks_lost` = submitted keys without a result after the visibility timeout,
   `tasks_effective_twice` = keys completed more than once (the `completed` counter
   minus unique keys; must be 0), `tasks_run_twice` = tasks re-run after the kill.

Every phase also reports its tasks whose result is an error (`*tasks_failed`, must be 0:
the sample handler fails only when asked to), e.g. dead-lettered as delivered too often.

The claim hand-off latency (`claim_to_agent_aware_ms`) needs the operator and the test
bed: tests/e2e/test_agent_handoff.py measures and logs it.

Prints one JSON object. Quick run: python bench/agents.py --agents 4 --tasks 500
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/x.py` puts bench/ first on sys.path, where bench/redis.py would shadow
# the redis package that imports below need. Hence imports after code in this file:
# ruff: noqa: E402
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import json
import os
import platform
import signal
import tempfile
import time
from typing import Any

from swarmops.agent import Priority, TaskQueue, TaskResult, connect, redis_config
from swarmops.agent.redisconn import RedisClient
from swarmops.testbed.agentbed import AgentProcess, RedisServer


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return round(ordered[index], 2)


def failed(results: dict[str, TaskResult]) -> int:
    """Tasks whose result is an error (a handler error, or dead-lettered): lost work too,
    though they have a result. The sample handler fails only when asked to."""
    return sum(1 for result in results.values() if not result.ok)


async def backlog(redis: RedisClient, tasks: int, name: str = "bench-throughput") -> list[str]:
    """Queue `tasks` before any agent runs, so the drain measures the agents alone."""
    queue = TaskQueue(redis, name)
    return await queue.submit_many([({"value": i}, Priority(i % 4), None) for i in range(tasks)])


async def throughput(
    redis: RedisClient, keys: list[str], name: str = "bench-throughput"
) -> dict[str, Any]:
    queue = TaskQueue(redis, name)
    results = await queue.wait(keys, 600)
    first = min(r.started_ms or 0 for r in results.values())
    last = max(r.finished_ms or 0 for r in results.values())
    return {
        "tasks": len(keys),
        "tasks_per_s": round(len(results) / max((last - first) / 1000, 1e-3), 1),
        "throughput_tasks_lost": len(keys) - len(results),
        "throughput_tasks_failed": failed(results),
    }


async def steady(
    redis: RedisClient, rate: float, seconds: float, name: str = "bench-throughput"
) -> dict[str, Any]:
    """Open loop: task i is submitted at start + i/rate, whatever happened before."""
    queue = TaskQueue(redis, name)
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending: list[asyncio.Task[str]] = []
    for index in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + index / rate - loop.time()))
        pending.append(asyncio.ensure_future(queue.submit({"value": index}, Priority.P2)))
    keys = list(await asyncio.gather(*pending))
    results = await queue.wait(keys, 600)
    latencies = [float((r.finished_ms or 0) - (r.submitted_ms or 0)) for r in results.values()]
    return {
        "steady_rate_per_s": rate,
        "task_p50_ms": percentile(latencies, 50),
        "task_p99_ms": percentile(latencies, 99),
        "steady_tasks_lost": len(keys) - len(results),
        "steady_tasks_failed": failed(results),
    }


async def flood(
    redis: RedisClient, size: int, task_ms: float, name: str = "bench-flood"
) -> dict[str, Any]:
    queue = TaskQueue(redis, name)
    flood_keys = list(
        await asyncio.gather(
            *(queue.submit({"value": 1, "sleep": task_ms / 1000}, Priority.P3) for _ in range(size))
        )
    )
    urgent: list[str] = []
    # P0 tasks while the flood drains: one every 50 ms until the backlog is nearly gone.
    while True:
        stats = await queue.stats()
        if stats.backlog[Priority.P3] < size // 10 or len(urgent) >= 200:
            break
        urgent.append(await queue.submit({"value": 2}, Priority.P0))
        await asyncio.sleep(0.05)
    results = await queue.wait([*urgent, *flood_keys], 600)
    waits = [
        float((results[k].started_ms or 0) - (results[k].submitted_ms or 0))
        for k in urgent
        if k in results
    ]
    p3_waits = [
        float((results[k].started_ms or 0) - (results[k].submitted_ms or 0))
        for k in flood_keys
        if k in results
    ]
    return {
        "flood_p3_tasks": size,
        "flood_p0_tasks": len(urgent),
        "p0_p50_ms_under_p3_flood": percentile(waits, 50),
        "p0_p99_ms_under_p3_flood": percentile(waits, 99),
        "p3_p50_wait_ms_in_flood": percentile(p3_waits, 50),
        "flood_tasks_lost": len(urgent) + size - len(results),
        "flood_tasks_failed": failed(results),
    }


async def crash(
    redis: RedisClient, tasks: int, fleet: list[AgentProcess], replace: Any
) -> dict[str, Any]:
    queue = TaskQueue(redis, "bench-crash")
    keys = await queue.submit_many(
        [({"value": i, "sleep": 0.02}, Priority(i % 4), None) for i in range(tasks)]
    )
    deadline = time.monotonic() + 300
    while (await queue.stats()).counters.get("completed", 0) < tasks // 3:
        if time.monotonic() > deadline:
            raise TimeoutError("the crash phase's tasks are not being served")
        await asyncio.sleep(0.05)
    victim = fleet[0]
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    fleet[0] = replace()
    results = await queue.wait(keys, 600)
    stats = await queue.stats()
    raw = await redis.hgetall(f"{queue.keys.tag}:executions")
    executions = [int(v) for v in raw.values()]
    return {
        "crash_tasks": tasks,
        "tasks_lost": tasks - len(results),
        # First completions, ok or not (a result and its count are written together).
        "tasks_effective_twice": sum(
            stats.counters.get(name, 0) for name in ("completed", "failed", "dead")
        )
        - len(results),
        "tasks_failed": failed(results),
        "tasks_run_twice": sum(1 for n in executions if n > 1),
    }


async def measure(args: argparse.Namespace, server: RedisServer, workdir: Path) -> dict[str, Any]:
    config = redis_config(server.env())
    assert config is not None
    redis = await connect(config)
    fleet: list[AgentProcess] = []
    serial = 0

    def start(queue: str) -> AgentProcess:
        nonlocal serial
        serial += 1
        env = {
            **server.env(),
            "SWARMOPS_QUEUE": queue,
            "SWARMOPS_VISIBILITY_TIMEOUT_SECONDS": str(args.visibility),
            "SWARMOPS_LOG_LEVEL": "WARNING",
        }
        agent = AgentProcess(
            f"bench-{serial}", workdir, handler="swarmops.agent.examples:work", env=env
        )
        return agent.start()

    figures: dict[str, Any] = {}
    try:
        keys = await backlog(redis, args.tasks)
        fleet = [start("bench-throughput") for _ in range(args.agents)]
        for agent in fleet:
            agent.wait_ready()
        figures.update(await throughput(redis, keys))
        figures.update(await steady(redis, args.rate, args.seconds))
        for agent in fleet:
            agent.stop()
        fleet = [start("bench-flood") for _ in range(args.agents)]
        for agent in fleet:
            agent.wait_ready()
        figures.update(await flood(redis, args.flood, args.flood_task_ms))
        for agent in fleet:
            agent.stop()
        fleet = [start("bench-crash") for _ in range(args.agents)]
        for agent in fleet:
            agent.wait_ready()
        figures.update(
            await crash(redis, args.tasks, fleet, lambda: start("bench-crash").wait_ready())
        )
    finally:
        for agent in fleet:
            agent.stop()
        await redis.aclose()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0, help="steady phase, tasks/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="steady phase length")
    parser.add_argument("--flood", type=int, default=2000)
    parser.add_argument("--flood-task-ms", type=float, default=5.0)
    parser.add_argument("--visibility", type=float, default=2.0, help="visibility timeout, s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swarmops-bench-agents-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir / "redis").start()
        try:
            figures = asyncio.run(measure(args, server, workdir / "agents"))
        finally:
            server.stop()
    report = {
        "agents": args.agents,
        **figures,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
