"""The Swarm reconcile, decided: pure functions from a swarm and what exists to what should.

`plan_swarm` takes the Swarm, the AgentPools and the RedisCluster as the cache shows
them, and the time; it returns the AgentPools and the RedisCluster to apply, the
PriorityClasses its pools need, what to delete, the status, and the Events. The
handler (handlers/swarms.py) only reads, calls this and writes.

Start. `dependsOn` between pools is a DAG; the swarm's RedisCluster is a dependency of
every pool. A pool whose dependencies are not all Ready is *gated*: its AgentPool exists
but is held at 0 replicas and an empty warm pool. Once it is let go it stays started: a
dependency that blips later does not take its dependents down again (the status
remembers `startedAt`). A pool waiting longer than `startup.dependencyTimeoutSeconds`
makes the swarm Degraded; it keeps waiting, looked at again after a delay that doubles.

Budget. Each pool asks for (replicas + warm) pods of its template's requests. When the
asks exceed the budget, active replicas are handed out first, then warm pods, each by
priority (higher first) and, within a priority, by weight (water-filling: the pool with
the fewest pods per unit of weight gets the next one). So warm pools shrink first and
low priorities give way first. Referenced pools (poolRef) are not the swarm's to scale:
what they ask is counted first, as fixed use.

Stop (`suspend: true`, or deletion behind the swarm's finalizer). With the
ReverseDependencies order a pool is scaled to 0 only once every pool that depends on it
has stopped (status: no active and no warm pods; claimed pods belong to their claims);
the pool's own drain lets agents finish their task. On deletion the swarm's own
RedisCluster goes last, after every pool has stopped; on suspend it stays (queues keep
their tasks).
"""

from __future__ import annotations

import datetime
import heapq
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from swarmops.api import AgentPool, RedisCluster
from swarmops.api.agentpool import AgentPoolSpec
from swarmops.api.common import API_VERSION, OWNED_KEY_PREFIX, ConditionStatus, ConditionType
from swarmops.api.swarm import (
    ResourceUsage,
    ShutdownOrder,
    Swarm,
    SwarmConditionType,
    SwarmPhase,
    SwarmPool,
    SwarmPoolPhase,
    SwarmPoolStatus,
    SwarmRedisStatus,
    SwarmStatus,
)
from swarmops.core.agentenv import (
    QUEUE_ANNOTATION,
    REDIS_SECRET_ANNOTATION,
    REDIS_SECRET_KEY_ANNOTATION,
    REDIS_TLS_SECRET_ANNOTATION,
    REDIS_URL_ANNOTATION,
)
from swarmops.core.conditions import find_condition, is_true, set_condition
from swarmops.core.rediscluster import names as redis_names

SWARM_LABEL: Final = redis_names.SWARM_LABEL
#: On a swarm's AgentPool: the pool's name within the swarm.
SWARM_POOL_LABEL: Final = f"{OWNED_KEY_PREFIX}swarm-pool"
#: Holds a deleted swarm until its pools have stopped in order and its Redis is gone.
FINALIZER: Final = f"{OWNED_KEY_PREFIX}swarm-shutdown"
#: PriorityClasses the operator keeps, one per pool priority in use.
PRIORITY_CLASS_PREFIX: Final = "swarmops-priority-"
PRIORITY_CLASS_LABEL: Final = f"{OWNED_KEY_PREFIX}priority-class"

#: Re-checks of a pool waiting for its dependencies: after 1 s, doubling up to a minute.
WAIT_RECHECK_MIN: Final = 1.0
WAIT_RECHECK_MAX: Final = 60.0
GPU_RESOURCE_PREFIX: Final = "nvidia.com/"


def agent_pool_name(swarm: str, pool: str) -> str:
    return f"{swarm}-{pool}"


def redis_cluster_name(swarm: str) -> str:
    return f"{swarm}-redis"


def queue_name(swarm: str, pool: str) -> str:
    return f"{swarm}.{pool}"


def priority_class_name(priority: int) -> str:
    return f"{PRIORITY_CLASS_PREFIX}{priority}"


# --- the DAG ----------------------------------------------------------------------------------


def find_cycle(pools: Sequence[SwarmPool]) -> list[str] | None:
    """A dependency cycle as a path that ends where it starts (a -> b -> a), or None."""
    edges = {pool.name: sorted(pool.depends_on) for pool in pools}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for dependency in edges.get(name, ()):
            if dependency not in edges:
                continue
            if state.get(dependency) == 1:
                return [*path[path.index(dependency) :], dependency]
            if dependency not in state:
                found = visit(dependency)
                if found is not None:
                    return found
        path.pop()
        state[name] = 2
        return None

    for name in sorted(edges):
        if name not in state:
            found = visit(name)
            if found is not None:
                return found
    return None


