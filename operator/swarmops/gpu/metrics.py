"""Prometheus metrics of the GPU agent, in a registry of its own (like the operator's)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import aiohttp.web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from swarmops.gpu.health import (
    CLOCK_REASON_NAMES,
    Level,
    NodeHealth,
    NodeReading,
    XidEvent,
)
from swarmops.metrics import HttpEndpoint

logger = logging.getLogger(__name__)

LEVELS = tuple(Level)


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.gpu_health = Gauge(
            "swarmops_gpu_health",
            "1 for each GPU's current health level, 0 for the others.",
            ["gpu", "uuid", "level"],
            registry=self.registry,
        )
        self.node_health = Gauge(
            "swarmops_gpu_node_health",
            "1 for the node's current GPU health level, 0 for the others.",
            ["level"],
            registry=self.registry,
        )
        self.xid_errors = Counter(
            "swarmops_gpu_xid_errors",
            'XID events (and double-bit ECC events, xid="dbe") received, by GPU and code.',
            ["gpu", "uuid", "xid"],
            registry=self.registry,
        )
        self.temperature = Gauge(
            "swarmops_gpu_temperature_celsius",
            "GPU core temperature.",
            ["gpu", "uuid"],
            registry=self.registry,
        )
        self.clock_events = Gauge(
            "swarmops_gpu_clock_event_active",
            "1 while a clock event (throttle) reason holds the GPU's clocks down.",
            ["gpu", "uuid", "reason"],
            registry=self.registry,
        )
        self.unmonitored = Gauge(
            "swarmops_gpu_check_unmonitored",
            "1 for each check that cannot run on a GPU (NotSupported, FunctionNotFound).",
            ["gpu", "uuid", "check"],
            registry=self.registry,
        )
        self.nvml_up = Gauge(
            "swarmops_gpu_agent_nvml_up",
            "1 while NVML is initialised and answering, 0 otherwise.",
            registry=self.registry,
        )
        self.polls = Counter(
            "swarmops_gpu_agent_polls",
            "Polls of NVML, by result (ok, nvml_unavailable, timeout).",
            ["result"],
            registry=self.registry,
        )
        self.poll_seconds = Histogram(
            "swarmops_gpu_agent_poll_duration_seconds",
            "Wall time of one poll of every GPU.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30),
            registry=self.registry,
        )
        self.publishes = Counter(
            "swarmops_gpu_agent_publishes",
            "Writes of the node condition and report, by result.",
            ["result"],
            registry=self.registry,
        )
        self.last_publish = Gauge(
            "swarmops_gpu_agent_last_publish_timestamp_seconds",
            "When the report was last written to the Node (the heartbeat).",
            registry=self.registry,
        )
        # The series set per GPU, so a GPU no longer listed leaves none behind.
        self._series: dict[tuple[str, str], set[tuple[Gauge, tuple[str, ...]]]] = {}

    def observe_event(self, event: XidEvent, index: int | None) -> None:
        code = "dbe" if event.double_bit_ecc else str(event.xid)
        gpu = "" if index is None else str(index)
        self.xid_errors.labels(gpu, event.gpu_uuid, code).inc()

    def observe(self, reading: NodeReading, health: NodeHealth) -> None:
        self.nvml_up.set(0 if reading.nvml_error else 1)
        for level in LEVELS:
            self.node_health.labels(str(level)).set(1 if health.level is level else 0)
        series: dict[tuple[str, str], set[tuple[Gauge, tuple[str, ...]]]] = {}
        by_uuid = {gpu.uuid: gpu for gpu in reading.gpus}
        for gpu in health.gpus:
            key = (str(gpu.index), gpu.uuid)
            mine = series.setdefault(key, set())

            def put(gauge: Gauge, labels: tuple[str, ...], value: float) -> None:
                gauge.labels(*labels).set(value)
                mine.add((gauge, labels))  # noqa: B023 - used at once, in this iteration

            for level in LEVELS:
                put(self.gpu_health, (*key, str(level)), 1 if gpu.level is level else 0)
            for check in gpu.unmonitored:
                put(self.unmonitored, (*key, str(check)), 1)
            raw = by_uuid.get(gpu.uuid)
            if raw is not None and isinstance(raw.temperature_c, int):
                put(self.temperature, key, raw.temperature_c)
            if raw is not None and isinstance(raw.clock_event_reasons, int):
                for bit, name in CLOCK_REASON_NAMES.items():
                    put(self.clock_events, (*key, name), 1 if raw.clock_event_reasons & bit else 0)
        stale = {item for items in self._series.values() for item in items} - {
            item for items in series.values() for item in items
        }
        for gauge, labels in stale:
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
        self._series = series

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


async def serve_agent_http(
    metrics: AgentMetrics, *, host: str, port: int, is_alive: Callable[[], bool]
) -> HttpEndpoint:
    """`/metrics`, and `/healthz` for the liveness probe.

    Liveness follows the agent's own loop, never NVML: a node whose driver is broken must
    keep an agent that says so (UNKNOWN), not one the kubelet restarts forever."""

    async def get_metrics(_: aiohttp.web.Request) -> aiohttp.web.Response:
        response = aiohttp.web.Response(body=metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def get_health(_: aiohttp.web.Request) -> aiohttp.web.Response:
        alive = is_alive()
        return aiohttp.web.json_response({"alive": alive}, status=200 if alive else 503)

    app = aiohttp.web.Application()
    app.add_routes(
        [aiohttp.web.get("/metrics", get_metrics), aiohttp.web.get("/healthz", get_health)]
    )
    runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, host, port)
    await site.start()
    bound_port = int(runner.addresses[0][1]) if runner.addresses else port
    logger.info("Serving GPU agent metrics at http://%s:%d/metrics", host, bound_port)
    return HttpEndpoint(runner=runner, port=bound_port)
