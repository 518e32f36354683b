"""RedisCluster: a sharded Redis Cluster, formed, healed and resharded by the operator."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Final, Literal

from pydantic import ConfigDict, Field, model_validator

from swarmops.api.common import (
    MAX_MAP_ENTRIES,
    ApiModel,
    CelRule,
    CustomResource,
    ObjectName,
    Quantity,
    ResourceRequirements,
    SecretKeyReference,
    StatusBase,
    cel_rules,
    immutable,
    list_map,
)

MIN_SHARDS: Final = 3
MAX_SHARDS: Final = 100
MAX_REPLICAS_PER_SHARD: Final = 5
SLOT_COUNT: Final = 16384
DEFAULT_REDIS_IMAGE: Final = "redis:7.2"
DEFAULT_EXPORTER_IMAGE: Final = "oliver006/redis_exporter:v1.67.0"

#: redis.conf directives the operator writes itself; a user value would break the cluster,
#: its security or its data directory.
MANAGED_DIRECTIVES: Final = (
    "bind",
    "port",
    "dir",
    "daemonize",
    "protected-mode",
    "cluster-enabled",
    "cluster-config-file",
    "cluster-announce-ip",
    "cluster-announce-port",
    "cluster-announce-bus-port",
    "requirepass",
    "masterauth",
    "masteruser",
    "aclfile",
    "appendonly",
    "tls-port",
    "tls-cert-file",
    "tls-key-file",
    "tls-ca-cert-file",
    "tls-cluster",
    "tls-replication",
)
CONFIG_KEY_PATTERN: Final = r"^[a-z][a-z0-9-]*$"


class RedisClusterConditionType(StrEnum):
    """Condition types a RedisCluster reports besides Ready, Progressing and Degraded."""

    CLUSTER_FORMED = "ClusterFormed"
    SLOTS_ASSIGNED = "SlotsAssigned"
    RESHARDING = "Resharding"


class ReclaimPolicy(StrEnum):
    """What happens to the data volumes when the RedisCluster is deleted."""

    RETAIN = "Retain"
    DELETE = "Delete"


class RedisPersistence(ApiModel):
    """Data volumes for the Redis nodes. Size and storage class cannot change afterwards:
    StatefulSet volume claim templates are immutable, and moving data is a migration."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="has(self.storageClassName) == has(oldSelf.storageClassName)",
                message="persistence.storageClassName is immutable once set",
                field_path=".storageClassName",
            )
        )
    )

    size: Quantity = Field(
        description="Volume size per Redis node, e.g. 10Gi.",
        json_schema_extra=cel_rules(immutable("persistence.size")),
    )
    storage_class_name: ObjectName | None = Field(
        None,
        description="StorageClass of the volumes. Absent: the cluster's default class.",
        json_schema_extra=cel_rules(immutable("persistence.storageClassName")),
    )
    append_only: bool = Field(
        True,
        description="Also keep an append-only file (fsync every second), not only RDB snapshots.",
    )
    reclaim_policy: ReclaimPolicy = Field(
        ReclaimPolicy.RETAIN,
        description="When the RedisCluster is deleted: Retain the volumes (and the data) or "
        "Delete them.",
    )


class RedisAuth(ApiModel):
    """Password authentication (AUTH) for clients and between nodes."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="self.enabled || !has(self.secretRef)",
                message="auth.secretRef has no effect while auth.enabled is false",
                field_path=".secretRef",
            )
        )
    )

    enabled: bool = Field(True, description="Require a password. On by default.")
    secret_ref: SecretKeyReference | None = Field(
        None,
        description="Secret key holding the password. Absent: the operator generates a random "
        "password into the Secret <name>-auth. The password never appears in status or logs.",
    )

    @model_validator(mode="after")
    def _secret_only_when_enabled(self) -> RedisAuth:
        if not self.enabled and self.secret_ref is not None:
            raise ValueError("auth.secretRef has no effect while auth.enabled is false")
        return self


class RedisTls(ApiModel):
    """TLS for client and cluster-bus connections."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="!self.enabled || has(self.secretName)",
                message="tls.secretName is required when tls.enabled is true",
                field_path=".secretName",
                reason="FieldValueRequired",
            )
        )
    )

    enabled: bool = Field(False, description="Serve TLS on the client port and the cluster bus.")
    secret_name: ObjectName | None = Field(
        None,
        description="Secret of type kubernetes.io/tls with tls.crt, tls.key and ca.crt.",
    )

    @model_validator(mode="after")
    def _secret_when_enabled(self) -> RedisTls:
        if self.enabled and self.secret_name is None:
            raise ValueError("tls.secretName is required when tls.enabled is true")
        return self


