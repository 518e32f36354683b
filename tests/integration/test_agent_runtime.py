"""The agent runtime against a real redis-server, with agents as real processes.

The queue's primitives are checked in-process (priority order, idempotency, leases,
reclaim, dead letters); then `python -m swarmops agent` processes, started as the
process node starts agent pods, run a deterministic workload: every task completed
exactly once in effect, an agent killed mid-task (SIGKILL) loses nothing and doubles
nothing, P0 is served before a P3 flood, SIGTERM drains, and a Redis Cluster with AUTH
(real redis-server processes formed by the operator's own Redis loop) works the same.
No timing assertions: latencies are logged, orderings asserted.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest

from swarmops.agent import Priority, TaskQueue, TaskResult, alive_agents, connect, redis_config
from swarmops.agent.config import load_config
from swarmops.agent.contract import AgentEndpoint
from swarmops.agent.examples import work
from swarmops.agent.keys import GROUP
from swarmops.agent.redisconn import RedisClient
from swarmops.agent.worker import Agent
from swarmops.handlers.agentnotify import agent_status, request_drain
from swarmops.testbed.agentbed import AgentProcess, RedisServer, redis_server
from swarmops.testbed.localredis import LocalCluster, Loop, local_cluster_body
from swarmops.testbed.processes import free_port, wait_until

logger = logging.getLogger(__name__)
T = TypeVar("T")
WORK = "swarmops.agent.examples:work"


def run(scenario: Awaitable[T], timeout: float = 180) -> T:
    return asyncio.run(asyncio.wait_for(scenario, timeout=timeout))  # type: ignore[arg-type]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as running:
        yield running


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def start(name: str, env: dict[str, str], *args: str, handler: str = WORK) -> AgentProcess:
        agent = AgentProcess(name, tmp_path / "agents", handler=handler, args=args, env=env)
        started.append(agent.start())
        return agent

    yield start
    for agent in started:
        agent.stop()


async def client_for(server: RedisServer) -> RedisClient:
    config = redis_config(server.env())
    assert config is not None
    return await connect(config)


async def executions(redis: RedisClient, queue: str) -> dict[str, int]:
    raw = await redis.hgetall(f"swarmops:{{{queue}}}:executions")
    return {str(k): int(v) for k, v in raw.items()}


async def started(redis: RedisClient, queue: str, key: str, seconds: float = 30) -> None:
    """Until the sample handler has begun running `key` (its witness counter moved)."""
    deadline = time.monotonic() + seconds
    while (await executions(redis, queue)).get(key) != 1:
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {key} never started")
        await asyncio.sleep(0.02)


# --- the queue's primitives, in-process ------------------------------------------------------


def test_tasks_are_taken_most_urgent_first(server: RedisServer) -> None:
    async def scenario() -> None:
        redis = await client_for(server)
        queue = TaskQueue(redis, "order")
        for index in range(5):
            await queue.submit({"i": index}, Priority.P3, f"p3-{index}")
        await queue.submit({}, Priority.P1, "p1")
        await queue.submit({}, Priority.P0, "p0")
        taken = []
        while (delivery := await queue.take("c1", list(Priority))) is not None:
            taken.append(delivery.key)
        assert taken == ["p0", "p1", "p3-0", "p3-1", "p3-2", "p3-3", "p3-4"]
        # Holding a P1, only P0 is worth a look.
        await queue.submit({}, Priority.P2, "p2")
        assert await queue.take("c1", [Priority.P0]) is None
        await redis.aclose()

    run(scenario())


def test_the_first_completion_is_the_only_effect(server: RedisServer) -> None:
    async def scenario() -> None:
        redis = await client_for(server)
        queue = TaskQueue(redis, "idem")
        await queue.submit({"n": 1}, Priority.P2, "job-1")
        await queue.submit({"n": 1}, Priority.P2, "job-1")  # submitted twice before done
        first = await queue.take("a", list(Priority))
        second = await queue.take("b", list(Priority))
        assert first is not None and second is not None
        assert await queue.complete(first, TaskResult("job-1", True, value="from a"))
        assert not await queue.complete(second, TaskResult("job-1", True, value="from b"))
        result = await queue.result("job-1")
        assert result is not None and result.value == "from a"
        # Once done, submitting the key again queues nothing.
        await queue.submit({"n": 1}, Priority.P0, "job-1")
        stats = await queue.stats()
        assert sum(stats.backlog.values()) == 0 and sum(stats.pending.values()) == 0
        assert stats.counters == {"submitted": 2, "completed": 1, "duplicates": 1}
        await redis.aclose()

    run(scenario())


def test_leases_renewals_release_and_reclaim(server: RedisServer) -> None:
    async def scenario() -> None:
        redis = await client_for(server)
        queue = TaskQueue(redis, "lease")
        await queue.submit("x", Priority.P1, "k")
        taken = await queue.take("dead-agent", list(Priority))
        assert taken is not None
        held = await queue.start(taken)
        assert held is not None and held.deliveries == 1
        await asyncio.sleep(0.3)
        assert await queue.renew("dead-agent", held)  # renewal resets the idle time
        assert await queue.reclaim("other", Priority.P1, 0.25) == []
        await asyncio.sleep(0.3)  # no renewal: the lease runs out
        reclaimed = await queue.reclaim("other", Priority.P1, 0.25)
        assert [d.key for d in reclaimed] == ["k"]
        # The old holder's late renewal must not take the task back.
        assert not await queue.renew("dead-agent", held)
        # Released unstarted: reclaimable at once, however long the visibility timeout,
        # and no delivery spent (Redis's own counter, raised by XAUTOCLAIM, is not it).
        assert await queue.release("other", reclaimed[0], 30.0)
        again = await queue.reclaim("third", Priority.P1, 30.0)
        second = await queue.start(again[0])
        assert second is not None and second.deliveries == 2
        # Completed: its attempts are forgotten with it.
        assert await queue.complete(second, TaskResult("k", True))
        assert await redis.hgetall(queue.keys.attempts) == {}
        assert await queue.start(again[0]) is None  # done: nothing more to run
        await redis.aclose()

    run(scenario())


def test_a_task_that_keeps_killing_agents_is_dead_lettered(
    server: RedisServer, agents: Callable[..., AgentProcess]
) -> None:
    async def scenario() -> None:
        redis = await client_for(server)
        queue = TaskQueue(redis, "poison")
        await queue.submit({"value": 1}, Priority.P2, "poison-1")
        # Three consumers took it, started its handler (a delivery each) and died, never
        # acknowledging.
        for consumer in ("gone-1", "gone-2", "gone-3"):
            taken = await queue.take(consumer, list(Priority))
            if taken is None:
                [taken] = await queue.reclaim(consumer, Priority.P2, 0)
            assert await queue.start(taken) is not None
        await redis.aclose()

    run(scenario())
    env = {**server.env(), "SWARMOPS_QUEUE": "poison"}
    agents("survivor", env, "--max-deliveries", "2", "--visibility-timeout", "0.3").wait_ready()

    async def check() -> TaskResult:
        redis = await client_for(server)
        queue = TaskQueue(redis, "poison")
        found = await queue.wait(["poison-1"], 30)
        dead = await redis.xrange(queue.keys.dead)
        assert len(dead) == 1 and dead[0][1]["key"] == "poison-1"
        assert await executions(redis, "poison") == {}  # never run again
        await redis.aclose()
        return found["poison-1"]

    result = run(check())
    assert not result.ok and result.error_type == "DeliveredTooOften"


def test_a_task_given_back_unstarted_spends_no_delivery(server: RedisServer) -> None:
    """The cause of tasks dead-lettered without having run (bench/swarm.py, 5 of 2,000):
    an agent whose look for work reclaims a lapsed P3 task and then finds a fresh P0 one
    runs the P0 and gives the P3 back, reclaimable at once. Each take-over (XAUTOCLAIM)
    raises Redis's delivery counter, so a task bounced between agents under a P3 backlog
    with P0 arrivals passed maxDeliveries unstarted. Deliveries count handler starts.

    In-process agents, one at a time: an agent's first look always scans for lapsed
    leases, and the long visibility timeout keeps it from scanning again while it runs."""
    limit = 2

    def agent(name: str) -> Agent:
        config = load_config(
            {
                "handler": WORK,
                "name": name,
                "port": 0,
                "bind_address": "127.0.0.1",
                "max_deliveries": limit,
                "visibility_timeout": 600,
            },
            {**server.env(), "SWARMOPS_QUEUE": "bounce"},
        )
        return Agent(config, handler=work)

    async def serve_until(worker: Agent, queue: TaskQueue, key: str) -> TaskResult:
        running = asyncio.ensure_future(worker.run())
        try:
            return (await queue.wait([key], 60))[key]
        finally:
            worker.stop()
            assert await running == 0

    async def scenario() -> None:
        redis = await client_for(server)
        queue = TaskQueue(redis, "bounce")
        await queue.submit({"value": 3}, Priority.P3, "bounced")
        # Its first holder gave it back unstarted (as a drain does): reclaimable now.
        first = await queue.take("first-holder", list(Priority))
        assert first is not None and await queue.release("first-holder", first, 600)
        for round_ in range(limit + 2):
            key = f"urgent-{round_}"
            await queue.submit({"value": round_}, Priority.P0, key)
            urgent = await serve_until(agent(f"busy-{round_}"), queue, key)
            assert urgent.ok and urgent.deliveries == 1
            assert await queue.result("bounced") is None, "dead-lettered without a run"
        [pending] = await redis.xpending_range(queue.keys.stream(Priority.P3), GROUP, "-", "+", 1)
        assert int(pending["times_delivered"]) > limit  # Redis's count: reads, not runs
        assert "bounced" not in await executions(redis, "bounce")
        result = await serve_until(agent("idle"), queue, "bounced")
        assert result.ok and result.value["square"] == 9
        assert result.deliveries == 1 and result.agent == "idle"
        assert (await executions(redis, "bounce"))["bounced"] == 1
        assert await redis.xlen(queue.keys.dead) == 0
        await redis.aclose()

    run(scenario())


# --- agents as processes ---------------------------------------------------------------------


def test_every_task_completes_exactly_once_across_agents(
    server: RedisServer, agents: Callable[..., AgentProcess]
) -> None:
    env = {**server.env(), "SWARMOPS_QUEUE": "work"}
    fleet = [agents(f"agent-{i}", env) for i in range(3)]
    for agent in fleet:
        agent.wait_ready()

    async def scenario() -> None:
        redis = await client_for(server)
        queue = TaskQueue(redis, "work")
        keys = [f"task-{i}" for i in range(150)]
        for index, key in enumerate(keys):
            await queue.submit({"value": index}, Priority(index % 4), key)
        for index, key in enumerate(keys[:20]):  # resubmitted: no second effect
            await queue.submit({"value": index}, Priority.P0, key)
        results = await queue.wait(keys, 60)
        assert len(results) == len(keys)
        for index, key in enumerate(keys):
            assert results[key].ok and results[key].value["square"] == index * index
        # A resubmitted key still queued when its first copy completed is acknowledged
        # as a duplicate, without effect, possibly after the results are all in.
        for _ in range(600):
            stats = await queue.stats()
            if not sum(stats.backlog.values()):
                break
            await asyncio.sleep(0.05)
        assert sum(stats.backlog.values()) == 0
        assert stats.counters["completed"] == len(keys)
        extra = stats.counters["submitted"] - len(keys)
        assert stats.counters.get("duplicates", 0) == extra
        served = {r.agent for r in results.values()}
        logger.info("served by %s; counters %s", sorted(served), stats.counters)
        alive = await alive_agents(redis, "work")
        assert set(alive) == {a.name for a in fleet}
        assert {beat["state"] for beat in alive.values()} <= {"idle", "busy"}
        await redis.aclose()

    run(scenario())
    metrics = fleet[0].metrics()
    assert "swarmops_agent_tasks_total" in metrics
    assert "swarmops_agent_task_duration_seconds_bucket" in metrics


def test_a_killed_agents_task_is_reclaimed_and_done_once(
    server: RedisServer, agents: Callable[..., AgentProcess]
) -> None:
    env = {**server.env(), "SWARMOPS_QUEUE": "crash"}
    options = ("--visibility-timeout", "1")
    victim = agents("victim", env, *options).wait_ready()

    async def submit_and_wait_for_start() -> None:
        redis = await client_for(server)
        queue = TaskQueue(redis, "crash")
        await queue.submit({"value": 7, "sleep": 3}, Priority.P1, "long-task")
        for index in range(10):
            await queue.submit({"value": index}, Priority.P2, f"short-{index}")
        await started(redis, "crash", "long-task")
        await redis.aclose()

    run(submit_and_wait_for_start())
    assert victim.status()["currentTask"] == "long-task"
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    rescuers = [agents(f"rescuer-{i}", env, *options) for i in range(2)]
    for rescuer in rescuers:
        rescuer.wait_ready()

    async def check() -> None:
        redis = await client_for(server)
        queue = TaskQueue(redis, "crash")
        keys = ["long-task", *[f"short-{i}" for i in range(10)]]
        results = await queue.wait(keys, 60)
        assert set(results) == set(keys)
        assert results["long-task"].value["square"] == 49
        assert results["long-task"].agent != "victim"
        assert results["long-task"].deliveries == 2
        runs = await executions(redis, "crash")
        assert runs["long-task"] == 2  # run twice: once killed, once to the end ...
        stats = await queue.stats()
        assert stats.counters["completed"] == len(keys)  # ... and one effect each
        assert sum(stats.pending.values()) == 0
        await redis.aclose()

    run(check())
    assert any("reclaimed task long-task" in r.log_tail(200) for r in rescuers)


def test_p0_is_served_before_a_p3_flood(
    server: RedisServer, agents: Callable[..., AgentProcess]
) -> None:
    env = {**server.env(), "SWARMOPS_QUEUE": "flood"}
    fleet = [agents(f"flood-{i}", env) for i in range(2)]
    for agent in fleet:
        agent.wait_ready()

    async def scenario() -> None:
        redis = await client_for(server)
        queue = TaskQueue(redis, "flood")
        flood = [f"p3-{i}" for i in range(400)]
        for key in flood:
            await queue.submit({"value": 1, "sleep": 0.01}, Priority.P3, key)
        urgent = []
        for round_ in range(5):
            await asyncio.sleep(0.15)
            key = f"p0-{round_}"
            await queue.submit({"value": 2}, Priority.P0, key)
            urgent.append(key)
        results = await queue.wait([*urgent, *flood], 120)
        assert len(results) == len(urgent) + len(flood)
        latencies = []
        for key in urgent:
            p0 = results[key]
            assert p0.submitted_ms is not None and p0.started_ms is not None
            # P3 tasks started while this P0 waited: at most one per agent, those whose
            # take ran just before the P0 was queued.
            overtaking = [
                r
                for r in results.values()
                if r.priority == "P3" and p0.submitted_ms < (r.started_ms or 0) < p0.started_ms
            ]
            assert len(overtaking) <= len(fleet), (key, [r.key for r in overtaking])
            latencies.append(p0.started_ms - p0.submitted_ms)
        # And the flood was real: P3 tasks were still waiting when the last P0 finished.
        last = max(results[key].finished_ms or 0 for key in urgent)
        assert any((results[k].started_ms or 0) > last for k in flood)
        logger.info("P0 wait under a P3 flood: %s ms", latencies)
        print(f"P0 wait under a 400-task P3 flood (ms): {latencies}")
        await redis.aclose()

    run(scenario())


def test_sigterm_finishes_the_current_task_then_exits(
    server: RedisServer, agents: Callable[..., AgentProcess]
) -> None:
    env = {**server.env(), "SWARMOPS_QUEUE": "drain"}
    agent = agents("drainer", env).wait_ready()

    async def start_task() -> None:
        redis = await client_for(server)
        queue = TaskQueue(redis, "drain")
        await queue.submit({"value": 3, "sleep": 2}, Priority.P1, "in-hand")
        await queue.submit({"value": 4}, Priority.P0, "queued-after")
        await redis.aclose()

    async def wait_busy() -> None:
        redis = await client_for(server)
        await started(redis, "drain", "in-hand")
        await redis.aclose()

    run(start_task())
    run(wait_busy())
    assert agent.status()["state"] in ("busy", "idle")
    agent.signal(signal.SIGTERM)
    wait_until(
        lambda: agent.status()["state"] == "draining", timeout=10, what="draining", interval=0.02
    )
    assert agent.http_status("/readyz") == 503  # no new work routed to it
    assert agent.wait(30) == 0

    async def check() -> None:
        redis = await client_for(server)
        queue = TaskQueue(redis, "drain")
        done = await queue.result("in-hand")
        assert done is not None and done.ok and done.agent == "drainer"
        assert await queue.result("queued-after") is None  # not taken while draining
        stats = await queue.stats()
        assert stats.backlog[Priority.P0] == 1 and sum(stats.pending.values()) == 0
        assert await alive_agents(redis, "drain") == {}  # it left the heartbeat set
        await redis.aclose()

    run(check())


def test_a_drain_request_finishes_the_task_in_hand_and_takes_no_other(
    server: RedisServer, agents: Callable[..., AgentProcess]
) -> None:
    """The operator's side (`request_drain`, what a rollout or a stopping swarm sends)
    against a real agent process: busy → draining, not idle; the task in hand completes;
    then idle, still running and answering, taking nothing more; a request naming another
    pod (an address reused) is refused and drains nothing."""
    env = {**server.env(), "SWARMOPS_QUEUE": "asked"}
    agent = agents("asked", env).wait_ready()
    endpoint = AgentEndpoint(
        pod="asked", namespace="team", pod_uid="", ip=agent.ip, port=agent.port
    )
    stranger = AgentEndpoint(
        pod="someone-else", namespace="team", pod_uid="", ip=agent.ip, port=agent.port
    )

    async def scenario() -> None:
        redis = await client_for(server)
        queue = TaskQueue(redis, "asked")
        await queue.submit({"value": 3, "sleep": 2}, Priority.P1, "in-hand")
        await started(redis, "asked", "in-hand")
        async with aiohttp.ClientSession() as session:
            assert await request_drain(session, stranger) is None  # 409: not that pod
            assert (await agent_status(session, endpoint) or {}).get("state") == "busy"
            answer = await request_drain(session, endpoint)
            assert answer is not None
            assert (answer["state"], answer["idle"]) == ("draining", False)
            await queue.submit({"value": 4}, Priority.P0, "after-drain")
            for _ in range(600):  # asked again, as the pool controller does at every poll
                answer = await request_drain(session, endpoint) or {}
                if answer.get("idle"):
                    break
                await asyncio.sleep(0.05)
            assert answer["state"] == "stopped" and answer["tasksDone"] == 1
        done = await queue.result("in-hand")
        assert done is not None and done.ok and done.agent == "asked"
        await asyncio.sleep(1)  # room for a wrongly taken task to show
        assert await queue.result("after-drain") is None
        assert (await queue.stats()).backlog[Priority.P0] == 1
        await redis.aclose()

    run(scenario())
    assert agent.running()  # drained, not exited: the pod's deletion ends it
    assert agent.http_status("/readyz") == 503
    agent.signal(signal.SIGTERM)
    assert agent.wait(30) == 0


def test_a_task_longer_than_the_drain_is_given_back_for_another_agent(
    server: RedisServer, agents: Callable[..., AgentProcess]
) -> None:
    env = {**server.env(), "SWARMOPS_QUEUE": "longdrain"}
    agent = agents("short-grace", env, "--drain-timeout", "0.5").wait_ready()

    async def start() -> None:
        redis = await client_for(server)
        queue = TaskQueue(redis, "longdrain")
        await queue.submit({"value": 5, "sleep": 4}, Priority.P2, "too-long")
        await started(redis, "longdrain", "too-long")
        await redis.aclose()

    run(start())
    agent.signal(signal.SIGTERM)
    assert agent.wait(30) == 0
    agents("next", env).wait_ready()

    async def check() -> None:
        redis = await client_for(server)
        queue = TaskQueue(redis, "longdrain")
        results = await queue.wait(["too-long"], 30)
        assert results["too-long"].agent == "next"
        await redis.aclose()

    run(check())
    assert "given back" in agent.log_tail()


def test_a_restarted_container_gives_back_what_it_held_at_once(
    server: RedisServer, agents: Callable[..., AgentProcess]
) -> None:
    """The kubelet restarts a crashed container in the same pod: same consumer name. Its
    old run's task is reclaimed at once, not after the (here long) visibility timeout."""
    env = {**server.env(), "SWARMOPS_QUEUE": "restart"}
    first = agents("same-pod", env, "--visibility-timeout", "600").wait_ready()

    async def start() -> None:
        redis = await client_for(server)
        await TaskQueue(redis, "restart").submit({"value": 6, "sleep": 2}, Priority.P1, "held")
        await started(redis, "restart", "held")
        await redis.aclose()

    run(start())
    first.signal(signal.SIGKILL)
    first.wait(10)
    agents("same-pod", env, "--visibility-timeout", "600").wait_ready()

    async def check() -> None:
        redis = await client_for(server)
        results = await TaskQueue(redis, "restart").wait(["held"], 60)
        assert results["held"].ok and results["held"].deliveries == 2
        await redis.aclose()

    run(check())


