"""Swarm: agent pools that work together around a shared Redis, started and stopped in order."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import ConfigDict, Field, model_validator

from swarmops.api.agentpool import AgentPoolSpec
from swarmops.api.common import (
    DNS_1035_LABEL_PATTERN,
    ApiModel,
    CelRule,
    CustomResource,
    LocalObjectReference,
    Quantity,
    StatusBase,
    cel_rules,
    list_map,
)
from swarmops.api.rediscluster import RedisClusterSpec

MAX_SWARM_POOLS: Final = 32
#: A swarm's AgentPools are named <swarm>-<pool>; both limits together keep that a DNS label.
SWARM_NAME_MAX_LENGTH: Final = 30
POOL_NAME_MAX_LENGTH: Final = 32
DAY_SECONDS: Final = 24 * 3600

PoolName = Annotated[
    str,
    Field(min_length=1, max_length=POOL_NAME_MAX_LENGTH, pattern=DNS_1035_LABEL_PATTERN),
]


class SwarmConditionType(StrEnum):
    """Condition types a Swarm reports besides Ready, Progressing and Degraded."""

    INVALID_SPEC = "InvalidSpec"
    BUDGET_LIMITED = "BudgetLimited"


class SwarmPool(ApiModel):
    """One pool of the swarm: an inline AgentPool spec or a reference to an existing pool."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="has(self.spec) != has(self.poolRef)",
                message="each pool sets exactly one of spec (an inline AgentPool) or poolRef "
                "(an existing AgentPool)",
            ),
            CelRule(
                rule="!self.dependsOn.exists(dependency, dependency == self.name)",
                message="a pool cannot depend on itself",
                field_path=".dependsOn",
            ),
        )
    )

    name: PoolName = Field(
        description="Name of the pool within the swarm; an inline pool becomes the AgentPool "
        "<swarm>-<name>."
    )
    spec: AgentPoolSpec | None = Field(
        None, description="Inline AgentPool spec; the swarm owns the AgentPool it creates."
    )
    pool_ref: LocalObjectReference | None = Field(
        None, description="An existing AgentPool in the same namespace, used but not owned."
    )
    depends_on: list[PoolName] = Field(
        default_factory=list,
        max_length=MAX_SWARM_POOLS,
        description="Pools of this swarm that must be Ready before this one gets pods; it is "
        "stopped before them on shutdown.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    weight: int = Field(
        1,
        ge=1,
        le=1000,
        description="Share of the budget relative to pools of the same priority.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> SwarmPool:
        if (self.spec is None) == (self.pool_ref is None):
            raise ValueError("each pool sets exactly one of spec or poolRef")
        if self.name in self.depends_on:
            raise ValueError("a pool cannot depend on itself")
        return self


class SwarmRedis(ApiModel):
    """The Redis Cluster the swarm's agents coordinate through."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="has(self.spec) != has(self.clusterRef)",
                message="redis sets exactly one of spec (a RedisCluster for this swarm) or "
                "clusterRef (an existing one)",
            )
        )
    )

    spec: RedisClusterSpec | None = Field(
        None,
        description="Create a RedisCluster named <swarm>-redis, owned by the swarm.",
    )
    cluster_ref: LocalObjectReference | None = Field(
        None, description="Use an existing RedisCluster in the same namespace."
    )

    @model_validator(mode="after")
    def _one_source(self) -> SwarmRedis:
        if (self.spec is None) == (self.cluster_ref is None):
            raise ValueError("redis sets exactly one of spec or clusterRef")
        return self


class SwarmBudget(ApiModel):
    """Most resources the swarm's pods may request together. When the pools ask for more,
    warm pools shrink first, then active replicas, lowest priority first."""

    cpu: Quantity | None = Field(None, description="Total CPU requests, e.g. 64 or 64000m.")
    memory: Quantity | None = Field(None, description="Total memory requests, e.g. 256Gi.")
    gpus: int | None = Field(None, ge=0, le=100_000, description="Total GPUs.")


class ShutdownOrder(StrEnum):
    """In which order pools stop when the swarm is suspended or deleted."""

    #: Dependents first: a pool stops only after everything that depends on it has stopped.
    REVERSE_DEPENDENCIES = "ReverseDependencies"
    #: All at once.
    PARALLEL = "Parallel"


class SwarmShutdown(ApiModel):
    """How the swarm stops."""

    order: ShutdownOrder = Field(
        ShutdownOrder.REVERSE_DEPENDENCIES, description="Order in which pools stop."
    )
    drain_timeout_seconds: int = Field(
        300,
        ge=0,
        le=DAY_SECONDS,
        description="How long each pool's agents may finish their current task before they "
        "are stopped anyway: each inline pool's rollout.drainTimeoutSeconds, unless the pool "
        "sets its own.",
    )


class SwarmStartup(ApiModel):
    """How the swarm starts."""

    dependency_timeout_seconds: int = Field(
        600,
        ge=1,
        le=DAY_SECONDS,
        description="A pool waiting longer than this for its dependencies marks the swarm "
        "Degraded; it keeps waiting, with backoff.",
    )


class SwarmSpec(ApiModel):
    """The desired state of a Swarm."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="self.pools.all(pool, pool.dependsOn.all(dependency, "
                "self.pools.exists(other, other.name == dependency)))",
                message="dependsOn must name pools of this swarm",
                field_path=".pools",
            )
        )
    )

    pools: list[SwarmPool] = Field(
        min_length=1,
        max_length=MAX_SWARM_POOLS,
        description="The pools of the swarm, keyed by name.",
        json_schema_extra=list_map("name"),
    )
    redis: SwarmRedis | None = Field(
        None,
        description="The Redis Cluster for queues, pub/sub and shared memory; every pool that "
        "uses it waits for it to be Ready. Absent: no Redis.",
    )
    budget: SwarmBudget | None = Field(None, description="Resource budget of the whole swarm.")
    suspend: bool = Field(
        False,
        description="Stop all pools in reverse dependency order (draining each); false starts "
        "them again in order.",
    )
    startup: SwarmStartup = Field(default_factory=SwarmStartup, description="How the swarm starts.")
    shutdown: SwarmShutdown = Field(
        default_factory=SwarmShutdown, description="How the swarm stops."
    )

    @model_validator(mode="after")
    def _dependencies_exist(self) -> SwarmSpec:
        names = {pool.name for pool in self.pools}
        dangling = sorted({dep for pool in self.pools for dep in pool.depends_on} - names)
        if dangling:
            raise ValueError(f"dependsOn must name pools of this swarm: {', '.join(dangling)}")
        return self


