"""A Swarm of real agents: planner -> workers -> reviewer as agent processes on the
process node, around a RedisCluster of real redis-server processes
(`testbed/swarmbed.py`).

What the operator gives the agents is what makes them work here: each serves its pool's
queue `<swarm>.<pool>`, logs in to Redis with the password the operator mounted from the
cluster's Secret, and carries the swarm label the cluster's NetworkPolicy admits. Only
the Redis address is in the template (the test bed has no cluster DNS).

Here every submitted task is completed exactly once in effect, P0 tasks overtake a P3
flood, a worker agent SIGKILLed mid-task has its task run again and completed once (the
queue mechanics themselves are tests/integration/test_agent_runtime.py's), and deleting
the swarm stops the pools in reverse order while their agents drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from swarmops.agent import Priority, TaskQueue, connect, redis_config
from swarmops.agent.contract import DEFAULT_REDIS_PASSWORD_FILE
from swarmops.agent.queue import TaskResult
from swarmops.runtime import OperatorThread
from swarmops.testbed import redisbed, swarmbed
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.processes import wait_until

pytestmark = pytest.mark.e2e
logger = logging.getLogger(__name__)

SWARM = "crew"
REDIS = "coord"
TASKS = {"planner": 20, "workers": 120, "reviewer": 20}


def agent_pool(pool: str) -> str:
    return f"{SWARM}-{pool}"


def live_counts(testbed: TestBed, namespace: str) -> dict[str, tuple[int, bool]]:
    """Per pool: (live pods, Ready with pods). The pods are read before the pools: while a
    swarm starts, a pool not Ready after its dependents' pods were seen was not Ready when
    they were (see tests/e2e/test_swarm.py, `snapshot`)."""
    pods = {
        pool: len(swarmbed.pool_pods(testbed, namespace, agent_pool(pool)))
        for pool in swarmbed.POOLS
    }
    counts = {}
    for pool in swarmbed.POOLS:
        found = testbed.kubectl(
            "get", "agentpool", agent_pool(pool), "-n", namespace, "-o", "json", check=False
        )
        ready = False
        if found.returncode == 0:
            body = json.loads(found.stdout)
            status = body.get("status") or {}
            ready = (
                body["spec"]["replicas"] > 0
                and status.get("observedGeneration") == body["metadata"]["generation"]
                and status.get("readyReplicas") == body["spec"]["replicas"]
            )
        counts[pool] = (pods[pool], ready)
    return counts


async def run_tasks(url: str, password: str, pods: dict[str, set[str]]) -> dict[str, Any]:
    config = redis_config({"SWARMOPS_REDIS_URL": url, "SWARMOPS_REDIS_PASSWORD": password})
    assert config is not None
    redis = await connect(config)
    try:
        figures: dict[str, Any] = {}
        for pool, count in TASKS.items():
            queue = TaskQueue(redis, f"{SWARM}.{pool}")
            keys = await queue.submit_many(
                [({"value": i}, Priority(i % 4), None) for i in range(count)]
            )
            results = await queue.wait(keys, 120)
            stats = await queue.stats()
            figures[pool] = {
                "submitted": len(keys),
                "results": len(results),
                "completed": stats.counters.get("completed", 0),
                "ok": all(r.ok for r in results.values()),
                "squares": sorted(r.value["square"] for r in results.values()),
                "agents": {str(r.agent) for r in results.values()},
            }
            assert figures[pool]["agents"] <= pods[pool], (pool, figures[pool]["agents"])

        # P3 flood on the workers, then P0 tasks while it drains.
        queue = TaskQueue(redis, f"{SWARM}.workers")
        flood = await queue.submit_many(
            [({"value": 1, "sleep": 0.02}, Priority.P3, None) for _ in range(200)]
        )
        urgent: list[str] = []
        while len(urgent) < 15:
            if (await queue.stats()).backlog[Priority.P3] < 20:
                break
            urgent.append(await queue.submit({"value": 2}, Priority.P0))
            await asyncio.sleep(0.05)
        results = await queue.wait([*flood, *urgent], 180)
        figures["flood"] = {
            "lost": len(flood) + len(urgent) - len(results),
            "urgent": len(urgent),
            "last_p3_start": max(results[k].started_ms or 0 for k in flood),
            "p0_starts": [results[k].started_ms or 0 for k in urgent],
            "p0_waits_ms": sorted(
                (results[k].started_ms or 0) - (results[k].submitted_ms or 0) for k in urgent
            ),
        }
        return figures
    finally:
        await redis.aclose()


def task_holder(testbed: TestBed, namespace: str, key: str) -> str | None:
    """The worker pod whose agent is running task `key` now, if any (its /status)."""
    for pod in swarmbed.pool_pods(testbed, namespace, agent_pool("workers")):
        url = f"http://{pod['status'].get('podIP')}:8090/status"
        with (
            contextlib.suppress(OSError, ValueError),
            urllib.request.urlopen(url, timeout=2) as answer,
        ):
            if json.loads(answer.read()).get("currentTask") == key:
                return str(pod["metadata"]["name"])
    return None


async def kill_mid_task(
    testbed: TestBed, url: str, password: str, namespace: str
) -> tuple[str, TaskResult, int]:
    """One slow task on the workers' queue; SIGKILL the agent running it."""
    config = redis_config({"SWARMOPS_REDIS_URL": url, "SWARMOPS_REDIS_PASSWORD": password})
    assert config is not None
    redis = await connect(config)
    try:
        queue = TaskQueue(redis, f"{SWARM}.workers")
        key = await queue.submit({"value": 7, "sleep": 3}, Priority.P1)
        holder: str | None = None
        while holder is None:
            holder = await asyncio.to_thread(task_holder, testbed, namespace, key)
        swarmbed.kill_agent(holder)
        results = await queue.wait([key], 120)
        executions = await redis.hget(f"{queue.keys.tag}:executions", key)
        return holder, results[key], int(executions or 0)
    finally:
        await redis.aclose()