def test_retry_gives_the_task_back_for_another_delivery(
    server: RedisServer, agents: Callable[..., AgentProcess]
) -> None:
    env = {**server.env(), "SWARMOPS_QUEUE": "retry"}
    agent = agents("retrier", env, "--visibility-timeout", "1").wait_ready()

    async def scenario() -> None:
        redis = await client_for(server)
        queue = TaskQueue(redis, "retry")
        await queue.submit({"value": 3, "retry_until": 3}, Priority.P2, "flaky")
        results = await queue.wait(["flaky"], 60)
        assert results["flaky"].ok and results["flaky"].deliveries == 3
        assert (await executions(redis, "retry"))["flaky"] == 3
        await redis.aclose()

    run(scenario())
    retried = 'swarmops_agent_tasks_total{outcome="retried",priority="P2",queue="retry"} 2.0'
    assert retried in agent.metrics()


def test_handler_errors_are_results_and_counted(
    server: RedisServer, agents: Callable[..., AgentProcess]
) -> None:
    env = {**server.env(), "SWARMOPS_QUEUE": "errors"}
    agent = agents("failing", env).wait_ready()

    async def scenario() -> TaskResult:
        redis = await client_for(server)
        queue = TaskQueue(redis, "errors")
        await queue.submit({"fail": True}, Priority.P2, "bad")
        found = await queue.wait(["bad"], 30)
        await redis.aclose()
        return found["bad"]

    result = run(scenario())
    assert not result.ok and result.error_type == "ValueError"
    assert 'swarmops_agent_task_errors_total{queue="errors",type="ValueError"} 1.0' in (
        agent.metrics()
    )