def start_levels(pools: Sequence[SwarmPool]) -> list[list[str]]:
    """Pools in start order, level by level: each level depends only on earlier ones.

    The input must have no cycle (`find_cycle`)."""
    remaining = {pool.name: set(pool.depends_on) for pool in pools}
    levels: list[list[str]] = []
    done: set[str] = set()
    while remaining:
        level = sorted(name for name, deps in remaining.items() if deps <= done)
        if not level:
            raise ValueError("the pools' dependencies form a cycle")
        levels.append(level)
        done.update(level)
        for name in level:
            del remaining[name]
    return levels


def dependents(pools: Sequence[SwarmPool]) -> dict[str, set[str]]:
    """Each pool's direct dependents (the pools that depend on it)."""
    found: dict[str, set[str]] = {pool.name: set() for pool in pools}
    for pool in pools:
        for dependency in pool.depends_on:
            found.setdefault(dependency, set()).add(pool.name)
    return found


# --- resources and the budget -----------------------------------------------------------------

_SUFFIXES: Final = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY: Final = re.compile(r"^([+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(value: int | str | float) -> Decimal:
    """A Kubernetes quantity ("500m", "2Gi", 3) as a number; ValueError when it is none."""
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY.match(value.strip())
    if match is None or match.group(2) not in _SUFFIXES:
        raise ValueError(f"{value!r} is not a quantity")
    try:
        return Decimal(match.group(1)) * _SUFFIXES[match.group(2)]
    except InvalidOperation as error:
        raise ValueError(f"{value!r} is not a quantity") from error


@dataclass(frozen=True, order=True)
class Resources:
    """Requests in whole units: CPU in millicores, memory in bytes, GPUs."""

    cpu_milli: int = 0
    memory: int = 0
    gpus: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_milli + other.cpu_milli, self.memory + other.memory, self.gpus + other.gpus
        )

    def times(self, count: int) -> Resources:
        return Resources(self.cpu_milli * count, self.memory * count, self.gpus * count)


@dataclass(frozen=True)
class Budget:
    """Most the swarm may request; None in a dimension: no limit there."""

    cpu_milli: int | None = None
    memory: int | None = None
    gpus: int | None = None

    def fits(self, used: Resources) -> bool:
        return all(
            limit is None or amount <= limit
            for limit, amount in (
                (self.cpu_milli, used.cpu_milli),
                (self.memory, used.memory),
                (self.gpus, used.gpus),
            )
        )


def budget_of(swarm: Swarm) -> Budget | None:
    budget = swarm.spec.budget
    if budget is None:
        return None
    return Budget(
        cpu_milli=None if budget.cpu is None else math.ceil(parse_quantity(budget.cpu) * 1000),
        memory=None if budget.memory is None else math.ceil(parse_quantity(budget.memory)),
        gpus=budget.gpus,
    )


def pod_resources(spec: AgentPoolSpec) -> Resources:
    """What one pod of the pool requests (a container without requests asks its limits,
    as Kubernetes defaults them); GPUs from `gpu.count` or nvidia.com/* requests."""
    cpu = Decimal(0)
    memory = Decimal(0)
    gpus = 0
    for container in spec.template.spec.containers:
        resources = (container.model_extra or {}).get("resources") or {}
        requests = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        for name, amount in requests.items():
            try:
                value = parse_quantity(amount)
            except ValueError:
                continue  # the apiserver rejects the pod; nothing to count
            if name == "cpu":
                cpu += value
            elif name == "memory":
                memory += value
            elif str(name).startswith(GPU_RESOURCE_PREFIX):
                gpus += math.ceil(value)
    if spec.gpu is not None and spec.gpu.count > 0:
        gpus = max(gpus, spec.gpu.count)
    return Resources(math.ceil(cpu * 1000), math.ceil(memory), gpus)


@dataclass(frozen=True)
class Demand:
    """What one pool asks of the budget."""

    name: str
    priority: int
    weight: int
    per_pod: Resources
    replicas: int
    warm: int


@dataclass(frozen=True)
class Allowance:
    replicas: int
    warm: int


def allocate(
    demands: Sequence[Demand], budget: Budget | None, fixed: Resources = Resources()
) -> dict[str, Allowance]:
    """Active replicas first, then warm pods; each by priority, then by weight.

    Within one priority the pods go out one at a time to the pool with the fewest pods
    per unit of weight (ties by name), while its next pod fits in what is left; a pool
    whose next pod does not fit gets no more in that round.
    """
    if budget is None:
        return {d.name: Allowance(d.replicas, d.warm) for d in demands}
    given = {d.name: [0, 0] for d in demands}
    used = fixed
    for kind in (0, 1):  # 0: active replicas, 1: warm pods
        for priority in sorted({d.priority for d in demands}, reverse=True):
            tier = [d for d in demands if d.priority == priority]
            heap = [(Decimal(1) / d.weight, d.name, d) for d in tier if _wanted(d, kind) > 0]
            heapq.heapify(heap)
            while heap:
                _, name, demand = heapq.heappop(heap)
                after = used + demand.per_pod
                if not budget.fits(after):
                    continue
                used = after
                given[name][kind] += 1
                count = given[name][kind]
                if count < _wanted(demand, kind):
                    heapq.heappush(heap, (Decimal(count + 1) / demand.weight, name, demand))
    return {name: Allowance(counts[0], counts[1]) for name, counts in given.items()}


