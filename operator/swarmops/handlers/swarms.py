"""Swarm handlers: thin, level-triggered, idempotent.

kopf indexes the Swarms; the AgentPools and RedisClusters come from the pool and Redis
controllers' indices. A watch event of a swarm, or of a pool or cluster that carries the
`swarmops.dev/swarm` label (or that a swarm references), only puts the swarm's key on a
work queue. The reconcile asks `core.swarm.plan_swarm` and writes: PriorityClasses,
the RedisCluster and the AgentPools by server-side apply (field manager `swarmops`),
the status, the Events, and the swarm's own finalizer.

The finalizer (`swarmops.dev/swarm-shutdown`) is added and removed here, by patch, not
by a kopf on.delete handler: no kopf state is written onto the swarm. It holds a
deleted swarm until its pools have stopped in reverse order and its RedisCluster is
gone; then the garbage collector removes the (stopped) AgentPools through their owner
references.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeVar

import kopf

from swarmops.api import AgentPool, RedisCluster, Swarm, SwarmStatus
from swarmops.api.common import API_VERSION, ConditionStatus
from swarmops.core import swarm as core
from swarmops.core.conditions import set_condition
from swarmops.core.pods import ObservedPod, PodState
from swarmops.handlers.context import Services, services_of
from swarmops.handlers.objects import InvalidObject, object_ref, parse_body, patch_status
from swarmops.handlers.queue import WorkQueue
from swarmops.kube.access import allowed
from swarmops.kube.client import KubeClient
from swarmops.kube.errors import ApiError, Conflict, NotFound
from swarmops.kube.events import EventRecorder, EventType, ObjectRef
from swarmops.kube.resources import AGENTPOOLS, PRIORITYCLASSES, REDISCLUSTERS, SWARMS
from swarmops.metrics import Metrics

logger = logging.getLogger(__name__)

SwarmKey = tuple[str, str]  # (namespace, name)
SWARMS_INDEX: Final = "swarmops_swarms"
FIELD_MANAGER: Final = "swarmops"
#: A PriorityClass applied once is not applied again for this long.
PRIORITY_CLASS_REAPPLY: Final = 600.0

T = TypeVar("T")


SwarmEntry = Swarm | InvalidObject


def parse_swarm(body: Any) -> SwarmEntry:
    return parse_body(Swarm, body)


def replicas_held_elsewhere(body: Mapping[str, Any]) -> bool:
    """Whether a field manager other than the swarm's owns the pool's spec.replicas."""
    for entry in (body.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER:
            continue
        spec = ((entry.get("fieldsV1") or {}).get("f:spec")) or {}
        if "f:replicas" in spec:
            return True
    return False


class SwarmController:
    """Reconciles Swarms; one reconcile per swarm at a time."""

    def __init__(
        self,
        *,
        client: KubeClient,
        events: EventRecorder,
        metrics: Metrics,
        services: Services,
        swarms: kopf.Index[SwarmKey, SwarmEntry],
        pools: kopf.Index[tuple[str, str], Any],
        pool_pods: kopf.Index[tuple[str, str], ObservedPod],
        clusters: kopf.Index[tuple[str, str], Any] | None,
    ) -> None:
        self._client = client
        self._events = events
        self._metrics = metrics
        self._resync = services.settings.resync_interval
        self._swarms = swarms
        self._pools = pools
        self._pool_pods = pool_pods
        self._clusters = clusters
        # Pools whose spec.replicas another manager holds, from their watch events.
        self._held_elsewhere: dict[tuple[str, str], bool] = {}
        # The status this process last wrote per swarm (uid, status): the cache may not
        # show it yet, and Events are derived from the change against it.
        self._written: dict[SwarmKey, tuple[str, SwarmStatus]] = {}
        self._reported_invalid: dict[SwarmKey, tuple[str, int]] = {}
        self._priority_classes: dict[str, float] = {}
        self._may_manage_priority_classes: bool | None = None
        self.queue: WorkQueue[SwarmKey] = WorkQueue(self.reconcile, workers=4)

    # --- triggers ---------------------------------------------------------------------------

    def swarm_changed(self, key: SwarmKey) -> None:
        self.queue.add(key)

    def swarm_deleted(self, key: SwarmKey) -> None:
        self.queue.forget(key)
        self._written.pop(key, None)
        self._reported_invalid.pop(key, None)
        self._metrics.forget_swarm(*key)

    def child_changed(
        self, namespace: str, name: str, labels: Mapping[str, str], body: Mapping[str, Any] | None
    ) -> None:
        """An AgentPool or RedisCluster changed: its swarm, and any swarm that references it,
        looks again."""
        if body is None:
            self._held_elsewhere.pop((namespace, name), None)
        else:
            self._held_elsewhere[(namespace, name)] = replicas_held_elsewhere(body)
        swarm = labels.get(core.SWARM_LABEL)
        if swarm:
            self.queue.add((namespace, swarm))
        for key, entries in self._swarms.items():
            if key[0] != namespace:
                continue
            for entry in entries:
                if isinstance(entry, Swarm) and _references(entry, name):
                    self.queue.add(key)

    async def stop(self) -> None:
        await self.queue.stop()

    # --- the reconcile ----------------------------------------------------------------------

    async def reconcile(self, key: SwarmKey) -> float | None:
        started = time.perf_counter()
        result = "error"
        try:
            delay = await self._reconcile(key)
            result = "ok"
            return delay
        finally:
            self._metrics.reconciles.labels("Swarm", result).inc()
            self._metrics.reconcile_seconds.labels("Swarm").observe(time.perf_counter() - started)

    async def _reconcile(self, key: SwarmKey) -> float | None:
        entry = _single(self._swarms.get(key, ()))
        if entry is None:
            self.swarm_deleted(key)
            return None
        if isinstance(entry, InvalidObject):
            await self._report_invalid(key, entry)
            return None
        swarm = entry
        deleting = swarm.metadata.deletion_timestamp is not None
        if deleting and core.FINALIZER not in swarm.metadata.finalizers:
            return None  # ours is done; others' finalizers are theirs
        if not deleting and core.FINALIZER not in swarm.metadata.finalizers:
            await self._set_finalizer(swarm, add=True)
        written = self._written.get(key)
        if written is not None and written[0] == swarm.metadata.uid:
            swarm = swarm.model_copy(update={"status": written[1]})
        namespace = swarm.metadata.namespace or ""
        pools = self._observed_pools(namespace)
        redis = self._observed_redis(namespace, core.redis_name(swarm))
        plan = core.plan_swarm(
            swarm,
            pools,
            redis,
            now=_utcnow(),
            priority_classes=await self._priority_classes_allowed(),
        )
        failure = await self._write_children(swarm, plan)
        status = plan.status
        if failure is not None:
            status = status.model_copy(
                update={
                    "conditions": set_condition(
                        status.conditions,
                        "Degraded",
                        ConditionStatus.TRUE,
                        "ChildWriteFailed",
                        failure,
                        now=_utcnow(),
                        observed_generation=swarm.metadata.generation,
                    )
                }
            )
        await self._write_status(key, swarm, status)
        for event in plan.events:
            await self._events.record(
                object_ref(swarm),
                event.reason,
                event.message,
                EventType.WARNING if event.warning else EventType.NORMAL,
            )
        if failure is not None:
            await self._events.record(
                object_ref(swarm), "ChildWriteFailed", failure, EventType.WARNING
            )
        self._metrics.observe_swarm(
            namespace, swarm.metadata.name, ready_pools=status.ready_pools, pools=status.total_pools
        )
        if plan.finished:
            for name in plan.release:
                await self._release(swarm, name)
            await self._set_finalizer(swarm, add=False)
            return None
        delay = self._resync
        if plan.recheck_after is not None:
            delay = min(delay, plan.recheck_after)
        if failure is not None or deleting or swarm.spec.suspend:
            # Stopping: the pools' status changes bring us back; this is the safety net.
            delay = min(delay, 5.0)
        return delay

    def _observed_pools(self, namespace: str) -> dict[str, core.ObservedPool]:
        found: dict[str, core.ObservedPool] = {}
        for (ns, name), entries in self._pools.items():
            if ns != namespace:
                continue
            pool = _single(entries)
            if isinstance(pool, AgentPool):
                held = self._held_elsewhere.get((ns, name), False)
                left = sum(
                    1
                    for pod in self._pool_pods.get((ns, name), ())
                    if pod.state is not PodState.CLAIMED
                    and pod.phase not in ("Succeeded", "Failed")
                )
                found[name] = core.ObservedPool(pool, replicas_held_elsewhere=held, pods_left=left)
        return found

    def _observed_redis(self, namespace: str, name: str | None) -> RedisCluster | None:
        if name is None or self._clusters is None:
            return None
        cluster = _single(self._clusters.get((namespace, name), ()))
        return cluster if isinstance(cluster, RedisCluster) else None

    async def _priority_classes_allowed(self) -> bool:
        if self._may_manage_priority_classes is None:
            try:
                self._may_manage_priority_classes = all(
                    [
                        await allowed(
                            self._client, verb, PRIORITYCLASSES.plural, group=PRIORITYCLASSES.group
                        )
                        for verb in ("create", "patch")
                    ]
                )
            except ApiError as error:
                logger.warning("Could not ask about PriorityClass access: %s", error)
                return False
            if not self._may_manage_priority_classes:
                logger.warning(
                    "The operator may not create and patch PriorityClasses, so swarm pools get "
                    "no priorityClassName (the Helm chart grants it with "
                    "swarm.priorityClasses: true)."
                )
        return self._may_manage_priority_classes

    async def _write_children(self, swarm: Swarm, plan: core.SwarmPlan) -> str | None:
        """Apply what the plan says; the first refusal, as a sentence, if any."""
        failures: list[str] = []
        now = time.monotonic()
        for body in plan.priority_classes:
            name = body["metadata"]["name"]
            if self._priority_classes.get(name, 0.0) > now:
                continue
            try:
                await self._client.apply(PRIORITYCLASSES, body, field_manager=FIELD_MANAGER)
                self._priority_classes[name] = now + PRIORITY_CLASS_REAPPLY
            except ApiError as error:
                failures.append(f"PriorityClass {name}: {error.message}")
        if plan.redis is not None:
            try:
                await self._client.apply(REDISCLUSTERS, plan.redis, field_manager=FIELD_MANAGER)
            except ApiError as error:
                failures.append(f"RedisCluster {plan.redis['metadata']['name']}: {error.message}")
        for apply in plan.pools:
            name = apply.body["metadata"]["name"]
            try:
                await self._client.apply(
                    AGENTPOOLS, apply.body, field_manager=apply.field_manager or FIELD_MANAGER
                )
            except ApiError as error:
                failures.append(f"AgentPool {name}: {error.message}")
        if plan.delete_redis is not None:
            try:
                await self._client.delete(
                    REDISCLUSTERS, plan.delete_redis, swarm.metadata.namespace
                )
            except NotFound:
                pass  # gone already: the goal
            except ApiError as error:
                failures.append(f"RedisCluster {plan.delete_redis}: {error.message}")
        if failures:
            logger.warning(
                "Swarm %s/%s: %s", swarm.metadata.namespace, swarm.metadata.name, failures[0]
            )
        return "; ".join(failures)[:1000] or None

    async def _release(self, swarm: Swarm, pool: str) -> None:
        """Drop this swarm's labels and annotations from a pool it only referenced."""
        body = {
            "apiVersion": API_VERSION,
            "kind": "AgentPool",
            "metadata": {"name": pool, "namespace": swarm.metadata.namespace},
        }
        with contextlib.suppress(NotFound):
            await self._client.apply(
                AGENTPOOLS, body, field_manager=core.referenced_pool_manager(swarm.metadata.name)
            )

    async def _set_finalizer(self, swarm: Swarm, *, add: bool) -> None:
        finalizers = [f for f in swarm.metadata.finalizers if f != core.FINALIZER]
        if add:
            finalizers.append(core.FINALIZER)
        patch = {
            "metadata": {
                "finalizers": finalizers,
                # An optimistic lock: never drop a finalizer somebody added meanwhile.
                "resourceVersion": swarm.metadata.resource_version,
            }
        }
        with contextlib.suppress(NotFound):
            try:
                await self._client.patch(
                    SWARMS, swarm.metadata.name, patch, namespace=swarm.metadata.namespace
                )
            except Conflict:
                # Changed meanwhile: its watch event brings us back with the new version.
                self.queue.add((swarm.metadata.namespace or "", swarm.metadata.name))

    async def _write_status(self, key: SwarmKey, swarm: Swarm, status: SwarmStatus) -> None:
        wire = status.to_wire()
        if wire == swarm.status.to_wire():
            return
        if await patch_status(self._client, SWARMS, swarm, wire):
            self._written[key] = (swarm.metadata.uid or "", status)

    async def _report_invalid(self, key: SwarmKey, swarm: InvalidObject) -> None:
        if self._reported_invalid.get(key) == (swarm.uid, swarm.generation):
            return
        self._reported_invalid[key] = (swarm.uid, swarm.generation)
        logger.error("Swarm %s/%s is invalid: %s", swarm.namespace, swarm.name, swarm.message)
        about = ObjectRef(API_VERSION, "Swarm", swarm.namespace, swarm.name, swarm.uid)
        now = _utcnow()
        conditions = [
            set_condition(
                [],
                kind,
                ConditionStatus.TRUE if value else ConditionStatus.FALSE,
                "InvalidSpec",
                swarm.message,
                now=now,
                observed_generation=swarm.generation,
            )[0].to_wire()
            for kind, value in (("InvalidSpec", True), ("Ready", False), ("Degraded", True))
        ]
        with contextlib.suppress(NotFound):
            await self._client.patch(
                SWARMS,
                swarm.name,
                {
                    "status": {
                        "observedGeneration": swarm.generation,
                        "phase": "Degraded",
                        "conditions": conditions,
                    }
                },
                namespace=swarm.namespace,
                subresource="status",
            )
        await self._events.record(about, "InvalidSpec", swarm.message, EventType.WARNING)