def test_an_agent_waits_for_redis_before_it_is_ready(
    tmp_path: Path, agents: Callable[..., AgentProcess]
) -> None:
    late = RedisServer(tmp_path / "late", password="late-secret", port=free_port())
    agent = agents("patient", {**late.env(), "SWARMOPS_QUEUE": "late"})
    wait_until(lambda: agent.http_status("/healthz") == 200, timeout=30, what="liveness")
    assert agent.http_status("/readyz") == 503  # alive, not ready: no queue to serve
    late.start()
    try:
        agent.wait_ready()

        async def scenario() -> None:
            redis = await client_for(late)
            queue = TaskQueue(redis, "late")
            results = await queue.wait([await queue.submit({"value": 9})], 30)
            assert [r.value["square"] for r in results.values()] == [81]
            await redis.aclose()

        run(scenario())
    finally:
        late.stop()


# --- a Redis Cluster with AUTH ---------------------------------------------------------------


def test_agents_work_against_a_redis_cluster_with_auth(
    tmp_path: Path, agents: Callable[..., AgentProcess]
) -> None:
    local = LocalCluster(
        tmp_path / "cluster", local_cluster_body("agents", shards=3, replicas=0, persistence=False)
    )
    try:
        local.start_all()

        async def form() -> None:
            loop = Loop(local)
            try:
                await loop.until(lambda plan: plan.step == "ready", within=90)
            finally:
                await loop.close()

        run(form())
        seed = next(pod.ip for pod in local.pods.values() if pod.ip)
        env = {
            "SWARMOPS_REDIS_URL": f"redis://{seed}:6379",
            "SWARMOPS_REDIS_PASSWORD": local.password or "",
        }
        names = ["alpha", "beta", "gamma"]  # three queues, spread over the shards
        fleet = [agents(f"c-{name}", {**env, "SWARMOPS_QUEUE": name}) for name in names]
        for agent in fleet:
            agent.wait_ready()

        async def scenario() -> None:
            config = redis_config(env)
            assert config is not None
            redis = await connect(config)
            assert type(redis).__name__ == "RedisCluster"
            for name in names:
                queue = TaskQueue(redis, name)
                keys = [await queue.submit({"value": i}, Priority(i % 4)) for i in range(30)]
                results = await queue.wait(keys, 60)
                assert len(results) == len(keys) and all(r.ok for r in results.values())
                assert {r.agent for r in results.values()} == {f"c-{name}"}
            await redis.aclose()

        run(scenario())
        assert "cluster=None" in fleet[0].log_tail(200)  # discovered, not configured
    finally:
        local.close()


def test_heartbeats_show_who_is_alive(
    server: RedisServer, agents: Callable[..., AgentProcess]
) -> None:
    env = {**server.env(), "SWARMOPS_QUEUE": "beats", "SWARMOPS_HEARTBEAT_SECONDS": "0.2"}
    keep = agents("keeps-beating", env).wait_ready()
    dies = agents("gets-killed", env).wait_ready()

    async def alive() -> set[str]:
        redis = await client_for(server)
        try:
            return set(await alive_agents(redis, "beats"))
        finally:
            await redis.aclose()

    wait_until(lambda: run(alive()) == {keep.name, dies.name}, timeout=10, what="both heartbeats")
    dies.signal(signal.SIGKILL)
    started = time.monotonic()
    wait_until(lambda: run(alive()) == {keep.name}, timeout=10, what="the dead one to expire")
    logger.info("a killed agent dropped out after %.2f s", time.monotonic() - started)