def _wanted(demand: Demand, kind: int) -> int:
    return demand.replicas if kind == 0 else demand.warm


def usage(demands: Iterable[Demand], allowed: Mapping[str, Allowance]) -> Resources:
    total = Resources()
    for demand in demands:
        allowance = allowed.get(demand.name)
        if allowance is not None:
            total = total + demand.per_pod.times(allowance.replicas + allowance.warm)
    return total


# --- what the swarm sees ----------------------------------------------------------------------


@dataclass(frozen=True)
class ObservedPool:
    """An AgentPool as the cache shows it."""

    pool: AgentPool
    #: Another field manager (an HPA, `kubectl scale`) holds spec.replicas.
    replicas_held_elsewhere: bool = False
    #: Its pods that still exist, other than claimed ones: terminating and draining pods
    #: count (their agents may still be finishing a task), finished ones do not.
    pods_left: int = 0

    @property
    def caught_up(self) -> bool:
        return self.pool.status.observed_generation >= (self.pool.metadata.generation or 0)

    @property
    def ready(self) -> bool:
        return self.caught_up and is_true(self.pool.status.conditions, ConditionType.READY)

    @property
    def stopped(self) -> bool:
        """No active and no warm pods left, not even draining ones (claimed pods are their
        claims')."""
        spec, status = self.pool.spec, self.pool.status
        return (
            self.caught_up
            and spec.replicas == 0
            and spec.warm_pool.size == 0
            and status.replicas == 0
            and status.warm == 0
            and self.pods_left == 0
        )


@dataclass(frozen=True)
class SwarmEvent:
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class PoolApply:
    """An AgentPool body to server-side apply (forced: what it declares is the swarm's).

    A pool whose replicas another manager holds (an HPA) is applied without replicas, so
    they stay that manager's, unless the swarm must hold the pool lower (gated, capped by
    the budget, stopping)."""

    body: dict[str, Any]
    #: For a referenced pool: the field manager of this swarm (its labels and annotations).
    field_manager: str | None = None


@dataclass(frozen=True)
class SwarmPlan:
    status: SwarmStatus
    pools: list[PoolApply] = field(default_factory=list)
    redis: dict[str, Any] | None = None
    priority_classes: list[dict[str, Any]] = field(default_factory=list)
    #: Referenced pools whose swarm labels and annotations go (the swarm is gone).
    release: list[str] = field(default_factory=list)
    delete_redis: str | None = None
    events: list[SwarmEvent] = field(default_factory=list)
    #: Deletion finished: the finalizer may go.
    finished: bool = False
    recheck_after: float | None = None


# --- the plan ---------------------------------------------------------------------------------


def owner_reference(swarm: Swarm) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Swarm",
        "name": swarm.metadata.name,
        "uid": swarm.metadata.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def redis_manifest(swarm: Swarm) -> dict[str, Any] | None:
    redis = swarm.spec.redis
    if redis is None or redis.spec is None:
        return None
    return {
        "apiVersion": API_VERSION,
        "kind": "RedisCluster",
        "metadata": {
            "name": redis_cluster_name(swarm.metadata.name),
            "namespace": swarm.metadata.namespace,
            "labels": {SWARM_LABEL: swarm.metadata.name},
            "ownerReferences": [owner_reference(swarm)],
        },
        "spec": redis.spec.to_wire(),
    }


def redis_name(swarm: Swarm) -> str | None:
    redis = swarm.spec.redis
    if redis is None:
        return None
    if redis.cluster_ref is not None:
        return redis.cluster_ref.name
    return redis_cluster_name(swarm.metadata.name)


def redis_connection(cluster: RedisCluster) -> dict[str, str]:
    """The annotations that tell a pool's pods how to reach and log in to `cluster`."""
    name, namespace = cluster.metadata.name, cluster.metadata.namespace
    tls = cluster.spec.tls
    scheme = "rediss" if tls.enabled else "redis"
    notes = {REDIS_URL_ANNOTATION: f"{scheme}://{name}.{namespace}.svc:{redis_names.CLIENT_PORT}"}
    auth = cluster.spec.auth
    if auth.enabled:
        if auth.secret_ref is not None:
            notes[REDIS_SECRET_ANNOTATION] = auth.secret_ref.name
            notes[REDIS_SECRET_KEY_ANNOTATION] = auth.secret_ref.key
        else:
            notes[REDIS_SECRET_ANNOTATION] = redis_names.auth_secret_name(name)
            notes[REDIS_SECRET_KEY_ANNOTATION] = redis_names.PASSWORD_KEY
    if tls.enabled and tls.secret_name:
        notes[REDIS_TLS_SECRET_ANNOTATION] = tls.secret_name
    return notes