def test_a_swarm_of_real_agents_serves_its_queues_in_order(
    testbed: TestBed,
    namespace: str,
    operator: OperatorThread,
    operator_log: Callable[[], str],
) -> None:
    url = swarmbed.start_redis(testbed, namespace, REDIS)
    password = redisbed.password(testbed, namespace, f"{REDIS}-auth")
    manifest = swarmbed.swarm_manifest(
        SWARM, namespace, redis_cluster=REDIS, redis_url=url, workers=2
    )
    testbed.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

    # Start order, as every look sees it: a pool has pods only once its dependencies
    # have been Ready (wait_ready calls this before each look).
    violations: list[str] = []
    seen_ready: set[str] = set()

    def look() -> None:
        counts = live_counts(testbed, namespace)
        seen_ready.update(pool for pool, (_, ready) in counts.items() if ready)
        for pool, (pods, _) in counts.items():
            for dependency in swarmbed.DEPENDS[pool]:
                if pods and dependency not in seen_ready:
                    violations.append(f"{pool} had pods before {dependency} was Ready")

    body = swarmbed.wait_ready(testbed, namespace, SWARM, timeout=300, each_look=look)
    assert violations == []
    status = body["status"]
    assert status["redis"]["name"] == REDIS and status["redis"]["ready"] is True
    started = {p["name"]: p["startedAt"] for p in status["pools"]}
    assert started["planner"] <= started["workers"] <= started["reviewer"]

    pods: dict[str, set[str]] = {}
    for pool in swarmbed.POOLS:
        live = swarmbed.pool_pods(testbed, namespace, agent_pool(pool))
        pods[pool] = {p["metadata"]["name"] for p in live}
        for pod in live:
            assert pod["metadata"]["labels"]["swarmops.dev/swarm"] == SWARM
            env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
            assert env["SWARMOPS_QUEUE"]["value"] == f"{SWARM}.{pool}"
            assert env["SWARMOPS_REDIS_PASSWORD_FILE"]["value"] == DEFAULT_REDIS_PASSWORD_FILE
            (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "swarmops-redis"]
            assert volume["projected"]["sources"][0]["secret"]["name"] == f"{REDIS}-auth"
    assert len(pods["workers"]) == 2

    figures = asyncio.run(run_tasks(url, password, pods))
    logger.info("swarm task figures: %s", figures)
    for pool, count in TASKS.items():
        # Every task has its result, and was completed once in effect.
        assert figures[pool]["submitted"] == figures[pool]["results"] == count
        assert figures[pool]["completed"] == count
        assert figures[pool]["ok"]
        assert figures[pool]["squares"] == sorted(i * i for i in range(count))
    flood = figures["flood"]
    assert flood["lost"] == 0 and flood["urgent"] > 0
    # Each P0 task started before the flood's last P3 task did: it overtook the backlog.
    assert max(flood["p0_starts"]) <= flood["last_p3_start"]

    # A worker agent killed mid-task: once its lease lapses the task is taken over, by
    # the other worker or by the killed one's restarted container (same pod, same name,
    # which gives back what its previous run held).
    killed, result, executions = asyncio.run(kill_mid_task(testbed, url, password, namespace))
    logger.info("task of killed agent %s completed by %s", killed, result.agent)
    assert result.ok and result.value["square"] == 49
    assert result.deliveries == 2 and result.agent in pods["workers"]
    assert executions == 2  # ran twice (the witness), completed once (one result)

    # Deleting the swarm: reviewer, then workers, then planner; the agents drain.
    testbed.kubectl("delete", "swarm", SWARM, "-n", namespace, "--wait=false")
    stop_violations: list[str] = []

    def gone() -> bool:
        # Pools first, then pods: pods seen after a pool was at 0 were there then too.
        at_zero = set()
        for pool in swarmbed.POOLS:
            found = testbed.kubectl(
                "get",
                "agentpool",
                agent_pool(pool),
                "-n",
                namespace,
                "-o",
                "jsonpath={.spec.replicas}",
                check=False,
            )
            if found.returncode == 0 and found.stdout.strip() == "0":
                at_zero.add(pool)
        for pool in at_zero:
            for dependent, deps in swarmbed.DEPENDS.items():
                if pool in deps and swarmbed.pool_pods(testbed, namespace, agent_pool(dependent)):
                    stop_violations.append(f"{pool} at 0 while {dependent} had pods")
        return swarmbed.get_swarm(testbed, namespace, SWARM) is None

    wait_until(gone, timeout=180, interval=0.2, what="the swarm deleted")
    assert stop_violations == []
    # The RedisCluster was referenced, not owned: it stays.
    assert redisbed.get_cluster(testbed, namespace, REDIS)["metadata"]["name"] == REDIS
    assert "Traceback" not in operator_log()
