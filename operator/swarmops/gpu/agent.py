"""The GPU node agent: NVML in threads, classification in the core, writes to its Node.

One asyncio loop drives everything; NVML never runs on it:

* NVML calls (init, the poll, shutdown) run one at a time on a daemon worker thread,
  each awaited with a timeout: a driver call that hangs makes the node UNKNOWN
  ("NVML did not answer") instead of freezing the agent, and the hung thread is
  abandoned (a daemon, so it never holds the process at exit).
* An event thread waits on NVML's event set (XID and double-bit ECC events, as far as
  each GPU supports them) with a 1 s timeout so it can stop, and hands each event to
  the loop, which re-assesses and publishes at once: a fault reaches the Node within
  one API round trip, not at the next poll.
* NVML that fails to initialise is UNKNOWN, published, and retried every poll: the
  agent never exits over it (a crash-looping agent publishes nothing, and monitoring
  lost in silence is what the device plugin's users complained of, #2037).

What is published, and why, is in `swarmops.gpu.report`; the levels in
`swarmops.gpu.health`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import aiohttp

from swarmops import __version__
from swarmops.gpu.health import (
    AgentMemory,
    Failed,
    Level,
    NodeHealth,
    NodeReading,
    Reading,
    XidEvent,
    assess_node,
    on_boot,
    record_event,
    record_poll,
)
from swarmops.gpu.metrics import AgentMetrics, serve_agent_http
from swarmops.gpu.nvml import EventThread, NvmlSession, NvmlUnavailable, describe
from swarmops.gpu.report import (
    REPORT_ANNOTATION,
    ReportContext,
    condition_changed,
    find_condition,
    memory_from_report,
    node_condition,
    render_report,
    summary_key,
)
from swarmops.gpu.settings import GpuAgentSettings
from swarmops.kube.auth import Credentials, load_connection_info
from swarmops.kube.client import KubeClient, PatchType
from swarmops.kube.errors import ApiError, Forbidden
from swarmops.kube.resources import NODES

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: GPU Feature Discovery's label with the number of GPUs the node has.
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
EVENT_TIMEOUT_MS = 1000
#: How soon a failed write to the Node is retried.
PUBLISH_RETRY_S = 2.0
#: An unchanged condition is rewritten this many heartbeats apart (its heartbeat time);
#: the annotation carries the real heartbeat at every one.
CONDITION_REFRESH_HEARTBEATS = 10


class NvmlWorker:
    """A daemon thread that runs blocking calls, one at a time, for an asyncio loop."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="nvml", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            call()

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: T | None, error: BaseException | None) -> None:
            if future.done():  # timed out and abandoned meanwhile
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        def call() -> None:
            try:
                result = fn(*args)
            except BaseException as error:  # handed to the awaiting coroutine
                loop.call_soon_threadsafe(settle, None, error)
            else:
                loop.call_soon_threadsafe(settle, result, None)

        self._calls.put(call)
        return future

    def close(self) -> None:
        self._calls.put(None)