def _redis_ready(cluster: RedisCluster | None) -> bool:
    return (
        cluster is not None
        and cluster.metadata.deletion_timestamp is None
        and cluster.status.observed_generation >= (cluster.metadata.generation or 0)
        and is_true(cluster.status.conditions, ConditionType.READY)
    )


def _pool_metadata(swarm: Swarm, pool: SwarmPool, redis: RedisCluster | None) -> dict[str, Any]:
    annotations = {QUEUE_ANNOTATION: queue_name(swarm.metadata.name, pool.name)}
    if redis is not None:
        annotations.update(redis_connection(redis))
    return {
        "labels": {SWARM_LABEL: swarm.metadata.name, SWARM_POOL_LABEL: pool.name},
        "annotations": annotations,
    }


def _inline_pool(
    swarm: Swarm,
    pool: SwarmPool,
    *,
    redis: RedisCluster | None,
    replicas: int | None,
    warm: int,
    priority_classes: bool,
) -> dict[str, Any]:
    assert pool.spec is not None
    spec = pool.spec.to_wire()
    if replicas is None:
        spec.pop("replicas", None)
    else:
        spec["replicas"] = replicas
    spec.setdefault("warmPool", {})["size"] = warm
    max_size = spec["warmPool"].get("maxSize")
    if max_size is not None and max_size < warm:
        spec["warmPool"]["maxSize"] = warm
    if "drain_timeout_seconds" not in pool.spec.rollout.model_fields_set:
        # The swarm's shutdown grace, unless the pool says otherwise: the pool's drain is
        # what lets a busy agent finish its task when the swarm scales it to 0.
        drain = swarm.spec.shutdown.drain_timeout_seconds
        spec.setdefault("rollout", {})["drainTimeoutSeconds"] = drain
    pod_spec = spec["template"]["spec"]
    if priority_classes and not pod_spec.get("priorityClassName"):
        pod_spec["priorityClassName"] = priority_class_name(pool.spec.priority)
    metadata = _pool_metadata(swarm, pool, redis)
    metadata.update(
        name=agent_pool_name(swarm.metadata.name, pool.name),
        namespace=swarm.metadata.namespace,
        ownerReferences=[owner_reference(swarm)],
    )
    return {"apiVersion": API_VERSION, "kind": "AgentPool", "metadata": metadata, "spec": spec}


def referenced_pool_manager(swarm: str) -> str:
    """The field manager of one swarm's labels and annotations on a pool it references."""
    return f"swarmops-swarm-{swarm}"


def priority_class(priority: int) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {
            "name": priority_class_name(priority),
            "labels": {
                PRIORITY_CLASS_LABEL: str(priority),
                "app.kubernetes.io/managed-by": "swarmops",
            },
        },
        "value": priority,
        "globalDefault": False,
        "preemptionPolicy": "PreemptLowerPriority",
        "description": f"SwarmOps agent pools of priority {priority} (higher is preempted later).",
    }


def _pool_object_name(swarm: Swarm, pool: SwarmPool) -> str:
    if pool.pool_ref is not None:
        return pool.pool_ref.name
    return agent_pool_name(swarm.metadata.name, pool.name)


def _owned_by(pool: AgentPool, swarm: Swarm) -> bool:
    return any(ref.uid == swarm.metadata.uid for ref in pool.metadata.owner_references)


def validate(
    swarm: Swarm, pools: Mapping[str, ObservedPool], redis: RedisCluster | None
) -> str | None:
    """Why the swarm cannot be reconciled as written, naming the culprits; None if it can."""
    cycle = find_cycle(swarm.spec.pools)
    if cycle is not None:
        return f"dependsOn forms a cycle: {' -> '.join(cycle)}"
    problems: list[str] = []
    for pool in swarm.spec.pools:
        name = _pool_object_name(swarm, pool)
        observed = pools.get(name)
        if pool.pool_ref is not None and observed is None:
            problems.append(
                f"pool {pool.name}: poolRef names AgentPool {name}, which does not exist"
            )
        elif pool.spec is not None and observed is not None and not _owned_by(observed.pool, swarm):
            problems.append(f"pool {pool.name}: AgentPool {name} exists and is not this swarm's")
    spec_redis = swarm.spec.redis
    if spec_redis is not None and spec_redis.cluster_ref is not None and redis is None:
        problems.append(
            f"redis: clusterRef names RedisCluster {spec_redis.cluster_ref.name}, which does not "
            "exist"
        )
    return "; ".join(problems) or None


