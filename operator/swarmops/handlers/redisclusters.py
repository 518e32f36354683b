"""RedisCluster handlers: thin, level-triggered, idempotent.

kopf keeps two indices: the RedisClusters, and the StatefulSets that carry the
`swarmops.dev/redis-cluster` label (watched with that selector server-side; a pod's
readiness or deletion shows up as a change of its StatefulSet's status). Watch events
only put the cluster's key on the work queue. A reconcile lists the cluster's pods,
asks every Redis node what it knows, lets `plan_cluster` decide, and then writes: the
Kubernetes objects (server-side apply), the Redis commands, pod restarts, the status.

Redis itself changes without a Kubernetes event (failover, gossip), so a cluster that
is not settled is looked at again within a second, a settled one every resync period.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import kopf

from swarmops.api import RedisCluster, RedisClusterStatus
from swarmops.api.common import API_VERSION, ConditionStatus, ConditionType
from swarmops.api.rediscluster import RedisClusterPhase
from swarmops.core.conditions import set_condition
from swarmops.core.rediscluster import names, objects
from swarmops.core.rediscluster.objects import AuthSource
from swarmops.core.rediscluster.observed import Observation, RedisPod, ShardSet
from swarmops.core.rediscluster.plan import (
    Action,
    AddSlots,
    CloseSlot,
    ClusterPlan,
    DeletePod,
    Failover,
    Forget,
    Meet,
    MoveSlots,
    Replicate,
    plan_cluster,
)
from swarmops.handlers.context import Services, services_of
from swarmops.handlers.objects import InvalidObject, object_ref, parse_body, patch_status
from swarmops.handlers.queue import WorkQueue
from swarmops.kube.client import KubeClient
from swarmops.kube.errors import AlreadyExists, Conflict, NotFound
from swarmops.kube.events import EventRecorder, EventType, ObjectRef
from swarmops.kube.resources import (
    CONFIGMAPS,
    NETWORKPOLICIES,
    PODDISRUPTIONBUDGETS,
    PODS,
    REDISCLUSTERS,
    SECRETS,
    SERVICES,
    STATEFULSETS,
    Resource,
)
from swarmops.metrics import Metrics
from swarmops.redisnodes.connections import NodeAuth, NodeConnections
from swarmops.redisnodes.execute import Executor, Report
from swarmops.redisnodes.observe import observe_nodes

logger = logging.getLogger(__name__)

ClusterKey = tuple[str, str]  # (namespace, name)

CLUSTERS_INDEX = "swarmops_redisclusters"
STATEFULSETS_INDEX = "swarmops_redis_statefulsets"

RESOURCE_OF_KIND: Mapping[str, Resource] = {
    "ConfigMap": CONFIGMAPS,
    "Service": SERVICES,
    "NetworkPolicy": NETWORKPOLICIES,
    "PodDisruptionBudget": PODDISRUPTIONBUDGETS,
    "StatefulSet": STATEFULSETS,
}
#: An object applied with the same content is not applied again for this long (then it
#: is, to repair edits made behind the operator's back).
REAPPLY_AFTER = 300.0
#: How long a sent command counts as under way: the plan does not send it again until
#: Redis shows its effect or this passes.
IN_FLIGHT_SECONDS: Mapping[type, float] = {
    Meet: 3.0,
    Forget: 5.0,
    AddSlots: 3.0,
    Replicate: 5.0,
    Failover: 10.0,
    DeletePod: 5.0,
}
SECRET_CACHE_SECONDS = 60.0
#: After the operator changed something, it keeps looking every second this long even
#: once the cluster seems settled: gossip may still undo a step (a forgotten node
#: re-learned from a peer that had not forgotten it yet).
SETTLE_WATCH_SECONDS = 20.0
#: A failing command is reported as a Warning Event at most this often per cluster.
FAILURE_EVENT_INTERVAL = 60.0
GENERATED_PASSWORD_BYTES = 24


ClusterEntry = RedisCluster | InvalidObject


class AuthUnavailable(Exception):
    """The password (or the TLS CA) cannot be read: nothing can be done until it can."""


def parse_cluster(body: Any) -> ClusterEntry:
    return parse_body(RedisCluster, body)


def observe_statefulset(body: Mapping[str, Any]) -> ShardSet | None:
    labels = (body.get("metadata") or {}).get("labels") or {}
    shard = labels.get(names.SHARD_LABEL)
    if shard is None or not str(shard).isdigit():
        return None
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    return ShardSet(
        shard=int(shard),
        replicas=int(spec.get("replicas") or 0),
        update_revision=status.get("updateRevision"),
    )


def observe_redis_pod(cluster: str, body: Mapping[str, Any]) -> RedisPod | None:
    metadata = body.get("metadata") or {}
    placed = names.parse_pod_name(cluster, str(metadata.get("name") or ""))
    if placed is None:
        return None
    status = body.get("status") or {}
    running = any(
        container.get("name") == "redis" and "running" in (container.get("state") or {})
        for container in status.get("containerStatuses") or []
    )
    ready = any(
        condition.get("type") == "Ready" and condition.get("status") == "True"
        for condition in status.get("conditions") or []
    )
    labels = metadata.get("labels") or {}
    return RedisPod(
        name=str(metadata["name"]),
        uid=str(metadata.get("uid") or ""),
        shard=placed[0],
        ordinal=placed[1],
        ip=status.get("podIP") or None,
        running=running,
        ready=ready,
        terminating=metadata.get("deletionTimestamp") is not None,
        revision=labels.get(names.REVISION_LABEL),
        role_label=labels.get(names.ROLE_LABEL),
    )


def _digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class RedisController:
    """Reconciles RedisClusters; one reconcile per cluster at a time."""

    def __init__(
        self,
        *,
        client: KubeClient,
        events: EventRecorder,
        metrics: Metrics,
        services: Services,
        clusters: kopf.Index[ClusterKey, ClusterEntry],
        statefulsets: kopf.Index[ClusterKey, ShardSet],
    ) -> None:
        self._client = client
        self._events = events
        self._metrics = metrics
        self._resync = services.settings.resync_interval
        self._clusters = clusters
        self._statefulsets = statefulsets
        self._connections: dict[ClusterKey, NodeConnections] = {}
        self._applied: dict[tuple[str, str, str], tuple[str, float, str | None]] = {}
        self._in_flight: dict[ClusterKey, dict[str, float]] = {}
        self._secrets: dict[tuple[str, str, str], tuple[float, str]] = {}
        self._reported_invalid: dict[ClusterKey, tuple[str, int]] = {}
        self._last_problem: dict[ClusterKey, str] = {}
        self._failure_reported: dict[ClusterKey, float] = {}
        self._last_change: dict[ClusterKey, float] = {}
        self.queue: WorkQueue[ClusterKey] = WorkQueue(self.reconcile, workers=4)

    # --- triggers ---------------------------------------------------------------------------

    def cluster_changed(self, key: ClusterKey) -> None:
        self.queue.add(key)

    async def cluster_deleted(self, key: ClusterKey) -> None:
        # The garbage collector deletes what the cluster owned; only our memory goes.
        self.queue.forget(key)
        connections = self._connections.pop(key, None)
        if connections is not None:
            await connections.close()
        self._in_flight.pop(key, None)
        self._reported_invalid.pop(key, None)
        self._last_problem.pop(key, None)
        self._failure_reported.pop(key, None)
        self._last_change.pop(key, None)
        namespace, name = key
        for cached in [k for k in self._applied if k[1] == namespace and k[2].startswith(name)]:
            self._applied.pop(cached, None)
        self._metrics.redis.forget(namespace, name)

    def statefulset_changed(self, key: ClusterKey, name: str, deleted: bool) -> None:
        if deleted:
            self._applied.pop(("StatefulSet", key[0], name), None)
        self.queue.add(key)

    async def stop(self) -> None:
        await self.queue.stop()
        for connections in self._connections.values():
            with contextlib.suppress(Exception):
                await connections.close()
        self._connections.clear()

    # --- the reconcile ----------------------------------------------------------------------

    async def reconcile(self, key: ClusterKey) -> float | None:
        started = time.perf_counter()
        result = "error"
        try:
            delay = await self._reconcile(key)
            result = "ok"
            return delay
        finally:
            self._metrics.reconciles.labels("RedisCluster", result).inc()
            self._metrics.reconcile_seconds.labels("RedisCluster").observe(
                time.perf_counter() - started
            )

    async def _reconcile(self, key: ClusterKey) -> float | None:
        entry = next(iter(self._clusters.get(key, ())), None)
        if entry is None:
            await self.cluster_deleted(key)
            return None
        if isinstance(entry, InvalidObject):
            await self._report_invalid(key, entry)
            return None
        cluster = entry
        if cluster.metadata.deletion_timestamp is not None:
            return None  # going away: what it owns goes with it
        auth = objects.auth_source(cluster)
        try:
            node_auth = await self._node_auth(cluster, auth)
        except AuthUnavailable as error:
            await self._report_blocked(cluster, "AuthUnavailable", str(error))
            return 10.0
        connections = await self._connections_for(key, node_auth)
        pods = await self._pods(cluster)
        shard_sets = {s.shard: s for s in self._statefulsets.get(key, ())}
        views, unreachable = await observe_nodes(connections, pods)
        observation = Observation(
            cluster=cluster.metadata.name,
            pods=pods,
            views=views,
            unreachable=unreachable,
            statefulsets=shard_sets,
            recorded={n.node_id: n.pod_name for n in cluster.status.nodes if n.node_id},
        )
        now = time.monotonic()
        in_flight = {k: t for k, t in self._in_flight.get(key, {}).items() if t > now}
        self._in_flight[key] = in_flight
        plan = plan_cluster(cluster, observation, now=_utcnow(), in_flight=frozenset(in_flight))
        await self._apply_objects(cluster, plan.shard_sizes, auth, shard_sets)
        removed = await self._remove_shards(cluster, shard_sets, plan.shard_sizes)
        ips = {pod.name: pod.ip for pod in pods if pod.ip}
        masters = [
            pod for pod, view in views.items() if view.myself.is_master and view.myself.slots
        ]
        report = await Executor(connections, ips, masters).run(plan.actions)
        restarted = await self._restart_pods(cluster, plan.actions)
        report.done += restarted
        if report.done or report.failed:
            logger.info(
                "RedisCluster %s/%s: %s: %s%s",
                cluster.metadata.namespace,
                cluster.metadata.name,
                plan.step,
                _summary(report.done) or "nothing done",
                f"; failed: {_summary([a for a, _ in report.failed])} ({report.failed[0][1]})"
                if report.failed
                else "",
            )
        for action in report.done:
            seconds = IN_FLIGHT_SECONDS.get(type(action))
            if seconds:
                in_flight[action.key] = time.monotonic() + seconds
        await connections.keep_only(ips.values())
        await self._label_roles(cluster, pods, plan)
        status = plan.status.model_copy(
            update={
                "endpoint": f"{names.client_service_name(cluster.metadata.name)}."
                f"{cluster.metadata.namespace}.svc:{names.CLIENT_PORT}",
                "auth_secret_name": auth.secret_name if auth is not None else None,
            }
        )
        await self._write_status(cluster, status)
        await self._record(cluster, plan, report, removed)
        self._observe(cluster, plan, report)
        if report.done or report.failed:
            self._last_change[key] = time.monotonic()
        delay = plan.requeue_after if plan.step != "ready" else self._resync
        since_change = time.monotonic() - self._last_change.get(key, -SETTLE_WATCH_SECONDS)
        if report.failed or since_change < SETTLE_WATCH_SECONDS:
            delay = min(delay, 1.0)
        return delay

    # --- credentials ------------------------------------------------------------------------

    async def _node_auth(self, cluster: RedisCluster, auth: AuthSource | None) -> NodeAuth:
        password = await self._password(cluster, auth) if auth is not None else None
        tls_ca = None
        tls = cluster.spec.tls
        if tls.enabled and tls.secret_name:
            tls_ca = await self._secret_value(cluster, tls.secret_name, "ca.crt")
        return NodeAuth(password=password, tls_ca=tls_ca)

    async def _password(self, cluster: RedisCluster, auth: AuthSource) -> str:
        generated = cluster.spec.auth.secret_ref is None
        if generated:
            with contextlib.suppress(AuthUnavailable):
                return await self._secret_value(cluster, auth.secret_name, auth.key)
            body = objects.auth_secret(cluster, secrets.token_hex(GENERATED_PASSWORD_BYTES))
            try:
                await self._client.create(SECRETS, body, cluster.metadata.namespace)
                logger.info(
                    "RedisCluster %s/%s: generated a password into Secret %s",
                    cluster.metadata.namespace,
                    cluster.metadata.name,
                    auth.secret_name,
                )
            except AlreadyExists:
                pass  # made meanwhile (or by an earlier run): use that one
        return await self._secret_value(cluster, auth.secret_name, auth.key)

    async def _secret_value(self, cluster: RedisCluster, name: str, key: str) -> str:
        namespace = cluster.metadata.namespace or ""
        cache_key = (namespace, name, key)
        cached = self._secrets.get(cache_key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            secret = await self._client.get(SECRETS, name, namespace)
        except NotFound:
            raise AuthUnavailable(f"Secret {name} does not exist") from None
        raw = (secret.get("data") or {}).get(key)
        if not raw:
            raise AuthUnavailable(f"Secret {name} has no key {key}")
        value = base64.b64decode(raw).decode()
        self._secrets[cache_key] = (time.monotonic() + SECRET_CACHE_SECONDS, value)
        return value

    async def _connections_for(self, key: ClusterKey, auth: NodeAuth) -> NodeConnections:
        """The cluster's node clients; rebuilt when the password or the CA changed."""
        connections = self._connections.get(key)
        if connections is None or connections.auth != auth:
            if connections is not None:
                await connections.close()
            connections = NodeConnections(auth)
            self._connections[key] = connections
        return connections

    # --- Kubernetes objects -----------------------------------------------------------------

    async def _pods(self, cluster: RedisCluster) -> list[RedisPod]:
        bodies = await self._client.list(
            PODS,
            cluster.metadata.namespace,
            label_selector=f"{names.CLUSTER_LABEL}={cluster.metadata.name}",
        )
        pods = []
        for body in bodies:
            owners = (body.get("metadata") or {}).get("ownerReferences") or []
            if not any(owner.get("kind") == "StatefulSet" for owner in owners):
                continue  # only pods of our StatefulSets are Redis nodes of this cluster
            pod = observe_redis_pod(cluster.metadata.name, body)
            if pod is not None:
                pods.append(pod)
        return pods

    async def _apply_objects(
        self,
        cluster: RedisCluster,
        sizes: Mapping[int, int],
        auth: AuthSource | None,
        observed: Mapping[int, ShardSet],
    ) -> None:
        desired = objects.desired_objects(cluster, sizes, auth)
        for body in desired.objects:
            await self._apply(body)
        for shard, body in desired.statefulsets.items():
            # Someone scaled a StatefulSet behind our back: apply again now, not in minutes.
            drifted = shard in observed and observed[shard].replicas != sizes[shard]
            uid = await self._apply(body, force=drifted)
            if desired.budgets and uid:
                await self._apply(desired.budget(cluster, shard, uid))

    async def _apply(self, body: dict[str, Any], *, force: bool = False) -> str | None:
        """Server-side apply, skipped when this exact body was applied recently (unless
        `force`); the object's uid (None when skipped and not known)."""
        kind = body["kind"]
        cache_key = (kind, body["metadata"]["namespace"], body["metadata"]["name"])
        digest = _digest(body)
        now = time.monotonic()
        cached = self._applied.get(cache_key)
        if not force and cached is not None and cached[0] == digest and cached[1] > now:
            return cached[2]
        result = await self._client.apply(RESOURCE_OF_KIND[kind], body)
        uid = (result.get("metadata") or {}).get("uid")
        self._applied[cache_key] = (digest, now + REAPPLY_AFTER, uid)
        return uid

    async def _remove_shards(
        self,
        cluster: RedisCluster,
        existing: Mapping[int, ShardSet],
        sizes: Mapping[int, int],
    ) -> list[int]:
        """Delete the StatefulSets (and budgets) of shards the plan no longer keeps: it
        keeps a shard until none of its nodes owns a slot or holds a key."""
        removed = []
        namespace = cluster.metadata.namespace or ""
        for shard in sorted(set(existing) - set(sizes)):
            name = names.statefulset_name(cluster.metadata.name, shard)
            # Its budget is owned by it and goes with it (garbage collection).
            with contextlib.suppress(NotFound):
                await self._client.delete(STATEFULSETS, name, namespace)
            self._applied.pop((STATEFULSETS.kind, namespace, name), None)
            budget = names.pdb_name(cluster.metadata.name, shard)
            self._applied.pop((PODDISRUPTIONBUDGETS.kind, namespace, budget), None)
            removed.append(shard)
        return removed

    async def _restart_pods(self, cluster: RedisCluster, actions: Sequence[Action]) -> list[Action]:
        done: list[Action] = []
        for action in actions:
            if not isinstance(action, DeletePod):
                continue
            try:
                await self._client.delete(
                    PODS, action.pod, cluster.metadata.namespace, uid=action.uid
                )
            except (NotFound, Conflict):
                continue  # already replaced
            done.append(action)
        return done

    async def _label_roles(
        self, cluster: RedisCluster, pods: Iterable[RedisPod], plan: ClusterPlan
    ) -> None:
        """Keep `swarmops.dev/redis-role` on each pod: which one is the master changes."""
        roles = {
            node.pod_name: node.role.value.lower()
            for node in plan.status.nodes
            if node.role is not None
        }
        for pod in pods:
            role = roles.get(pod.name)
            if role is None or pod.terminating or pod.role_label == role:
                continue
            with contextlib.suppress(NotFound, Conflict):
                await self._client.patch(
                    PODS,
                    pod.name,
                    {"metadata": {"labels": {names.ROLE_LABEL: role}}},
                    namespace=cluster.metadata.namespace,
                )

    async def _write_status(self, cluster: RedisCluster, status: RedisClusterStatus) -> None:
        wire = status.to_wire()
        if wire == cluster.status.to_wire():
            return
        await patch_status(self._client, REDISCLUSTERS, cluster, wire)

    # --- what people read -------------------------------------------------------------------

    async def _record(
        self, cluster: RedisCluster, plan: ClusterPlan, report: Report, removed: Sequence[int]
    ) -> None:
        key = _key(cluster.metadata.namespace, cluster.metadata.name)
        about = object_ref(cluster)
        for notice in plan.notices:
            kind = EventType.WARNING if notice.warning else EventType.NORMAL
            await self._events.record(about, notice.reason, notice.message, kind)
        for reason, message, kind in _action_events(report):
            await self._events.record(about, reason, message, kind)
        if removed:
            shards = ", ".join(str(s) for s in removed)
            await self._events.record(
                about, "ShardsRemoved", f"Shards {shards} drained and removed"
            )
        if report.failed:
            last = self._failure_reported.get(key, 0.0)
            if time.monotonic() - last > FAILURE_EVENT_INTERVAL:
                self._failure_reported[key] = time.monotonic()
                action, error = report.failed[0]
                more = f" (and {len(report.failed) - 1} more)" if len(report.failed) > 1 else ""
                await self._events.record(
                    about,
                    "ClusterCommandFailed",
                    f"{type(action).__name__} failed: {error}{more}; retrying",
                    EventType.WARNING,
                )
        problem = plan.problems[0] if plan.problems else None
        previous = self._last_problem.get(key)
        if problem is not None and problem.reason != previous:
            await self._events.record(about, problem.reason, problem.message, EventType.WARNING)
        if problem is None and previous is not None:
            await self._events.record(about, "Recovered", "no problem found any more")
        if problem is None:
            self._last_problem.pop(key, None)
        else:
            self._last_problem[key] = problem.reason

    def _observe(self, cluster: RedisCluster, plan: ClusterPlan, report: Report) -> None:
        redis = self._metrics.redis
        labels = (cluster.metadata.namespace or "", cluster.metadata.name)
        status = plan.status
        redis.cluster_state.labels(*labels).set(1 if status.cluster_state == "ok" else 0)
        redis.shards_ready.labels(*labels).set(status.ready_shards)
        redis.slots_ok.labels(*labels).set(status.slots_ok)
        if report.slots_moved:
            redis.slot_migrations.labels(*labels).inc(report.slots_moved)
        if report.keys_moved:
            redis.keys_moved.labels(*labels).inc(report.keys_moved)
        for action in report.done:
            if isinstance(action, Failover):
                redis.failovers.labels(*labels, "forced" if action.force else "graceful").inc()
        for kind, count in Counter(type(a).__name__ for a in report.done).items():
            redis.actions.labels(*labels, kind.lower(), "ok").inc(count)
        for kind, count in Counter(type(a).__name__ for a, _ in report.failed).items():
            redis.actions.labels(*labels, kind.lower(), "error").inc(count)

    async def _report_blocked(self, cluster: RedisCluster, reason: str, message: str) -> None:
        key = _key(cluster.metadata.namespace, cluster.metadata.name)
        now = _utcnow()
        conditions = list(cluster.status.conditions)
        generation = cluster.metadata.generation or 0
        for kind, value in ((ConditionType.DEGRADED, True), (ConditionType.READY, False)):
            conditions = set_condition(
                conditions,
                kind,
                ConditionStatus.TRUE if value else ConditionStatus.FALSE,
                reason,
                message,
                now=now,
                observed_generation=generation,
            )
        status = cluster.status.model_copy(
            update={
                "conditions": conditions,
                "observed_generation": generation,
                "phase": RedisClusterPhase.DEGRADED
                if cluster.status.bootstrapped_at
                else RedisClusterPhase.PENDING,
            }
        )
        await self._write_status(cluster, status)
        if self._last_problem.get(key) != reason:
            self._last_problem[key] = reason
            await self._events.record(object_ref(cluster), reason, message, EventType.WARNING)

    async def _report_invalid(self, key: ClusterKey, cluster: InvalidObject) -> None:
        if self._reported_invalid.get(key) == (cluster.uid, cluster.generation):
            return
        self._reported_invalid[key] = (cluster.uid, cluster.generation)
        logger.error(
            "RedisCluster %s/%s is invalid: %s", cluster.namespace, cluster.name, cluster.message
        )
        about = ObjectRef(API_VERSION, "RedisCluster", cluster.namespace, cluster.name, cluster.uid)
        await self._events.record(about, "InvalidSpec", cluster.message, EventType.WARNING)


