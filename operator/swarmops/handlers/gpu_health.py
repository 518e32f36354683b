"""The operator's reaction to GPU health: thin shell around `swarmops.gpu.reaction`.

A kopf index holds each GPU node (labelled nvidia.com/gpu.present=true) as a parsed
`GpuNodeState`; node events wake the reactor, and it also looks every second anyway,
because a dead agent sends no events (its heartbeat just goes stale). Each turn plans
the whole fleet at once (the circuit breaker counts across nodes) and writes only what
differs: one JSON patch per node, guarded by its resourceVersion, then Events, then
evictions of agent pods on CRITICAL nodes through the Eviction API (PDBs respected; a
refusal is retried on a later turn).

The operator needs `patch` on nodes for this; without it (the chart's node role is
read-only unless gpuHealth.reaction=on) it runs in dry run and says so. A dry run
writes nothing to nodes, not even its memory (kept in this process instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import aiohttp
import kopf
from prometheus_client import Counter, Gauge

from swarmops.core.gpu import GPU_PRESENT_LABEL
from swarmops.core.pods import ObservedPod
from swarmops.gpu.reaction import (
    GpuNodeState,
    Mode,
    NodeEvent,
    NodeMemory,
    NodePlan,
    ReactionPolicy,
    node_patch,
    observe_node,
    plan_fleet,
)
from swarmops.handlers.context import services_of
from swarmops.kube.access import allowed
from swarmops.kube.client import KubeClient, PatchType
from swarmops.kube.errors import ApiError, Conflict, Invalid, NotFound, TooManyRequests
from swarmops.kube.resources import EVENTS, NODES, PODS
from swarmops.metrics import Metrics
from swarmops.settings import Settings

logger = logging.getLogger(__name__)

GPU_HEALTH_INDEX = "swarmops_gpu_health"
#: How often the reactor looks at every node without being woken.
TICK_S = 1.0
#: Events about cluster-scoped objects live in "default" (as the kubelet's do).
NODE_EVENT_NAMESPACE = "default"


async def index_gpu_health(body: kopf.Body, name: str, **_: Any) -> dict[str, GpuNodeState]:
    return {name: observe_node(body)}


async def on_gpu_node_event(memo: Any, **_: Any) -> None:
    reactor = services_of(memo).gpu_reactor
    if reactor is not None:
        reactor.wake()


def register(registry: kopf.OperatorRegistry) -> None:
    gpu_nodes = {GPU_PRESENT_LABEL: "true"}
    kopf.index("v1", "nodes", id=GPU_HEALTH_INDEX, labels=gpu_nodes, registry=registry)(
        index_gpu_health
    )
    kopf.on.event("v1", "nodes", labels=gpu_nodes, registry=registry)(on_gpu_node_event)


class ReactionMetrics:
    """The reaction's instruments, in the operator's own registry."""

    def __init__(self, metrics: Metrics) -> None:
        self.quarantined = Gauge(
            "swarmops_gpu_nodes_quarantined",
            "GPU nodes SwarmOps quarantines (taints, or would in dry run), by level and mode.",
            ["level", "mode"],
            registry=metrics.registry,
        )
        self.actions = Counter(
            "swarmops_gpu_reactions",
            "Quarantine decisions carried out (or logged, in dry run), by Event reason.",
            ["reason", "mode"],
            registry=metrics.registry,
        )
        self.evictions = Counter(
            "swarmops_gpu_evictions",
            "Evictions of agent pods from CRITICAL nodes, by result.",
            ["result"],
            registry=metrics.registry,
        )


class GpuHealthReactor:
    def __init__(
        self,
        *,
        client: KubeClient,
        metrics: Metrics,
        policy: ReactionPolicy,
        nodes: kopf.Index[str, GpuNodeState],
        pool_pods: kopf.Index[Any, ObservedPod] | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.policy = policy
        self.metrics = ReactionMetrics(metrics)
        self._nodes = nodes
        self._pool_pods = pool_pods
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Node versions already written, so a stale index entry is not written twice.
        self._written: dict[str, str] = {}
        self._dry_memory: dict[str, NodeMemory] = {}

    @property
    def dry_run(self) -> bool:
        return self.policy.mode is Mode.DRY_RUN

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gpu-health-reactor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.turn()
            except Exception:  # one bad turn must not end the reactor
                logger.exception("GPU health reaction failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            self._wake.clear()

    def states(self) -> list[GpuNodeState]:
        states = [
            state for name in list(self._nodes) for state in list(self._nodes.get(name, ()))[-1:]
        ]
        if self.dry_run:
            # A dry run writes nothing to nodes, its own memory included: it lives here.
            states = [replace(s, memory=self._dry_memory.get(s.name, s.memory)) for s in states]
        return states

    async def turn(self) -> None:
        """Plan every GPU node and write what differs."""
        now = self._clock()
        states = self.states()
        plans = plan_fleet(states, now, self.policy)
        self._observe(plans)
        for state, plan in zip(states, plans, strict=True):
            await self._apply(state, plan)

    def _observe(self, plans: Iterable[NodePlan]) -> None:
        counts: dict[str, int] = {}
        for plan in plans:
            if plan.memory.quarantine is not None:
                counts[str(plan.memory.quarantine)] = counts.get(str(plan.memory.quarantine), 0) + 1
        for level in ("critical", "degraded", "unknown"):
            self.metrics.quarantined.labels(level, str(self.policy.mode)).set(counts.get(level, 0))

    async def _apply(self, state: GpuNodeState, plan: NodePlan) -> None:
        if self.dry_run:
            if plan.memory != state.memory:
                self._dry_memory[state.name] = plan.memory
                await self._tell(state, plan)
            return
        if plan.changes(state) and self._written.get(state.name) != state.resource_version:
            try:
                await self.client.patch(
                    NODES, state.name, node_patch(state, plan), patch_type=PatchType.JSON
                )
            except (Conflict, Invalid, NotFound):
                return  # the node changed (or went) since it was read: read it again
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
                logger.warning("Could not update GPU node %s: %s", state.name, error)
                return
            self._written[state.name] = state.resource_version
            await self._tell(state, plan)
        if plan.evict:
            await self._evict_agents(state.name)

    async def _tell(self, state: GpuNodeState, plan: NodePlan) -> None:
        for event in plan.events:
            await self._event(state, event)
        if plan.events:
            logger.log(
                logging.INFO if self.dry_run else logging.WARNING,
                "GPU node %s: %s%s",
                state.name,
                "; ".join(e.message for e in plan.events),
                " (dry run: nothing changed)" if self.dry_run else "",
            )

    async def _event(self, state: GpuNodeState, event: NodeEvent) -> None:
        self.metrics.actions.labels(event.reason, str(self.policy.mode)).inc()
        stamp = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        message = ("[dry run] " if self.dry_run else "") + event.message
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{state.name}.", "namespace": NODE_EVENT_NAMESPACE},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Node",
                "name": state.name,
                "uid": state.uid,
            },
            "reason": event.reason,
            "message": message[:1024],
            "type": "Warning" if event.warning else "Normal",
            "source": {"component": "swarmops"},
            "reportingComponent": "swarmops.dev/swarmops",
            "reportingInstance": "swarmops",
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self.client.create(EVENTS, body, NODE_EVENT_NAMESPACE)
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
            logger.debug("Could not post event %s on node %s: %s", event.reason, state.name, error)

    def _agent_pods_on(self, node: str) -> list[ObservedPod]:
        if self._pool_pods is None:
            return []
        return [
            pod
            for key in list(self._pool_pods)
            for pod in list(self._pool_pods.get(key, ()))
            if pod.node_name == node and pod.alive
        ]

    async def _evict_agents(self, node: str) -> None:
        for pod in self._agent_pods_on(node):
            eviction = {
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": pod.name, "namespace": pod.namespace},
            }
            path = PODS.path(pod.namespace, pod.name, "eviction")
            try:
                await self.client.request("POST", path, body=eviction)
            except NotFound:
                continue
            except TooManyRequests:
                self.metrics.evictions.labels("pdb_refused").inc()
                continue  # the disruption budget says not now: a later turn tries again
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
                self.metrics.evictions.labels("error").inc()
                logger.warning(
                    "Could not evict %s/%s from %s: %s", pod.namespace, pod.name, node, error
                )
                continue
            self.metrics.evictions.labels("evicted").inc()
            logger.warning(
                "Evicted agent pod %s/%s from GPU node %s", pod.namespace, pod.name, node
            )


async def reaction_policy(settings: Settings, client: KubeClient) -> ReactionPolicy:
    """The policy from the settings; dry run when the operator may not patch nodes (the
    chart grants it only with gpuHealth reaction on), said once, loudly."""
    mode = Mode(settings.gpu_reaction)
    if mode is Mode.ON:
        try:
            may_patch = await allowed(client, "patch", "nodes")
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
            logger.warning("Could not ask whether the operator may patch nodes: %s", error)
            may_patch = False
        if not may_patch:
            logger.warning(
                "The operator may not patch nodes, so it reacts to GPU health in dry run: it "
                "decides, logs and counts, but taints and evicts nothing. The Helm chart "
                "grants it with gpuHealth.reaction=on."
            )
            mode = Mode.DRY_RUN
    return ReactionPolicy(
        mode=mode,
        clean_reports=settings.gpu_clean_reports,
        unknown_grace_s=settings.gpu_unknown_grace,
        max_quarantined_percent=settings.gpu_max_quarantined_percent,
        window_s=settings.gpu_breaker_window,
    )