class SwarmPhase(StrEnum):
    """Where the swarm is."""

    PENDING = "Pending"
    STARTING = "Starting"
    READY = "Ready"
    DEGRADED = "Degraded"
    SUSPENDING = "Suspending"
    SUSPENDED = "Suspended"
    TERMINATING = "Terminating"


class SwarmPoolPhase(StrEnum):
    """Where one pool of the swarm is."""

    WAITING = "Waiting"
    STARTING = "Starting"
    READY = "Ready"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    FAILED = "Failed"


class SwarmPoolStatus(ApiModel):
    """One pool of the swarm, as the operator last saw it."""

    name: PoolName = Field(description="Name of the pool within the swarm.")
    agent_pool: str | None = Field(None, max_length=253, description="Name of the AgentPool.")
    phase: SwarmPoolPhase = Field(SwarmPoolPhase.WAITING, description="Where the pool is.")
    replicas: int = Field(0, ge=0, description="Active pods.")
    ready_replicas: int = Field(0, ge=0, description="Ready active pods.")
    warm_ready: int = Field(0, ge=0, description="Ready warm pods.")
    allowed_replicas: int | None = Field(
        None, ge=0, description="Active replicas allowed by the budget, when it limits the pool."
    )
    allowed_warm: int | None = Field(
        None, ge=0, description="Warm pool size allowed by the budget, when it limits the pool."
    )
    waiting_since: datetime | None = Field(
        None, description="Since when the pool has been waiting for its dependencies."
    )
    started_at: datetime | None = Field(
        None, description="When the swarm let the pool start (its dependencies were Ready)."
    )
    stopped_at: datetime | None = Field(
        None, description="When the pool had stopped (no active or warm pods left)."
    )
    message: str = Field("", max_length=1024, description="Why the pool is where it is.")


class SwarmRedisStatus(ApiModel):
    """The swarm's Redis Cluster, as the operator last saw it."""

    name: str = Field(min_length=1, max_length=253, description="Name of the RedisCluster.")
    ready: bool = Field(False, description="Whether the cluster is Ready.")
    endpoint: str | None = Field(None, max_length=512, description="Client address, host:port.")
    auth_secret_name: str | None = Field(
        None, max_length=253, description="Secret holding the password (name only)."
    )


class ResourceUsage(ApiModel):
    """Resources requested by the swarm's pods."""

    cpu: Quantity | None = Field(None, description="CPU requests.")
    memory: Quantity | None = Field(None, description="Memory requests.")
    gpus: int = Field(0, ge=0, description="GPUs.")


class SwarmStatus(StatusBase):
    """The observed state of a Swarm, written by the operator."""

    phase: SwarmPhase = Field(SwarmPhase.PENDING, description="Where the swarm is.")
    pools: list[SwarmPoolStatus] = Field(
        default_factory=list,
        max_length=MAX_SWARM_POOLS,
        description="Each pool, keyed by name.",
        json_schema_extra=list_map("name"),
    )
    redis: SwarmRedisStatus | None = Field(None, description="The swarm's Redis Cluster.")
    ready_pools: int = Field(0, ge=0, description="Pools that are Ready.")
    total_pools: int = Field(0, ge=0, description="Pools in the swarm.")
    budget_used: ResourceUsage | None = Field(
        None, description="Resources the swarm's pods request now."
    )


class Swarm(CustomResource):
    """A Swarm is a set of AgentPools that work together: started in dependency order around a
    shared RedisCluster, kept within a budget, and stopped in reverse order."""

    KIND = "Swarm"

    kind: Literal["Swarm"] = "Swarm"
    spec: SwarmSpec = Field(description="Desired state of the swarm.")
    status: SwarmStatus = Field(
        default_factory=SwarmStatus, description="Observed state of the swarm."
    )