def wait_recheck(waited: float) -> float:
    """Seconds until a waiting pool is looked at again: doubling with the time waited."""
    if waited <= WAIT_RECHECK_MIN:
        return WAIT_RECHECK_MIN
    return min(WAIT_RECHECK_MAX, 2.0 ** math.floor(math.log2(waited)))


def plan_swarm(
    swarm: Swarm,
    pools: Mapping[str, ObservedPool],
    redis: RedisCluster | None,
    *,
    now: datetime.datetime,
    priority_classes: bool = False,
) -> SwarmPlan:
    """Everything the swarm controller should write now. `pools` by AgentPool name."""
    previous = swarm.status
    deleting = swarm.metadata.deletion_timestamp is not None
    if deleting and find_cycle(swarm.spec.pools) is not None:
        # No order to stop in; what runs goes with the swarm, by garbage collection.
        return SwarmPlan(status=previous, finished=True, release=_referenced(swarm, pools))
    problem = validate(swarm, pools, redis)
    if problem is not None and not deleting:
        return _invalid(swarm, problem, now)
    # An AgentPool of an inline pool's name that the swarm does not own is not its pool.
    pools = {
        name: observed
        for name, observed in pools.items()
        if _owned_by(observed.pool, swarm) or name in _referenced_names(swarm)
    }

    name = swarm.metadata.name
    stopping = deleting or swarm.spec.suspend
    redis_is_ready = swarm.spec.redis is None or _redis_ready(redis)
    connection = redis if swarm.spec.redis is not None else None
    by_name = {pool.name: pool for pool in swarm.spec.pools}
    before = {entry.name: entry for entry in previous.pools}

    # The budget, decided for the swarm running in full.
    demands: list[Demand] = []
    fixed = Resources()
    for pool in swarm.spec.pools:
        observed = pools.get(_pool_object_name(swarm, pool))
        if pool.spec is None:
            if observed is not None:
                spec = observed.pool.spec
                fixed = fixed + pod_resources(spec).times(spec.replicas + spec.warm_pool.size)
            continue
        replicas = pool.spec.replicas
        if observed is not None and observed.replicas_held_elsewhere:
            replicas = observed.pool.spec.replicas
        demands.append(
            Demand(
                name=pool.name,
                priority=pool.spec.priority,
                weight=pool.weight,
                per_pod=pod_resources(pool.spec),
                replicas=replicas,
                warm=pool.spec.warm_pool.size,
            )
        )
    allowed = allocate(demands, budget_of(swarm), fixed)
    demand_by_name = {d.name: d for d in demands}

    # Stop order: who may stop now.
    stopped: set[str] = set()
    for pool in swarm.spec.pools:
        observed = pools.get(_pool_object_name(swarm, pool))
        if (
            pool.pool_ref is not None
            or observed is None
            or observed.stopped
            or observed.pool.metadata.deletion_timestamp is not None
        ):
            stopped.add(pool.name)
    reverse = dependents(swarm.spec.pools)
    parallel = swarm.spec.shutdown.order is ShutdownOrder.PARALLEL

    entries: list[SwarmPoolStatus] = []
    applies: list[PoolApply] = []
    events: list[SwarmEvent] = []
    recheck: float | None = None
    degraded: list[str] = []
    timeout = swarm.spec.startup.dependency_timeout_seconds
    for level in start_levels(swarm.spec.pools):
        for pool_name in level:
            pool = by_name[pool_name]
            object_name = _pool_object_name(swarm, pool)
            observed = pools.get(object_name)
            old = before.get(pool_name)
            entry = SwarmPoolStatus(name=pool_name, agent_pool=object_name)
            if old is not None:
                entry = entry.model_copy(
                    update={
                        "waiting_since": old.waiting_since,
                        "started_at": old.started_at,
                        "stopped_at": old.stopped_at,
                    }
                )
            if observed is not None:
                seen = observed.pool.status
                entry = entry.model_copy(
                    update={
                        "replicas": seen.replicas,
                        "ready_replicas": seen.ready_replicas,
                        "warm_ready": seen.warm_ready,
                    }
                )
            allowance = allowed.get(pool_name)
            demand = demand_by_name.get(pool_name)
            if (
                allowance is not None
                and demand is not None
                and (allowance.replicas < demand.replicas or allowance.warm < demand.warm)
            ):
                entry = entry.model_copy(
                    update={
                        "allowed_replicas": allowance.replicas,
                        "allowed_warm": allowance.warm,
                    }
                )

            if pool.pool_ref is not None:
                # Used, not owned: only its readiness counts, and its pods learn the swarm.
                phase = (
                    SwarmPoolPhase.READY if observed and observed.ready else SwarmPoolPhase.STARTING
                )
                entry = entry.model_copy(
                    update={"phase": phase, "message": "referenced pool, started by its owner"}
                )
                if not deleting:
                    body = {
                        "apiVersion": API_VERSION,
                        "kind": "AgentPool",
                        "metadata": {
                            **_pool_metadata(swarm, pool, connection),
                            "name": object_name,
                            "namespace": swarm.metadata.namespace,
                        },
                    }
                    applies.append(PoolApply(body, field_manager=referenced_pool_manager(name)))
                entries.append(entry)
                continue

            assert allowance is not None and demand is not None
            if stopping:
                blockers = [] if parallel else sorted(reverse.get(pool_name, set()) - stopped)
                if pool_name in stopped:
                    phase, message = SwarmPoolPhase.STOPPED, "stopped"
                    stopped_at = entry.stopped_at or now
                    entry = entry.model_copy(update={"stopped_at": stopped_at})
                    target: tuple[int, int] | None = (0, 0)
                elif blockers:
                    # Still running as it was: "Stopping" is for pools being scaled down.
                    phase = old.phase if old is not None else SwarmPoolPhase.WAITING
                    message = f"stops after its dependents have stopped: {', '.join(blockers)}"
                    # Keep what it runs: its dependents may still be handing it work.
                    target = None
                else:
                    phase, message = SwarmPoolPhase.STOPPING, "draining: scaled to 0"
                    target = (0, 0)
                entry = entry.model_copy(update={"phase": phase, "message": message})
                if target is not None and observed is not None:
                    # Never (re)create a pool while stopping: only hold existing ones at 0.
                    applies.append(
                        PoolApply(
                            _inline_pool(
                                swarm,
                                pool,
                                redis=connection,
                                replicas=0,
                                warm=0,
                                priority_classes=priority_classes,
                            )
                        )
                    )
                entries.append(entry)
                continue

            entry = entry.model_copy(update={"stopped_at": None})
            started = entry.started_at is not None and (
                old is None or old.phase not in (SwarmPoolPhase.STOPPED, SwarmPoolPhase.STOPPING)
            )
            waiting_on = [
                dependency
                for dependency in pool.depends_on
                if _entry_phase(entries, dependency) is not SwarmPoolPhase.READY
            ]
            if not redis_is_ready:
                waiting_on.append(f"RedisCluster {redis_name(swarm)}")
            if started or not waiting_on:
                started_at = entry.started_at if started else now
                capped = allowance.replicas < demand.replicas or allowance.warm < demand.warm
                hand_back = observed is not None and observed.replicas_held_elsewhere and not capped
                replicas_value: int | None = None if hand_back else allowance.replicas
                applies.append(
                    PoolApply(
                        _inline_pool(
                            swarm,
                            pool,
                            redis=connection,
                            replicas=replicas_value,
                            warm=allowance.warm,
                            priority_classes=priority_classes,
                        )
                    )
                )
                ready = (
                    observed is not None
                    and observed.ready
                    and (hand_back or observed.pool.spec.replicas == allowance.replicas)
                    and observed.pool.spec.warm_pool.size == allowance.warm
                )
                phase = SwarmPoolPhase.READY if ready else SwarmPoolPhase.STARTING
                message = "Ready" if ready else "starting"
                entry = entry.model_copy(
                    update={
                        "phase": phase,
                        "message": message,
                        "started_at": started_at,
                        "waiting_since": None,
                    }
                )
            else:
                waiting_since = entry.waiting_since or now
                waited = (now - waiting_since).total_seconds()
                message = f"waiting for {', '.join(waiting_on)}"
                if waited > timeout:
                    degraded.append(
                        f"pool {pool_name} has waited {int(waited)}s for {', '.join(waiting_on)}"
                    )
                delay = wait_recheck(waited)
                recheck = delay if recheck is None else min(recheck, delay)
                applies.append(
                    PoolApply(
                        _inline_pool(
                            swarm,
                            pool,
                            redis=connection,
                            replicas=0,
                            warm=0,
                            priority_classes=priority_classes,
                        )
                    )
                )
                entry = entry.model_copy(
                    update={
                        "phase": SwarmPoolPhase.WAITING,
                        "message": message,
                        "waiting_since": waiting_since,
                        "started_at": None,
                    }
                )
            entries.append(entry)

    order = {pool.name: index for index, pool in enumerate(swarm.spec.pools)}
    entries.sort(key=lambda e: order[e.name])
    events.extend(_pool_events(previous.pools, entries, swarm))

    # Redis.
    redis_body = redis_manifest(swarm)
    delete_redis: str | None = None
    finished = False
    all_stopped = all(e.phase is SwarmPoolPhase.STOPPED for e in entries if by_name[e.name].spec)
    if deleting and all_stopped:
        if redis_body is not None and redis is not None:
            delete_redis = redis.metadata.name
            if redis.metadata.deletion_timestamp is None:
                events.append(
                    SwarmEvent(
                        "RedisClusterDeleting",
                        f"Every pool has stopped: deleting RedisCluster {redis.metadata.name}",
                    )
                )
        else:
            finished = True
        redis_body = None
    elif deleting:
        redis_body = None  # never recreate it while going away

    redis_status: SwarmRedisStatus | None = None
    redis_ref = redis_name(swarm)
    if redis_ref is not None:
        redis_status = SwarmRedisStatus(
            name=redis_ref,
            ready=_redis_ready(redis),
            endpoint=redis.status.endpoint if redis is not None else None,
            auth_secret_name=redis.status.auth_secret_name if redis is not None else None,
        )

    used = usage(demands, allowed) + fixed
    limited = sorted(
        f"{e.name} ({e.allowed_replicas} of {demand_by_name[e.name].replicas} replicas, "
        f"{e.allowed_warm} of {demand_by_name[e.name].warm} warm)"
        for e in entries
        if e.allowed_replicas is not None
    )
    status = _status(
        swarm,
        previous,
        entries,
        redis_status,
        redis_is_ready,
        stopping=stopping,
        deleting=deleting,
        referenced={p.name for p in swarm.spec.pools if p.pool_ref is not None},
        degraded=degraded,
        limited=limited,
        used=used,
        now=now,
    )
    events.extend(_condition_events(previous, status))
    classes = []
    if priority_classes and not deleting:
        classes = [
            priority_class(p) for p in sorted({p.spec.priority for p in swarm.spec.pools if p.spec})
        ]
    return SwarmPlan(
        status=status,
        pools=applies,
        redis=redis_body,
        priority_classes=classes,
        release=_referenced(swarm, pools) if finished else [],
        delete_redis=delete_redis,
        events=events,
        finished=finished,
        recheck_after=recheck,
    )