def _references(swarm: Swarm, name: str) -> bool:
    return any(
        pool.pool_ref is not None and pool.pool_ref.name == name for pool in swarm.spec.pools
    ) or (
        swarm.spec.redis is not None
        and swarm.spec.redis.cluster_ref is not None
        and swarm.spec.redis.cluster_ref.name == name
    )


def _single(values: Iterable[T]) -> T | None:
    return next(iter(values), None)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# --- kopf handlers ---------------------------------------------------------------------------


async def index_swarms(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[SwarmKey, SwarmEntry]:
    return {(namespace or "", name): parse_swarm(body)}


async def on_swarm_event(
    event: kopf.RawEvent, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    controller = services_of(memo).swarm_controller()
    if event.get("type") == "DELETED":
        controller.swarm_deleted((namespace or "", name))
    else:
        controller.swarm_changed((namespace or "", name))


async def on_child_event(
    *,
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    labels: kopf.Labels,
    memo: Any,
    **_: Any,
) -> None:
    controller = services_of(memo).swarm_controller()
    deleted = event.get("type") == "DELETED"
    controller.child_changed(namespace or "", name, labels, None if deleted else body)


def register(registry: kopf.OperatorRegistry, *, redis_clusters: bool = True) -> None:
    """Register the Swarm handlers in `registry` (ours, not kopf's global one)."""
    group, version = SWARMS.group, SWARMS.version
    kopf.index(group, version, SWARMS.plural, id=SWARMS_INDEX, registry=registry)(index_swarms)
    kopf.on.event(group, version, SWARMS.plural, registry=registry)(on_swarm_event)
    kopf.on.event(group, version, AGENTPOOLS.plural, id="swarm-pools", registry=registry)(
        on_child_event
    )
    # Pod deletions reach the swarms through pools.on_pod_event: one pod handler.
    if redis_clusters:
        kopf.on.event(group, version, REDISCLUSTERS.plural, id="swarm-redis", registry=registry)(
            on_child_event
        )