def _summary(actions: Sequence[Action]) -> str:
    counts = Counter(type(action).__name__ for action in actions)
    return ", ".join(f"{kind} x{count}" for kind, count in sorted(counts.items()))


def _action_events(report: Report) -> list[tuple[str, str, EventType]]:
    """One Event per kind of action done in a round, never one per command."""
    done = report.done
    events: list[tuple[str, str, EventType]] = []
    meets = [a for a in done if isinstance(a, Meet)]
    if meets:
        new = sum(1 for a in meets if a.node_id is None)
        moved = len(meets) - new
        parts = []
        if new:
            parts.append(f"introduced {new} new nodes")
        if moved:
            parts.append(f"told peers {moved} new addresses of known nodes")
        events.append(("NodesMet", "; ".join(parts).capitalize(), EventType.NORMAL))
    forgets = [a for a in done if isinstance(a, Forget)]
    if forgets:
        ids = ", ".join(a.node_id[:8] for a in forgets)
        events.append(("NodesForgotten", f"Forgot nodes that are gone: {ids}", EventType.NORMAL))
    slots = [a for a in done if isinstance(a, AddSlots)]
    if slots:
        total = sum(len(r) for a in slots for r in a.ranges)
        pods = ", ".join(a.pod for a in slots)
        events.append(("SlotsAssigned", f"Assigned {total} slots to {pods}", EventType.NORMAL))
    replicas = [a for a in done if isinstance(a, Replicate)]
    if replicas:
        pods = ", ".join(a.pod for a in replicas)
        events.append(
            ("ReplicasAttached", f"{pods} now replicate their shard's master", EventType.NORMAL)
        )
    for action in done:
        if isinstance(action, Failover):
            how = "Forced failover" if action.force else "Failover"
            events.append(
                (
                    "FailoverStarted",
                    f"{how} to {action.pod} (master {action.old_master[:8]}): {action.reason}",
                    EventType.WARNING if action.force else EventType.NORMAL,
                )
            )
    moves = [a for a in done if isinstance(a, MoveSlots)]
    if moves:
        count = sum(len(a.slots) for a in moves)
        pairs = sorted({f"{a.source_pod} -> {a.target_pod}" for a in moves})
        events.append(
            (
                "SlotsMigrated",
                f"Moved {count} slots ({report.keys_moved} keys): {', '.join(pairs)}",
                EventType.NORMAL,
            )
        )
    closed = [a for a in done if isinstance(a, CloseSlot)]
    if closed:
        events.append(
            (
                "OpenSlotsClosed",
                f"Finished or cleared {len(closed)} slots left migrating or importing",
                EventType.NORMAL,
            )
        )
    for action in done:
        if isinstance(action, DeletePod):
            events.append(
                ("PodRestarted", f"Restarted {action.pod}: {action.reason}", EventType.NORMAL)
            )
    return events


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key(namespace: str | None, name: str) -> ClusterKey:
    return (namespace or "", name)


