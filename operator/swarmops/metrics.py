"""Prometheus metrics of one operator instance, and the HTTP server that exposes them.

Each operator owns its `CollectorRegistry` (not prometheus_client's global one), so
several operators can run in one process (tests) without clashing metric names.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp.web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

logger = logging.getLogger(__name__)

POD_STATES = ("active", "warm", "claimed")
ROLLOUT_PHASES = ("Progressing", "Paused", "Completed", "Aborted")


class Metrics:
    """The operator's instruments, all registered in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.reconciles = Counter(
            "swarmops_reconcile_total",
            "Reconciles run, by kind of object and result.",
            ["kind", "result"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "swarmops_reconcile_duration_seconds",
            "Wall time of one reconcile, API calls included.",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.pool_pods = Gauge(
            "swarmops_pool_pods",
            "Pods of an AgentPool by state (active, warm, claimed), as last observed.",
            ["namespace", "pool", "state"],
            registry=self.registry,
        )
        self.pool_pods_ready = Gauge(
            "swarmops_pool_pods_ready",
            "Ready pods of an AgentPool by state, as last observed.",
            ["namespace", "pool", "state"],
            registry=self.registry,
        )
        self.pod_operations = Counter(
            "swarmops_pod_operations_total",
            "Pod writes sent by the operator, by operation and result.",
            ["operation", "result"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "swarmops_workqueue_depth",
            "Objects waiting to be reconciled.",
            registry=self.registry,
        )
        self.claim_queue_depth = Gauge(
            "swarmops_claim_workqueue_depth",
            "AgentClaims waiting to be reconciled.",
            registry=self.registry,
        )
        self.claims = Counter(
            "swarmops_claims_total",
            "AgentClaims that reached a phase (bound, failed, released), by the reason of "
            "their Bound condition (WarmPodBound, ColdStarted, BindTimeout, TTLExpired, ...).",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.claim_warm_pool = Counter(
            "swarmops_claim_warm_pool_total",
            "Claims bound from the warm pool (hit) or by a cold start (miss).",
            ["result"],
            registry=self.registry,
        )
        self.claim_bind_seconds = Histogram(
            "swarmops_claim_bind_duration_seconds",
            "From a claim's first watch event in this process to its pod bound, by warm hit.",
            ["warm"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.events_suppressed = Counter(
            "swarmops_events_suppressed_total",
            "Normal Events about AgentClaims not posted because the claim Event budget was "
            "spent (Warnings are always posted), by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.redis = RedisMetrics(self.registry)
        self.claim_bind_conflicts = Counter(
            "swarmops_claim_bind_conflicts_total",
            "Bind patches refused because the pod changed first (another claim won it).",
            registry=self.registry,
        )
        self.agent_handoffs = Counter(
            "swarmops_agent_handoffs_total",
            "Assignments POSTed to agents (claim hand-offs and role changes), by role and "
            "result: delivered, refused (the agent said it is not for it), failed (no answer "
            "after the retries; the pod's next watch event tries again).",
            ["role", "result"],
            registry=self.registry,
        )
        self.agent_handoff_seconds = Histogram(
            "swarmops_agent_handoff_duration_seconds",
            "From deciding to tell an agent (right after the bind, or on a pod event) to its "
            "answer, retries included.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )

        self.swarm_pools = Gauge(
            "swarmops_swarm_pools",
            "Pools of a Swarm.",
            ["namespace", "swarm"],
            registry=self.registry,
        )
        self.swarm_pools_ready = Gauge(
            "swarmops_swarm_pools_ready",
            "Pools of a Swarm that are Ready (started and their active pods Ready).",
            ["namespace", "swarm"],
            registry=self.registry,
        )

        self.rollout_phase = Gauge(
            "swarmops_rollout_phase",
            "1 for the phase an AgentPool's rollout is in (Progressing, Paused, Completed, "
            "Aborted), 0 for the others.",
            ["namespace", "pool", "phase"],
            registry=self.registry,
        )
        self.rollout_step = Gauge(
            "swarmops_rollout_step",
            "Index of the canary step an AgentPool's rollout is in.",
            ["namespace", "pool"],
            registry=self.registry,
        )
        self.rollout_canary_weight = Gauge(
            "swarmops_rollout_canary_weight_percent",
            "Share of an AgentPool's active pods meant to run the canary revision.",
            ["namespace", "pool"],
            registry=self.registry,
        )
        self.rollout_analysis = Counter(
            "swarmops_rollout_analysis_total",
            "Rollout analysis verdicts reached after new measurements, by outcome (Running, "
            "Successful, Failed, Inconclusive, ProviderErrors, InsufficientData).",
            ["outcome"],
            registry=self.registry,
        )
        self.rollout_duration = Histogram(
            "swarmops_rollout_duration_seconds",
            "Time from a rollout's start to its end, by outcome (Promoted, Aborted, Superseded).",
            ["outcome"],
            buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
            registry=self.registry,
        )
        self.analysis_measurements = Counter(
            "swarmops_analysis_measurements_total",
            "Analysis metrics measured with Prometheus, by result: answered (a number), "
            "no_data (an empty result or NaN), error (unreachable, slow, HTTP or PromQL error).",
            ["result"],
            registry=self.registry,
        )
        self.analysis_measurement_seconds = Histogram(
            "swarmops_analysis_measurement_duration_seconds",
            "Wall time of one analysis measurement (its query and sampleQuery).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

    def observe_rollout(
        self, namespace: str, pool: str, *, phase: str, step: int, weight: int
    ) -> None:
        for each in ROLLOUT_PHASES:
            self.rollout_phase.labels(namespace, pool, each).set(1 if each == phase else 0)
        self.rollout_step.labels(namespace, pool).set(step)
        self.rollout_canary_weight.labels(namespace, pool).set(weight)

    def observe_pool(
        self, namespace: str, pool: str, counts: dict[str, int], ready: dict[str, int]
    ) -> None:
        for state in POD_STATES:
            self.pool_pods.labels(namespace, pool, state).set(counts.get(state, 0))
            self.pool_pods_ready.labels(namespace, pool, state).set(ready.get(state, 0))

    def observe_swarm(self, namespace: str, swarm: str, *, ready_pools: int, pools: int) -> None:
        self.swarm_pools.labels(namespace, swarm).set(pools)
        self.swarm_pools_ready.labels(namespace, swarm).set(ready_pools)

    def forget_swarm(self, namespace: str, swarm: str) -> None:
        for gauge in (self.swarm_pools, self.swarm_pools_ready):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, swarm)

    def forget_pool(self, namespace: str, pool: str) -> None:
        for state in POD_STATES:
            for gauge in (self.pool_pods, self.pool_pods_ready):
                with contextlib.suppress(KeyError):
                    gauge.remove(namespace, pool, state)
        for phase in ROLLOUT_PHASES:
            with contextlib.suppress(KeyError):
                self.rollout_phase.remove(namespace, pool, phase)
        for gauge in (self.rollout_step, self.rollout_canary_weight):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, pool)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RedisMetrics:
    """Instruments of the RedisCluster controller, per cluster."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["namespace", "cluster"]
        self.cluster_state = Gauge(
            "swarmops_redis_cluster_state",
            "1 when every reachable node reports cluster_state ok, 0 otherwise.",
            labels,
            registry=registry,
        )
        self.shards_ready = Gauge(
            "swarmops_redis_shards_ready",
            "Shards whose master and replicas are up and in sync.",
            labels,
            registry=registry,
        )
        self.slots_ok = Gauge(
            "swarmops_redis_slots_ok",
            "Hash slots assigned to a reachable master (16384 when whole).",
            labels,
            registry=registry,
        )
        self.failovers = Counter(
            "swarmops_redis_failovers_total",
            "Failovers the operator started: forced (master lost) or graceful (planned).",
            [*labels, "kind"],
            registry=registry,
        )
        self.slot_migrations = Counter(
            "swarmops_redis_slot_migrations_total",
            "Hash slots moved from one master to another (reshards, finished interrupted moves).",
            labels,
            registry=registry,
        )
        self.keys_moved = Counter(
            "swarmops_redis_keys_moved_total",
            "Keys migrated along with their slots.",
            labels,
            registry=registry,
        )
        self.actions = Counter(
            "swarmops_redis_actions_total",
            "Cluster commands the operator sent (meet, forget, addslots, replicate, "
            "failover, ...), by result.",
            [*labels, "action", "result"],
            registry=registry,
        )

    def forget(self, namespace: str, cluster: str) -> None:
        for gauge in (self.cluster_state, self.shards_ready, self.slots_ok):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, cluster)


@dataclass
class HttpEndpoint:
    """A running aiohttp server; `port` is the bound one (useful when asked for port 0)."""

    runner: aiohttp.web.AppRunner
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve_metrics(
    metrics: Metrics, *, host: str, port: int, is_ready: Callable[[], bool]
) -> HttpEndpoint:
    """Serve `/metrics` and the readiness probe `/readyz` on one port."""

    async def get_metrics(_: aiohttp.web.Request) -> aiohttp.web.Response:
        response = aiohttp.web.Response(body=metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def get_ready(_: aiohttp.web.Request) -> aiohttp.web.Response:
        if is_ready():
            return aiohttp.web.json_response({"ready": True})
        return aiohttp.web.json_response({"ready": False}, status=503)

    app = aiohttp.web.Application()
    app.add_routes(
        [aiohttp.web.get("/metrics", get_metrics), aiohttp.web.get("/readyz", get_ready)]
    )
    runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, host, port)
    await site.start()
    bound_port = int(runner.addresses[0][1]) if runner.addresses else port
    logger.info("Serving metrics at http://%s:%d/metrics", host, bound_port)
    return HttpEndpoint(runner=runner, port=bound_port)
