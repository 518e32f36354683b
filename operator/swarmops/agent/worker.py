"""The agent process: HTTP endpoints, warm-up, heartbeat, the hand-off, the task loop, drain.

`Agent.run()` is what `swarmops agent` runs. The decisions (which priority next, what to
do with reclaimed tasks, the drain state machine) are pure functions in scheduling.py;
this module performs them:

* an aiohttp server on the pod IP: /healthz (liveness), /readyz (readiness), /status
  (idle or busy, for drain-aware rollouts), /metrics, and POST /v1/assignment (the
  operator's hand-off: what this pod is for, and its claim);
* the warm-up hook, run before the agent reports Ready;
* a heartbeat hash in Redis with a TTL, and a sorted set of who is alive;
* the task loop: one task at a time, with its lease renewed while the handler runs;
* SIGTERM: take nothing new, finish the current task within the drain timeout,
  acknowledge it, exit 0. A task that cannot finish in time is given back, to be
  reclaimed by another agent at once.

Handlers may be `async def` (run on the loop) or plain functions (run in a worker
thread, so a handler that blocks never stalls the probes, the lease renewals or the
heartbeat).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime
import importlib
import inspect
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp.web
from redis.exceptions import RedisError

from swarmops.agent import contract
from swarmops.agent.config import AgentConfig
from swarmops.agent.contract import Assignment, ClaimInfo, PodRole
from swarmops.agent.keys import QueueKeys
from swarmops.agent.metrics import CONTENT_TYPE, AgentMetrics
from swarmops.agent.queue import Delivery, TaskQueue, TaskResult, now_ms
from swarmops.agent.redisconn import RedisClient, connect
from swarmops.agent.scheduling import (
    AgentEvent,
    AgentState,
    Priority,
    delivered_too_often,
    is_idle,
    is_ready,
    most_urgent,
    priorities_to_poll,
    reclaim_due,
    reclaim_interval,
    renew_interval,
    takes_tasks,
    transition,
)

logger = logging.getLogger("swarmops.agent")

REDIS_RETRY_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.0)
COMPLETE_ATTEMPTS = 5


class Retry(Exception):
    """Raise from a handler to have the task run again (by any agent) after `after`
    seconds, without recording a result. It counts as a delivery (the handler ran):
    after the queue's max deliveries the task is dead-lettered."""

    def __init__(self, reason: str = "", after: float = 0.0) -> None:
        super().__init__(reason)
        self.after = max(0.0, after)


@dataclass(frozen=True)
class Task:
    """What a handler gets: the task and where it runs."""

    key: str  # the idempotency key: use it to make effects exactly-once
    payload: Any
    priority: Priority
    queue: str
    deliveries: int  # 1 the first time a handler runs it; more after a lost agent or a Retry
    submitted_ms: int
    agent: str
    claim: ClaimInfo | None
    redis: RedisClient | None = field(default=None, repr=False)

    @property
    def queue_keys(self) -> QueueKeys:
        return QueueKeys(self.queue)


Hook = Callable[..., Any]