def _referenced_names(swarm: Swarm) -> set[str]:
    return {pool.pool_ref.name for pool in swarm.spec.pools if pool.pool_ref is not None}


def _referenced(swarm: Swarm, pools: Mapping[str, ObservedPool]) -> list[str]:
    return [
        pool.pool_ref.name
        for pool in swarm.spec.pools
        if pool.pool_ref is not None and pool.pool_ref.name in pools
    ]


def _entry_phase(entries: Sequence[SwarmPoolStatus], name: str) -> SwarmPoolPhase | None:
    return next((e.phase for e in entries if e.name == name), None)


def _invalid(swarm: Swarm, problem: str, now: datetime.datetime) -> SwarmPlan:
    generation = swarm.metadata.generation or 0
    previous = swarm.status
    conditions = previous.conditions
    for kind, value, reason in (
        (SwarmConditionType.INVALID_SPEC, True, "InvalidSpec"),
        (ConditionType.READY, False, "InvalidSpec"),
        (ConditionType.DEGRADED, True, "InvalidSpec"),
        (ConditionType.PROGRESSING, False, "InvalidSpec"),
    ):
        conditions = set_condition(
            conditions,
            kind,
            ConditionStatus.TRUE if value else ConditionStatus.FALSE,
            reason,
            problem,
            now=now,
            observed_generation=generation,
        )
    status = previous.model_copy(
        update={
            "phase": SwarmPhase.DEGRADED,
            "conditions": conditions,
            "observed_generation": generation,
            "total_pools": len(swarm.spec.pools),
        }
    )
    old = find_condition(previous.conditions, SwarmConditionType.INVALID_SPEC)
    events = []
    if old is None or old.status != ConditionStatus.TRUE or old.message != problem:
        events.append(SwarmEvent("InvalidSpec", problem, warning=True))
    return SwarmPlan(status=status, events=events)