class GpuAgent:
    """The agent of one node. `run` returns when `stop` is set."""

    def __init__(
        self,
        settings: GpuAgentSettings,
        client: KubeClient,
        metrics: AgentMetrics | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.client = client
        self.metrics = metrics or AgentMetrics()
        self.policy = settings.policy()
        self._clock = clock
        self.memory = AgentMemory()
        self.reading = NodeReading(nvml_error="not polled yet")
        self.health: NodeHealth | None = None
        self.expected_gpus: int | None = settings.expected_gpus
        self.boot_id = ""
        self._worker = NvmlWorker()
        self._session: NvmlSession | None = None
        self._event_set: Any = None
        self._events: EventThread | None = None
        self._registered: dict[str, Reading[int]] = {}
        self._wake: asyncio.Event | None = None
        self._last_tick = time.monotonic()
        self._condition: dict[str, Any] | None = None
        self._condition_at = 0.0
        self._published_key: tuple[Any, ...] | None = None
        self._published_at = 0.0
        self._publish_failed = False
        self._last_errors: dict[str, str] = {}

    # -- liveness --------------------------------------------------------------------------------

    def alive(self) -> bool:
        """The loop still turns (NVML's state does not matter here)."""
        budget = self.settings.poll_interval + self.settings.nvml_timeout + 60
        return time.monotonic() - self._last_tick < budget

    # -- the loop --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._wake = asyncio.Event()
        try:
            if not await self._load_node(stop):
                return
            next_poll = 0.0
            while not stop.is_set():
                self._last_tick = time.monotonic()
                if time.monotonic() >= next_poll:
                    await self._poll()
                    next_poll = time.monotonic() + self.settings.poll_interval
                await self._assess_and_publish()
                delay = max(0.0, next_poll - time.monotonic())
                if self._publish_failed:
                    delay = min(delay, PUBLISH_RETRY_S)
                await self._sleep(delay, stop)
        finally:
            await self._teardown()
            self._worker.close()

    async def _sleep(self, seconds: float, stop: asyncio.Event) -> None:
        assert self._wake is not None
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
            self._wake.clear()

    async def _load_node(self, stop: asyncio.Event) -> bool:
        """Read our Node once: its BootID, expected GPU count, and what a previous agent
        on this boot published (its XIDs are our memory). Retried until it works."""
        delay = 1.0
        while not stop.is_set():
            try:
                node = await self.client.get(NODES, self.settings.node_name)
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
                self._log_once("node", f"cannot read node {self.settings.node_name}: {error}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 30.0)
                continue
            metadata = node.get("metadata") or {}
            status = node.get("status") or {}
            self.boot_id = str((status.get("nodeInfo") or {}).get("bootID") or "")
            if self.expected_gpus is None:
                count = (metadata.get("labels") or {}).get(GPU_COUNT_LABEL, "")
                self.expected_gpus = int(count) if str(count).isdigit() else None
            previous = (metadata.get("annotations") or {}).get(REPORT_ANNOTATION)
            self.memory = on_boot(memory_from_report(previous, self.boot_id), self.boot_id)
            self._condition = find_condition(node)
            logger.info(
                "GPU agent on node %s (boot %s, expecting %s GPUs, %d remembered XIDs)",
                self.settings.node_name,
                self.boot_id or "unknown",
                "?" if self.expected_gpus is None else self.expected_gpus,
                sum(len(gpu.xids) for gpu in self.memory.gpus.values()),
            )
            return True
        return False

    # -- NVML ------------------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking NVML call on the worker; a hang past the timeout abandons the
        worker (and the NVML session, which cannot be shut down while it hangs)."""
        try:
            return await asyncio.wait_for(
                self._worker.submit(fn, *args), self.settings.nvml_timeout
            )
        except TimeoutError:
            self._worker.close()
            self._worker = NvmlWorker()
            self._stop_events()
            self._session = None
            raise

    async def _poll(self) -> None:
        started = time.monotonic()
        if self._session is None and not await self._start_session():
            return
        assert self._session is not None
        try:
            reading = await self._call(self._session.read, dict(self._registered))
        except TimeoutError:
            self._nvml_failed(
                "timeout", f"NVML did not answer within {self.settings.nvml_timeout:g}s"
            )
            return
        except NvmlUnavailable as error:
            await self._teardown()
            self._nvml_failed("nvml_unavailable", str(error))
            return
        self.reading = reading
        self.memory = record_poll(self.memory, reading, self.policy, self._clock())
        self._last_errors.pop("nvml", None)
        self.metrics.polls.labels("ok").inc()
        self.metrics.poll_seconds.observe(time.monotonic() - started)

    async def _start_session(self) -> bool:
        try:
            session = await self._call(NvmlSession)
        except TimeoutError:
            self._nvml_failed("timeout", "nvmlInit did not return")
            return False
        except Exception as error:  # any failure to start NVML is UNKNOWN, then retried
            self._nvml_failed("nvml_unavailable", f"nvmlInit failed: {describe(error)}")
            return False
        self._session = session
        logger.info(
            "NVML initialised: driver %s, %d GPUs", session.driver_version, len(session.devices)
        )
        try:
            self._event_set, self._registered = await self._call(session.register_events)
        except TimeoutError:
            return False
        except Exception as error:
            message = f"cannot watch XID events: {describe(error)}"
            logger.warning("%s", message)
            self._registered = {device.uuid: Failed(message) for device in session.devices}
            return True
        loop = asyncio.get_running_loop()

        def on_event(event: XidEvent) -> None:
            loop.call_soon_threadsafe(self._on_event, event)

        def on_error(error: str) -> None:
            loop.call_soon_threadsafe(self._on_event_error, error)

        self._events = EventThread(
            session, self._event_set, on_event, on_error, timeout_ms=EVENT_TIMEOUT_MS
        )
        self._events.start()
        return True

    def _nvml_failed(self, result: str, message: str) -> None:
        self.reading = NodeReading(nvml_error=message)
        self.metrics.polls.labels(result).inc()
        self._log_once("nvml", message)

    def _on_event(self, event: XidEvent) -> None:
        self.memory = record_event(self.memory, event)
        index = next((g.index for g in self.reading.gpus if g.uuid == event.gpu_uuid), None)
        self.metrics.observe_event(event, index)
        what = "double-bit ECC event" if event.double_bit_ecc else f"XID {event.xid}"
        logger.warning("%s on GPU %s (%s)", what, "?" if index is None else index, event.gpu_uuid)
        if self._wake is not None:
            self._wake.set()

    def _on_event_error(self, error: str) -> None:
        self._log_once("events", f"waiting for NVML events failed: {error}")

    def _stop_events(self) -> None:
        if self._events is not None:
            self._events.stop()
            self._events = None

    async def _teardown(self) -> None:
        events, session, event_set = self._events, self._session, self._event_set
        self._stop_events()
        self._session, self._event_set, self._registered = None, None, {}
        if events is not None:
            await asyncio.to_thread(events.join, EVENT_TIMEOUT_MS / 1000 * 3)
        if session is None:
            return
        with contextlib.suppress(TimeoutError):
            if event_set is not None:
                await self._call(session.free_events, event_set)
            await self._call(session.close)

    # -- publishing ------------------------------------------------------------------------------

    async def _assess_and_publish(self) -> None:
        now = self._clock()
        health = assess_node(self.reading, self.memory, self.policy, now, self.expected_gpus)
        self.metrics.observe(self.reading, health)
        if self.health is None or self.health.level is not health.level:
            log = logger.info if health.level.rank <= Level.UNMONITORED.rank else logger.warning
            log("GPU health %s: %s", health.level, health.message)
        self.health = health
        key = summary_key(health)
        due = now - self._published_at >= self.settings.heartbeat_interval
        if key == self._published_key and not due and not self._publish_failed:
            return
        try:
            await self._publish(health, now)
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
            self._publish_failed = True
            self.metrics.publishes.labels("error").inc()
            hint = " (RBAC: the agent needs patch on nodes and nodes/status)"
            self._log_once(
                "publish",
                f"cannot update node {self.settings.node_name}: {error}"
                + (hint if isinstance(error, Forbidden) else ""),
            )
            return
        self._publish_failed = False
        self._last_errors.pop("publish", None)
        self._published_key, self._published_at = key, now
        self.metrics.publishes.labels("ok").inc()
        self.metrics.last_publish.set(now)

    async def _publish(self, health: NodeHealth, now: float) -> None:
        moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
        condition = node_condition(health, self._condition, moment)
        refresh = self.settings.heartbeat_interval * CONDITION_REFRESH_HEARTBEATS
        # The condition first: it is what the operator and `kubectl describe` react to.
        if condition_changed(condition, self._condition) or now - self._condition_at >= refresh:
            await self.client.patch(
                NODES,
                self.settings.node_name,
                {"status": {"conditions": [condition]}},
                patch_type=PatchType.STRATEGIC,
                subresource="status",
            )
            self._condition, self._condition_at = condition, now
        context = ReportContext(
            boot_id=self.boot_id,
            agent_version=__version__,
            poll_seconds=self.settings.poll_interval,
            heartbeat_seconds=self.settings.heartbeat_interval,
        )
        report = render_report(health, context, moment)
        await self.client.patch(
            NODES,
            self.settings.node_name,
            {"metadata": {"annotations": {REPORT_ANNOTATION: report}}},
        )

    def _log_once(self, topic: str, message: str) -> None:
        """Log a failure when it starts or changes, not at every retry."""
        if self._last_errors.get(topic) != message:
            self._last_errors[topic] = message
            logger.warning("%s", message)


async def serve_agent(
    settings: GpuAgentSettings, credentials: Credentials, stop: asyncio.Event
) -> None:
    """The agent with its HTTP endpoint, until `stop` is set."""
    metrics = AgentMetrics()
    async with KubeClient(credentials, user_agent=f"swarmops-gpu-agent/{__version__}") as client:
        agent = GpuAgent(settings, client, metrics)
        endpoint = None
        if settings.metrics_port:
            endpoint = await serve_agent_http(
                metrics,
                host=settings.bind_address,
                port=settings.metrics_port,
                is_alive=agent.alive,
            )
        try:
            await agent.run(stop)
        finally:
            if endpoint is not None:
                await endpoint.close()


def load_credentials(settings: GpuAgentSettings, environ: Mapping[str, str]) -> Credentials:
    """The agent's credentials (its pod's service account in a cluster); raises
    CredentialsError, with what was tried, when there are none."""
    return Credentials(lambda: load_connection_info(settings.kubeconfig, settings.context, environ))


def run_agent(settings: GpuAgentSettings, credentials: Credentials) -> None:
    """Run until SIGINT/SIGTERM."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve_agent(settings, credentials, stop)

    asyncio.run(main())