def load_callable(target: str) -> Hook:
    """`package.module:function` (or `module:object.method`)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{target!r}: expected module:function")
    value: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        value = getattr(value, part)
    if not callable(value):
        raise TypeError(f"{target} is not callable")
    return value  # type: ignore[no-any-return]


class Agent:
    """One agent process. Construct, then `await run()`; `stop()` is SIGTERM."""

    def __init__(
        self,
        config: AgentConfig,
        handler: Hook,
        *,
        warmup: Hook | None = None,
        on_claim: Hook | None = None,
        redis_factory: Callable[..., Awaitable[RedisClient]] = connect,
    ) -> None:
        self.config = config
        self.metrics = AgentMetrics()
        self._handler = handler
        self._warmup = warmup
        self._on_claim = on_claim
        self._redis_factory = redis_factory
        self.redis: RedisClient | None = None
        self.state = AgentState.STARTING
        self.metrics.set_state(self.state)
        self.role = config.role
        self.claim: ClaimInfo | None = None
        self.claim_name = config.claim  # known from the pod's label before any hand-off
        self.claim_received_at: datetime.datetime | None = None
        self.tasks_done = 0
        self.current: Delivery | None = None
        self.port: int | None = None  # the bound HTTP port
        self.started_at = datetime.datetime.now(datetime.UTC)
        self.abandoned_thread = False  # a sync handler outlived the drain: exit hard
        self._assignment_key: tuple[str, str] | None = None
        self._queues: dict[str, TaskQueue] = {}
        self._buffer: dict[str, list[Delivery]] = {}  # queue -> delivered, not started
        self._last_reclaim: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._deadline = asyncio.Event()
        self._stopping = False
        self._failure: BaseException | None = None
        self._runner: aiohttp.web.AppRunner | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="handler"
        )

    # --- lifecycle --------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            # Off the main thread (a worker embedded in a test or another program) signal
            # handlers cannot be installed; the embedder stops the worker with stop().
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self.stop)
        try:
            await self._serve_http()
            if self.config.redis is not None:
                await self._connect()
            if not self._stopping:
                await self._warm_up()
            if self.redis is not None:
                self._spawn(self._heartbeat_loop())
                await self._give_back_own_pending()
            await self._work()
        except Exception as error:
            self._failure = error
            logger.exception("agent %s failed", self.config.name)
            return 1
        finally:
            await self._shutdown()
        return 0

    def stop(self) -> None:
        """SIGTERM: take no new task; finish the current one within the drain timeout."""
        if self._stopping:
            return
        self._stopping = True
        logger.info(
            "agent %s: stopping (%s); drain timeout %.0f s",
            self.config.name,
            self.state,
            self.config.drain_timeout,
        )
        self._event(AgentEvent.TERM)
        self._wake.set()
        loop = asyncio.get_running_loop()
        loop.call_later(self.config.drain_timeout, self._deadline.set)

    def drain(self) -> None:
        """The operator's drain request (a rollout or a swarm removing this pod): take no
        new task and finish the current one, but keep running and answering /status, so
        the operator sees `idle` and deletes the pod; its SIGTERM then ends the process.
        Unlike stop() there is no deadline here: the operator holds the pod's."""
        if self._stopping or self.state in (AgentState.DRAINING, AgentState.STOPPED):
            return
        logger.info("agent %s: draining on request (%s)", self.config.name, self.state)
        self._event(AgentEvent.DRAIN)
        self._wake.set()

    def _event(self, event: AgentEvent) -> None:
        before = self.state
        self.state = transition(self.state, event)
        if self.state is not before:
            self.metrics.set_state(self.state)
            logger.debug("agent %s: %s -> %s", self.config.name, before, self.state)

    async def _shutdown(self) -> None:
        self.state = AgentState.STOPPED
        self.metrics.set_state(self.state)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._leave()
            with contextlib.suppress(RedisError, OSError):
                await self.redis.aclose()
        if self._runner is not None:
            await self._runner.cleanup()
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _connect(self) -> None:
        assert self.config.redis is not None
        delays = iter(REDIS_RETRY_SECONDS)
        while not self._stopping:
            client: RedisClient | None = None
            try:
                client = await self._redis_factory(self.config.redis)
                await client.ping()
                self.redis = client
                logger.info("agent %s: connected to %r", self.config.name, self.config.redis)
                return
            except (RedisError, OSError) as error:
                if client is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await client.aclose()
                self.metrics.redis_errors.labels("connect").inc()
                delay = next(delays, REDIS_RETRY_SECONDS[-1])
                logger.warning("agent %s: Redis not reachable (%s)", self.config.name, error)
                await self._sleep(delay)

    async def _warm_up(self) -> None:
        started = time.perf_counter()
        if self._warmup is not None:
            logger.info("agent %s: warming up", self.config.name)
            await self._call(self._warmup)
        self.metrics.warmup_seconds.set(time.perf_counter() - started)
        self._event(AgentEvent.WARMED)
        logger.info(
            "agent %s: ready in %.2f s as %s, queue %s",
            self.config.name,
            time.perf_counter() - started,
            self.role,
            self.serving_queue or "(none)",
        )

    async def _call(self, hook: Hook, *args: Any) -> Any:
        if inspect.iscoroutinefunction(hook):
            return await hook(*args)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._threads, hook, *args)
        if inspect.isawaitable(result):
            return await result
        return result

    # --- what the agent serves --------------------------------------------------------------

    @property
    def serving_queue(self) -> str | None:
        """Warm agents serve nothing (a claim must find them idle); active ones their
        pool's queue; a claimed one its claim's queue."""
        if self.redis is None and self.config.redis is None:
            return None
        if self.role is PodRole.ACTIVE:
            return self.config.queue
        if self.role is PodRole.CLAIMED:
            name = self.claim.name if self.claim is not None else self.claim_name
            return contract.claim_queue(name) if name else None
        return None

    def queue(self, name: str) -> TaskQueue:
        queue = self._queues.get(name)
        if queue is None:
            assert self.redis is not None
            queue = self._queues[name] = TaskQueue(
                self.redis, name, result_ttl=self.config.result_ttl
            )
        return queue

    def assign(self, assignment: Assignment) -> bool:
        """Apply the operator's hand-off; True when it changed anything."""
        if assignment.key == self._assignment_key:
            self.metrics.assignments.labels(str(assignment.role), "false").inc()
            return False
        received = datetime.datetime.now(datetime.UTC)
        self._assignment_key = assignment.key
        self.role = assignment.role
        self.metrics.assignments.labels(str(assignment.role), "true").inc()
        if assignment.claim is not None:
            claim = assignment.claim
            self.claim = claim
            self.claim_name = claim.name
            self.claim_received_at = received
            if claim.bound_at is not None:
                after = (received - claim.bound_at).total_seconds()
                self.metrics.handoff_seconds.observe(max(after, 0.0))
                logger.info(
                    "agent %s: claim %s/%s received %.1f ms after it was bound (parameters: %s)",
                    self.config.name,
                    claim.namespace,
                    claim.name,
                    after * 1000,
                    sorted(claim.parameters),
                )
            if self._on_claim is not None:
                self._spawn(self._run_on_claim(claim))
        else:
            logger.info("agent %s: now %s", self.config.name, assignment.role)
        self._wake.set()
        return True

    async def _run_on_claim(self, claim: ClaimInfo) -> None:
        assert self._on_claim is not None
        try:
            await self._call(self._on_claim, claim)
        except Exception:
            logger.exception("agent %s: the on-claim hook failed", self.config.name)

    # --- the task loop ----------------------------------------------------------------------

    async def _work(self) -> None:
        errors = iter(REDIS_RETRY_SECONDS)
        while not self._stopping:
            name = self.serving_queue
            if name is None or self.redis is None or not takes_tasks(self.state):
                await self._give_back_buffered()  # drained: held tasks are others' now
                self._wake.clear()
                await self._wait_wake(None)
                continue
            try:
                delivery = await self._next(self.queue(name))
            except (RedisError, OSError) as error:
                self.metrics.redis_errors.labels("take").inc()
                delay = next(errors, REDIS_RETRY_SECONDS[-1])
                logger.warning("agent %s: reading the queue failed: %s", self.config.name, error)
                await self._wait_wake(delay)
                continue
            errors = iter(REDIS_RETRY_SECONDS)
            if delivery is None:
                continue
            if self._stopping or self.serving_queue != name or not takes_tasks(self.state):
                await self._give_back(self.queue(name), delivery)
                continue
            try:
                await self._run(self.queue(name), delivery)
            except (RedisError, OSError) as error:
                # Before the handler started (its own failures are handled inside): the
                # task goes back, or stays pending under our name until reclaimed.
                self.metrics.redis_errors.labels("run").inc()
                logger.warning(
                    "agent %s: starting %s failed: %s", self.config.name, delivery.key, error
                )
                await self._give_back(self.queue(name), delivery)
                await self._wait_wake(next(errors, REDIS_RETRY_SECONDS[-1]))
        await self._give_back_buffered()

    async def _give_back_buffered(self) -> None:
        """Whatever is held and not started goes back for others at once."""
        for name, held in self._buffer.items():
            for delivery in held:
                await self._give_back(self.queue(name), delivery)
        self._buffer.clear()

    async def _wait_wake(self, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _next(self, queue: TaskQueue) -> Delivery | None:
        """The most urgent task available to this agent, or None after a blocking wait."""
        consumer = self.config.name
        buffer = self._buffer.setdefault(queue.name, [])
        now = time.monotonic()
        if reclaim_due(self._last_reclaim.get(queue.name), now, self.config.visibility_timeout):
            self._last_reclaim[queue.name] = now
            await self._reclaim(queue, buffer)
        held = most_urgent(d.priority for d in buffer)
        fresh = await queue.take(consumer, priorities_to_poll(held))
        if fresh is not None:
            buffer.append(fresh)
        if not buffer:
            # Wake up for the next reclaim scan at the latest: an idle agent is the one
            # to pick up what a dead agent (or a drain, or a Retry) gave back.
            block = min(self.config.block_seconds, reclaim_interval(self.config.visibility_timeout))
            buffer.extend(await queue.wait_for_any(consumer, block))
        if not buffer:
            return None
        buffer.sort(key=lambda d: d.priority)
        chosen = buffer.pop(0)
        # Hold only the task about to run: the rest go back, reclaimable at once by an
        # idle agent, rather than waiting behind this one. Giving back costs the task
        # nothing: deliveries count handler starts (TaskQueue.start), not these reads.
        while buffer:
            await self._give_back(queue, buffer.pop())
        return chosen

    async def _reclaim(self, queue: TaskQueue, buffer: list[Delivery]) -> None:
        held = most_urgent(d.priority for d in buffer)
        for priority in priorities_to_poll(held):
            taken = await queue.reclaim(self.config.name, priority, self.config.visibility_timeout)
            for delivery in taken:
                self.metrics.reclaimed.labels(queue.name).inc()
                logger.info(
                    "agent %s: reclaimed task %s (%s) from a lapsed lease",
                    self.config.name,
                    delivery.key,
                    delivery.priority.name,
                )
            if taken:
                buffer.extend(taken)
                return

    async def _dead_letter(self, queue: TaskQueue, delivery: Delivery) -> None:
        """`delivery` is the attempt that will not run: the ones before it failed."""
        ran = delivery.deliveries - 1
        logger.error(
            "agent %s: task %s delivered %d times without completing: dead-lettered",
            self.config.name,
            delivery.key,
            ran,
        )
        result = self._result(
            dataclasses.replace(delivery, deliveries=ran),
            ok=False,
            error_type="DeliveredTooOften",
            error=f"delivered {ran} times without completing (max {self.config.max_deliveries})",
            started=now_ms(),
        )
        await queue.complete(delivery, result, dead=True)
        self.metrics.tasks.labels(queue.name, delivery.priority.name, "dead").inc()

    async def _give_back(self, queue: TaskQueue, delivery: Delivery, after: float = 0.0) -> None:
        """Release a held task: reclaimable by any agent once `after` seconds pass."""
        idle_at = max(self.config.visibility_timeout - after, 0.0)
        try:
            await queue.release(self.config.name, delivery, idle_at)
        except (RedisError, OSError) as error:
            # It stays pending under our name: reclaimed after the visibility timeout.
            self.metrics.redis_errors.labels("release").inc()
            logger.warning(
                "agent %s: could not release %s: %s", self.config.name, delivery.key, error
            )

    async def _give_back_own_pending(self) -> None:
        """A container restarted in the same pod (same consumer name) gives back what its
        previous run held, so it goes through reclaim like any lost task: if the previous
        run had started it, that counted as a delivery (a task that keeps crashing the
        container is dead-lettered); one it only held costs nothing."""
        queues = {self.config.queue}
        if self.serving_queue:
            queues.add(self.serving_queue)
        for name in queues:
            queue = self.queue(name)
            try:
                await queue.ensure_groups()
                held = await queue.own_pending(self.config.name)
            except (RedisError, OSError) as error:
                self.metrics.redis_errors.labels("pending").inc()
                logger.warning("agent %s: reading own pending tasks: %s", self.config.name, error)
                continue
            for priority, entry_id in held:
                logger.info(
                    "agent %s: giving back entry %s (%s) held by a previous run",
                    self.config.name,
                    entry_id,
                    priority.name,
                )
                try:
                    await queue.release_entry(
                        self.config.name, priority, entry_id, self.config.visibility_timeout
                    )
                except (RedisError, OSError) as error:
                    self.metrics.redis_errors.labels("release").inc()
                    logger.warning(
                        "agent %s: could not release %s: %s", self.config.name, entry_id, error
                    )

    async def _run(self, queue: TaskQueue, taken: Delivery) -> None:
        priority = taken.priority.name
        delivery = await queue.start(taken)
        if delivery is None:
            await self._acknowledge_duplicate(queue, taken)
            return
        if delivered_too_often(delivery.deliveries, self.config.max_deliveries):
            await self._dead_letter(queue, delivery)
            return
        self.current = delivery
        self._event(AgentEvent.TASK_STARTED)
        started = now_ms()
        self.metrics.wait_seconds.labels(queue.name, priority).observe(
            max(started - delivery.submitted_ms, 0) / 1000
        )
        renewal = self._spawn(self._renew_loop(queue, delivery))
        task = self._task(queue.name, delivery)
        handler = asyncio.ensure_future(self._call(self._handler, task))
        outcome = "ok"
        result: TaskResult | None = None
        try:
            deadline = asyncio.ensure_future(self._deadline.wait())
            try:
                await asyncio.wait({handler, deadline}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                deadline.cancel()
            if not handler.done():
                # Draining, and the grace is over: give the task back, unfinished.
                handler.cancel()
                self.abandoned_thread = not inspect.iscoroutinefunction(self._handler)
                outcome = "released"
                logger.warning(
                    "agent %s: task %s did not finish within the drain timeout; given back",
                    self.config.name,
                    delivery.key,
                )
                await self._give_back(queue, delivery)
                return
            elapsed = (now_ms() - started) / 1000
            self.metrics.task_seconds.labels(queue.name, priority).observe(elapsed)
            error = handler.exception()
            if isinstance(error, Retry):
                outcome = "retried"
                await self._give_back(queue, delivery, after=error.after)
                return
            if error is not None:
                kind = type(error).__name__
                self.metrics.errors.labels(queue.name, kind).inc()
                logger.warning(
                    "agent %s: task %s failed: %s: %s", self.config.name, delivery.key, kind, error
                )
                result = self._result(
                    delivery, ok=False, error_type=kind, error=str(error), started=started
                )
                outcome = "error"
            else:
                result = self._result(delivery, ok=True, value=handler.result(), started=started)
            if not await self._complete(queue, delivery, result):
                outcome = "duplicate"
        finally:
            renewal.cancel()
            self.metrics.tasks.labels(queue.name, priority, outcome).inc()
            self.current = None
            self.tasks_done += 1
            self._event(AgentEvent.TASK_FINISHED)

    async def _acknowledge_duplicate(self, queue: TaskQueue, delivery: Delivery) -> None:
        """A task whose key has a result is not run again (a duplicate submission, or a
        reclaim that raced a slow completion): acknowledged, no effect."""
        placeholder = self._result(delivery, ok=True, started=now_ms())
        await queue.complete(delivery, placeholder)  # the NX fails: only acknowledges
        self.metrics.tasks.labels(queue.name, delivery.priority.name, "duplicate").inc()

    async def _complete(self, queue: TaskQueue, delivery: Delivery, result: TaskResult) -> bool:
        delays = iter(REDIS_RETRY_SECONDS)
        for attempt in range(COMPLETE_ATTEMPTS):
            try:
                return await queue.complete(delivery, result)
            except (RedisError, OSError) as error:
                self.metrics.redis_errors.labels("complete").inc()
                if attempt == COMPLETE_ATTEMPTS - 1:
                    # Not acknowledged: another agent will reclaim and redo it, and the
                    # idempotency key keeps the effect single.
                    logger.error(
                        "agent %s: could not record the result of %s: %s",
                        self.config.name,
                        delivery.key,
                        error,
                    )
                    break
                await asyncio.sleep(next(delays, REDIS_RETRY_SECONDS[-1]))
        return True

    async def _renew_loop(self, queue: TaskQueue, delivery: Delivery) -> None:
        interval = renew_interval(self.config.visibility_timeout)
        while True:
            await asyncio.sleep(interval)
            try:
                held = await queue.renew(self.config.name, delivery)
            except (RedisError, OSError) as error:
                self.metrics.redis_errors.labels("renew").inc()
                logger.warning("agent %s: renewing %s: %s", self.config.name, delivery.key, error)
                continue
            if not held:
                self.metrics.leases_lost.labels(queue.name).inc()
                logger.warning(
                    "agent %s: task %s was taken over by another agent; finishing anyway "
                    "(its idempotency key keeps one effect)",
                    self.config.name,
                    delivery.key,
                )
                return

    def _task(self, queue: str, delivery: Delivery) -> Task:
        return Task(
            key=delivery.key,
            payload=delivery.payload,
            priority=delivery.priority,
            queue=queue,
            deliveries=delivery.deliveries,
            submitted_ms=delivery.submitted_ms,
            agent=self.config.name,
            claim=self.claim,
            redis=self.redis,
        )

    def _result(
        self,
        delivery: Delivery,
        *,
        ok: bool,
        started: int,
        value: Any = None,
        error_type: str | None = None,
        error: str | None = None,
    ) -> TaskResult:
        return TaskResult(
            key=delivery.key,
            ok=ok,
            value=value,
            error_type=error_type,
            error=error,
            agent=self.config.name,
            priority=delivery.priority.name,
            submitted_ms=delivery.submitted_ms,
            started_ms=started,
            finished_ms=now_ms(),
            deliveries=delivery.deliveries,
        )

    # --- heartbeat --------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self._beat()
            except (RedisError, OSError) as error:
                self.metrics.heartbeat_failures.inc()
                logger.warning("agent %s: heartbeat failed: %s", self.config.name, error)
            await asyncio.sleep(self.config.heartbeat_interval)

    async def _beat(self) -> None:
        assert self.redis is not None
        keys = QueueKeys(self.config.queue)
        ttl_ms = int(self.config.heartbeat_interval * 3000)
        now = now_ms()
        fields = {
            "name": self.config.name,
            "namespace": self.config.namespace,
            "state": str(self.state),
            "role": str(self.role),
            "queue": self.serving_queue or "",
            "claim": self.claim_name or "",
            "task": self.current.key if self.current is not None else "",
            "tasksDone": str(self.tasks_done),
            "startedAt": self.started_at.isoformat(timespec="milliseconds"),
            "beatAt": str(now),
        }
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(keys.agent(self.config.name), mapping=cast(Any, fields))
            pipe.pexpire(keys.agent(self.config.name), ttl_ms)
            pipe.zadd(keys.agents, {self.config.name: now + ttl_ms})
            pipe.zremrangebyscore(keys.agents, "-inf", now)
            await pipe.execute()

    async def _leave(self) -> None:
        assert self.redis is not None
        keys = QueueKeys(self.config.queue)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(keys.agent(self.config.name))
            pipe.zrem(keys.agents, self.config.name)
            await pipe.execute()

    # --- HTTP -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """GET /status: what drain-aware rollouts and people read."""
        body: dict[str, Any] = {
            "name": self.config.name,
            "state": str(self.state),
            "idle": is_idle(self.state),
            "ready": is_ready(self.state),
            "role": str(self.role),
            "queue": self.serving_queue,
            "tasksDone": self.tasks_done,
            "currentTask": self.current.key if self.current is not None else None,
            "startedAt": self.started_at.isoformat(timespec="milliseconds"),
        }
        if self.claim is not None:
            body["claim"] = self.claim.to_wire()
        elif self.claim_name:
            body["claim"] = {"name": self.claim_name}
        if self.claim_received_at is not None:
            body["claimReceivedAt"] = self.claim_received_at.isoformat(timespec="milliseconds")
        return body

    async def _serve_http(self) -> None:
        app = aiohttp.web.Application()
        app.add_routes(
            [
                aiohttp.web.get(contract.LIVE_PATH, self._get_live),
                aiohttp.web.get(contract.READY_PATH, self._get_ready),
                aiohttp.web.get(contract.STATUS_PATH, self._get_status),
                aiohttp.web.get(contract.METRICS_PATH, self._get_metrics),
                aiohttp.web.post(contract.ASSIGNMENT_PATH, self._post_assignment),
                aiohttp.web.post(contract.DRAIN_PATH, self._post_drain),
            ]
        )
        self._runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, self.config.bind_address, self.config.port)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else self.config.port
        logger.info(
            "agent %s: serving http://%s:%d (handler %s)",
            self.config.name,
            self.config.bind_address,
            self.port,
            self.config.handler,
        )

    async def _get_live(self, _: aiohttp.web.Request) -> aiohttp.web.Response:
        # Answered by the event loop itself: a loop that is stuck answers nothing.
        if self._failure is not None:
            return aiohttp.web.json_response({"live": False}, status=500)
        return aiohttp.web.json_response({"live": True})

    async def _get_ready(self, _: aiohttp.web.Request) -> aiohttp.web.Response:
        ready = is_ready(self.state)
        return aiohttp.web.json_response(
            {"ready": ready, "state": str(self.state)}, status=200 if ready else 503
        )

    async def _get_status(self, _: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response(self.status())

    async def _get_metrics(self, _: aiohttp.web.Request) -> aiohttp.web.Response:
        response = aiohttp.web.Response(body=self.metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    async def _post_assignment(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        try:
            assignment = Assignment.from_wire(await request.json())
        except (ValueError, json.JSONDecodeError) as error:
            return aiohttp.web.json_response({"error": str(error)}, status=400)
        if assignment.pod != self.config.name or (
            self.config.pod_uid and assignment.pod_uid != self.config.pod_uid
        ):
            # An address reused by another pod: not for us.
            return aiohttp.web.json_response(
                {"error": f"this is pod {self.config.name}, not {assignment.pod}"}, status=409
            )
        if (
            self.claim is not None
            and assignment.key != self._assignment_key
            and (assignment.claim is None or assignment.claim.uid != self.claim.uid)
        ):
            # A claimed agent is its claim's for good; a new claim gets a new pod.
            return aiohttp.web.json_response(
                {"error": f"already bound to claim {self.claim.name}"}, status=409
            )
        changed = self.assign(assignment)
        return aiohttp.web.json_response({"changed": changed, "state": str(self.state)})

    async def _post_drain(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError as error:
            return aiohttp.web.json_response({"error": str(error)}, status=400)
        pod = body.get("pod") if isinstance(body, dict) else None
        pod_uid = body.get("podUid") if isinstance(body, dict) else None
        if pod != self.config.name or (self.config.pod_uid and pod_uid != self.config.pod_uid):
            # An address reused by another pod: draining it would stop the wrong agent.
            return aiohttp.web.json_response(
                {"error": f"this is pod {self.config.name}, not {pod}"}, status=409
            )
        self.drain()
        return aiohttp.web.json_response(self.status())

    # --- helpers ----------------------------------------------------------------------------

    def _spawn(self, coroutine: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        await self._wait_wake(seconds)