def _status(
    swarm: Swarm,
    previous: SwarmStatus,
    entries: list[SwarmPoolStatus],
    redis: SwarmRedisStatus | None,
    redis_ready: bool,
    *,
    stopping: bool,
    deleting: bool,
    referenced: set[str],
    degraded: list[str],
    limited: list[str],
    used: Resources,
    now: datetime.datetime,
) -> SwarmStatus:
    generation = swarm.metadata.generation or 0
    ready_pools = sum(1 for e in entries if e.phase is SwarmPoolPhase.READY)
    total = len(entries)
    all_ready = ready_pools == total and redis_ready
    all_stopped = all(e.phase is SwarmPoolPhase.STOPPED or e.name in referenced for e in entries)
    if deleting:
        phase = SwarmPhase.TERMINATING
    elif stopping:
        phase = SwarmPhase.SUSPENDED if all_stopped else SwarmPhase.SUSPENDING
    elif degraded:
        phase = SwarmPhase.DEGRADED
    elif all_ready:
        phase = SwarmPhase.READY
    else:
        phase = SwarmPhase.STARTING
    progress = f"{ready_pools}/{total} pools Ready"
    if redis is not None:
        progress += f", RedisCluster {redis.name} {'Ready' if redis_ready else 'not Ready'}"
    conditions = previous.conditions

    def put(kind: str, value: bool, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(
            conditions,
            kind,
            ConditionStatus.TRUE if value else ConditionStatus.FALSE,
            reason,
            message,
            now=now,
            observed_generation=generation,
        )

    put(SwarmConditionType.INVALID_SPEC, False, "Valid", "the spec is valid")
    if stopping:
        reason = "Terminating" if deleting else "Suspended"
        put(
            ConditionType.READY,
            False,
            reason,
            f"{'deleting' if deleting else 'suspended'}: {progress}",
        )
        put(
            ConditionType.PROGRESSING,
            not all_stopped,
            "Stopping" if not all_stopped else "Stopped",
            "stopping pools in reverse dependency order"
            if not all_stopped
            else "every pool has stopped",
        )
    else:
        put(ConditionType.READY, all_ready, "AllPoolsReady" if all_ready else "Starting", progress)
        put(
            ConditionType.PROGRESSING,
            not all_ready,
            "Starting" if not all_ready else "Stable",
            progress if not all_ready else "every pool is Ready",
        )
    if degraded:
        put(ConditionType.DEGRADED, True, "DependencyTimeout", "; ".join(degraded))
    else:
        put(ConditionType.DEGRADED, False, "AsExpected", "nothing is wrong")
    if limited:
        put(
            SwarmConditionType.BUDGET_LIMITED,
            True,
            "BudgetExceeded",
            "the budget caps " + "; ".join(limited),
        )
    else:
        put(
            SwarmConditionType.BUDGET_LIMITED, False, "WithinBudget", "every pool gets what it asks"
        )
    return SwarmStatus(
        observed_generation=generation,
        conditions=conditions,
        phase=phase,
        pools=entries,
        redis=redis,
        ready_pools=ready_pools,
        total_pools=total,
        budget_used=ResourceUsage(
            cpu=f"{used.cpu_milli}m", memory=str(used.memory), gpus=used.gpus
        ),
    )


def _pool_events(
    before: Sequence[SwarmPoolStatus], after: Sequence[SwarmPoolStatus], swarm: Swarm
) -> list[SwarmEvent]:
    old = {e.name: e.phase for e in before}
    events: list[SwarmEvent] = []
    reasons = {
        SwarmPoolPhase.STARTING: "PoolStarting",
        SwarmPoolPhase.READY: "PoolReady",
        SwarmPoolPhase.STOPPING: "PoolStopping",
        SwarmPoolPhase.STOPPED: "PoolStopped",
    }
    for entry in after:
        was = old.get(entry.name)
        if entry.phase == was or entry.phase not in reasons:
            continue
        if entry.phase is SwarmPoolPhase.STOPPED and was is None:
            continue  # never started: nothing stopped
        events.append(
            SwarmEvent(
                reasons[entry.phase], f"pool {entry.name} ({entry.agent_pool}): {entry.message}"
            )
        )
    return events


def _condition_events(before: SwarmStatus, after: SwarmStatus) -> list[SwarmEvent]:
    events: list[SwarmEvent] = []
    old = find_condition(before.conditions, SwarmConditionType.BUDGET_LIMITED)
    new = find_condition(after.conditions, SwarmConditionType.BUDGET_LIMITED)
    if new is not None and new.status == ConditionStatus.TRUE:
        if old is None or old.status != ConditionStatus.TRUE or old.message != new.message:
            events.append(SwarmEvent("BudgetLimited", new.message, warning=True))
    elif old is not None and old.status == ConditionStatus.TRUE and new is not None:
        events.append(SwarmEvent("BudgetRestored", "every pool gets what it asks again"))
    old_degraded = find_condition(before.conditions, ConditionType.DEGRADED)
    new_degraded = find_condition(after.conditions, ConditionType.DEGRADED)
    if (
        new_degraded is not None
        and new_degraded.status == ConditionStatus.TRUE
        and (old_degraded is None or old_degraded.status != ConditionStatus.TRUE)
    ):
        events.append(SwarmEvent(new_degraded.reason, new_degraded.message, warning=True))
    old_ready = is_true(before.conditions, ConditionType.READY)
    if is_true(after.conditions, ConditionType.READY) and not old_ready:
        events.append(SwarmEvent("SwarmReady", "every pool and the RedisCluster are Ready"))
    return events


__all__ = [
    "FINALIZER",
    "SWARM_LABEL",
    "SWARM_POOL_LABEL",
    "Allowance",
    "Budget",
    "Demand",
    "ObservedPool",
    "PoolApply",
    "Resources",
    "SwarmEvent",
    "SwarmPlan",
    "agent_pool_name",
    "allocate",
    "find_cycle",
    "plan_swarm",
    "redis_cluster_name",
    "start_levels",
]