class RedisExporter(ApiModel):
    """A Prometheus exporter sidecar next to every Redis node."""

    enabled: bool = Field(False, description="Run the exporter sidecar.")
    image: str = Field(
        DEFAULT_EXPORTER_IMAGE, min_length=1, max_length=1024, description="Exporter image."
    )
    port: int = Field(9121, ge=1024, le=65535, description="Port the exporter serves /metrics on.")
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements, description="Resources of the exporter container."
    )


class RedisDisruptionBudget(ApiModel):
    """PodDisruptionBudgets for the Redis nodes."""

    enabled: bool = Field(
        True,
        description="Keep one PodDisruptionBudget per shard (maxUnavailable 1), so a node drain "
        "never takes a shard's master and its replica at once.",
    )


class RedisClusterSpec(ApiModel):
    """The desired state of a RedisCluster."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule=f"self.shards >= {MIN_SHARDS}",
                message=f"shards must be at least {MIN_SHARDS}: a Redis Cluster needs a majority "
                "of masters to survive the loss of one",
                field_path=".shards",
            ),
            CelRule(
                rule="self.replicasPerShard >= 0",
                message="replicasPerShard must be 0 or more (0 means masters only, no failover)",
                field_path=".replicasPerShard",
            ),
            CelRule(
                rule="has(self.persistence) == has(oldSelf.persistence)",
                message="persistence cannot be added or removed after the cluster is created: "
                "the nodes' volumes are fixed when their StatefulSets are made",
                field_path=".persistence",
            ),
        )
    )

    shards: int = Field(
        MIN_SHARDS,
        le=MAX_SHARDS,
        description="Number of shards (masters). At least 3. Changing it reshards live: slots "
        "move with their keys.",
    )
    replicas_per_shard: int = Field(
        1,
        le=MAX_REPLICAS_PER_SHARD,
        description="Replicas of each master. 0 means no failover when a master is lost.",
    )
    image: str = Field(
        DEFAULT_REDIS_IMAGE,
        min_length=1,
        max_length=1024,
        description="Redis server image (Redis 7.0 or newer). The version is read from the "
        "running server, not from the tag.",
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements, description="Resources of each Redis container."
    )
    persistence: RedisPersistence | None = Field(
        None,
        description="Data volumes. Absent: data lives in memory only and is lost when a "
        "shard loses all its pods. Fixed at creation.",
    )
    auth: RedisAuth = Field(default_factory=RedisAuth, description="Password authentication.")
    tls: RedisTls = Field(default_factory=RedisTls, description="TLS for clients and the bus.")
    exporter: RedisExporter = Field(
        default_factory=RedisExporter, description="Prometheus exporter sidecar."
    )
    pod_disruption_budget: RedisDisruptionBudget = Field(
        default_factory=RedisDisruptionBudget, description="PodDisruptionBudgets per shard."
    )
    config: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_MAP_ENTRIES,
        description="Extra redis.conf directives, e.g. {maxmemory-policy: allkeys-lru}. "
        "Directives the operator manages (ports, cluster, auth, TLS, persistence) are refused.",
        json_schema_extra=cel_rules(
            CelRule(
                rule="self.all(key, !(key in " + repr(list(MANAGED_DIRECTIVES)) + "))",
                message="config must not set directives the operator manages: "
                + ", ".join(MANAGED_DIRECTIVES),
            ),
            CelRule(
                rule=f"self.all(key, key.matches('{CONFIG_KEY_PATTERN}'))",
                message="config keys are redis.conf directive names: lowercase letters, digits "
                "and dashes",
            ),
        ),
    )

    @model_validator(mode="after")
    def _cluster_shape(self) -> RedisClusterSpec:
        if self.shards < MIN_SHARDS:
            raise ValueError(f"shards must be at least {MIN_SHARDS}")
        if self.replicas_per_shard < 0:
            raise ValueError("replicasPerShard must be 0 or more")
        managed = sorted(set(self.config) & set(MANAGED_DIRECTIVES))
        if managed:
            raise ValueError(f"config must not set directives the operator manages: {managed}")
        return self


class RedisClusterPhase(StrEnum):
    """Where the cluster is."""

    PENDING = "Pending"
    BOOTSTRAPPING = "Bootstrapping"
    READY = "Ready"
    HEALING = "Healing"
    RESHARDING = "Resharding"
    DEGRADED = "Degraded"


class RedisNodeRole(StrEnum):
    """Role of a Redis node in the cluster."""

    MASTER = "Master"
    REPLICA = "Replica"


class RedisNodeStatus(ApiModel):
    """One Redis node as the operator last saw it."""

    pod_name: str = Field(min_length=1, max_length=253, description="Pod running the node.")
    node_id: str | None = Field(
        None,
        alias="nodeID",
        min_length=40,
        max_length=40,
        pattern=r"^[0-9a-f]{40}$",
        description="Redis Cluster node ID; nodes are identified by it, never by IP.",
    )
    role: RedisNodeRole | None = Field(None, description="Master or Replica.")
    shard: int = Field(ge=0, le=MAX_SHARDS, description="Index of the shard the node serves.")
    master_node_id: str | None = Field(
        None,
        alias="masterNodeID",
        min_length=40,
        max_length=40,
        pattern=r"^[0-9a-f]{40}$",
        description="Node ID of the master a replica follows.",
    )
    slots: int = Field(0, ge=0, le=SLOT_COUNT, description="Hash slots the node owns (masters).")


class RedisClusterStatus(StatusBase):
    """The observed state of a RedisCluster, written by the operator."""

    phase: RedisClusterPhase = Field(RedisClusterPhase.PENDING, description="Where the cluster is.")
    shards: int = Field(0, ge=0, description="Shards that exist (with a master).")
    ready_shards: int = Field(0, ge=0, description="Shards whose master and replicas are Ready.")
    slots_assigned: int = Field(
        0, ge=0, le=SLOT_COUNT, description="Hash slots assigned to a master (16384 when whole)."
    )
    slots_ok: int = Field(
        0, ge=0, le=SLOT_COUNT, description="Assigned slots whose master is reachable."
    )
    cluster_state: str | None = Field(
        None, max_length=16, description="cluster_state from CLUSTER INFO: ok or fail."
    )
    bootstrapped_at: datetime | None = Field(
        None,
        description="When the cluster was first formed. Once set, the operator never forms it "
        "again: it only heals.",
    )
    nodes: list[RedisNodeStatus] = Field(
        default_factory=list,
        max_length=MAX_SHARDS * (1 + MAX_REPLICAS_PER_SHARD),
        description="Every Redis node, keyed by pod name.",
        json_schema_extra=list_map("podName"),
    )
    endpoint: str | None = Field(
        None, max_length=512, description="Client address, host:port of the client Service."
    )
    auth_secret_name: str | None = Field(
        None,
        max_length=253,
        description="Secret holding the password (its name only; the password is never in status).",
    )


class RedisCluster(CustomResource):
    """A RedisCluster is a sharded Redis Cluster that the operator forms, heals and reshards
    without losing data."""

    KIND = "RedisCluster"

    kind: Literal["RedisCluster"] = "RedisCluster"
    spec: RedisClusterSpec = Field(description="Desired state of the cluster.")
    status: RedisClusterStatus = Field(
        default_factory=RedisClusterStatus, description="Observed state of the cluster."
    )