# --- kopf handlers ---------------------------------------------------------------------------


async def index_clusters(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[ClusterKey, ClusterEntry]:
    return {_key(namespace, name): parse_cluster(body)}


async def index_statefulsets(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[ClusterKey, ShardSet] | None:
    observed = observe_statefulset(body)
    if observed is None:
        return None
    return {_key(namespace, labels[names.CLUSTER_LABEL]): observed}


async def on_cluster_event(
    event: kopf.RawEvent, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    controller = services_of(memo).redis_controller()
    if event.get("type") == "DELETED":
        await controller.cluster_deleted(_key(namespace, name))
    else:
        controller.cluster_changed(_key(namespace, name))


async def on_statefulset_event(
    event: kopf.RawEvent,
    namespace: str | None,
    name: str,
    labels: kopf.Labels,
    memo: Any,
    **_: Any,
) -> None:
    controller = services_of(memo).redis_controller()
    deleted = event.get("type") == "DELETED"
    controller.statefulset_changed(_key(namespace, labels[names.CLUSTER_LABEL]), name, deleted)


def register(registry: kopf.OperatorRegistry) -> None:
    """Register the RedisCluster handlers in `registry` (ours, not kopf's global one)."""
    group, version = REDISCLUSTERS.group, REDISCLUSTERS.version
    owned = {names.CLUSTER_LABEL: kopf.PRESENT}
    kopf.index(group, version, REDISCLUSTERS.plural, id=CLUSTERS_INDEX, registry=registry)(
        index_clusters
    )
    kopf.index(
        "apps", "v1", "statefulsets", id=STATEFULSETS_INDEX, labels=owned, registry=registry
    )(index_statefulsets)
    kopf.on.event(group, version, REDISCLUSTERS.plural, registry=registry)(on_cluster_event)
    kopf.on.event("apps", "v1", "statefulsets", labels=owned, registry=registry)(
        on_statefulset_event
    )
