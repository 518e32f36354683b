"""RedisCluster: a sharded Redis Cluster, formed, healed and resharded by the operator."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final, Literal

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
    "cluster-allow-replica-migration",
    "appenddirname",
    "dbfilename",
    "include",
    "rename-command",
)
CONFIG_KEY_PATTERN: Final = r"^[a-z][a-z0-9-]*$"
#: One line of redis.conf: a value with a line break would smuggle in another directive.
CONFIG_VALUE_PATTERN: Final = r"^[^\r\n]*$"
MAX_TOLERATIONS: Final = 32
#: Label values as Kubernetes allows them (keys are checked by the apiserver when the
#: operator writes the objects that carry them).
LABEL_VALUE_PATTERN: Final = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]
ConfigValue = Annotated[str, Field(max_length=4096, pattern=CONFIG_VALUE_PATTERN)]


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


MAX_TERMS: Final = 16
MAX_VALUES: Final = 64

SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]


class LabelSelectorRequirement(ApiModel):
    """One requirement of a label selector."""

    key: str = Field(min_length=1, max_length=316, description="Label key.")
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[LabelValue] = Field(
        default_factory=list,
        max_length=MAX_VALUES,
        description="Values for In and NotIn; empty for Exists and DoesNotExist.",
    )


class LabelSelector(ApiModel):
    """A label selector, as in metav1.LabelSelector."""

    match_labels: dict[str, LabelValue] = Field(
        default_factory=dict, max_length=MAX_MAP_ENTRIES, description="Labels that must match."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=MAX_TERMS, description="Requirements that must hold."
    )


class NodeSelectorRequirement(ApiModel):
    """One requirement on a node's labels or fields."""

    key: str = Field(min_length=1, max_length=316, description="Label or field key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="In, NotIn, Exists, DoesNotExist, Gt or Lt."
    )
    values: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list, max_length=MAX_VALUES, description="Values to compare with."
    )


class NodeSelectorTerm(ApiModel):
    """Node requirements that must all hold."""

    match_expressions: list[NodeSelectorRequirement] = Field(
        default_factory=list, max_length=MAX_TERMS, description="Requirements on node labels."
    )
    match_fields: list[NodeSelectorRequirement] = Field(
        default_factory=list, max_length=MAX_TERMS, description="Requirements on node fields."
    )


class NodeSelector(ApiModel):
    """Terms of which at least one must match."""

    node_selector_terms: list[NodeSelectorTerm] = Field(
        min_length=1, max_length=MAX_TERMS, description="Alternatives; one must match."
    )


class PreferredSchedulingTerm(ApiModel):
    """A preferred node term and its weight."""

    weight: int = Field(ge=1, le=100, description="Weight, 1-100.")
    preference: NodeSelectorTerm = Field(description="The node term preferred.")


class NodeAffinity(ApiModel):
    """Node affinity, as in a pod's affinity.nodeAffinity."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        None, description="Nodes the pods must run on."
    )
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = Field(
        default_factory=list, max_length=MAX_TERMS, description="Nodes the pods prefer."
    )


class PodAffinityTerm(ApiModel):
    """Pods (by labels) near or away from which the pods run, per topology domain."""

    label_selector: LabelSelector | None = Field(None, description="Pods this term is about.")
    topology_key: str = Field(
        min_length=1,
        max_length=316,
        description="Node label whose values are the domains, e.g. kubernetes.io/hostname.",
    )
    namespaces: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list,
        max_length=MAX_VALUES,
        description="Namespaces of those pods; empty: the pod's own namespace.",
    )
    namespace_selector: LabelSelector | None = Field(
        None, description="Namespaces of those pods, by labels."
    )


class WeightedPodAffinityTerm(ApiModel):
    """A preferred pod affinity term and its weight."""

    weight: int = Field(ge=1, le=100, description="Weight, 1-100.")
    pod_affinity_term: PodAffinityTerm = Field(description="The term preferred.")


class PodAffinity(ApiModel):
    """Pod affinity or anti-affinity, as in a pod's affinity.podAffinity."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] = Field(
        default_factory=list, max_length=MAX_TERMS, description="Terms that must hold."
    )
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] = Field(
        default_factory=list, max_length=MAX_TERMS, description="Terms preferred."
    )


class Affinity(ApiModel):
    """Scheduling constraints, as in a pod's affinity."""

    node_affinity: NodeAffinity | None = Field(None, description="Node affinity.")
    pod_affinity: PodAffinity | None = Field(None, description="Pod affinity.")
    pod_anti_affinity: PodAffinity | None = Field(None, description="Pod anti-affinity.")


class Toleration(ApiModel):
    """A toleration of a node taint, as in a pod's ``tolerations``."""

    key: str | None = Field(
        None,
        max_length=316,
        description="Taint key the toleration applies to; empty with operator Exists "
        "tolerates every taint.",
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        None, description="Exists or Equal (the default)."
    )
    value: str | None = Field(
        None, max_length=63, description="Taint value to match when operator is Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches every effect."
    )
    toleration_seconds: int | None = Field(
        None,
        description="How long a NoExecute taint is tolerated before eviction; absent: forever.",
    )


class RedisNetworkPolicy(ApiModel):
    """A NetworkPolicy in front of the Redis pods."""

    enabled: bool = Field(
        True,
        description="Admit only the cluster's own pods (replication and the cluster bus), "
        "its clients and the SwarmOps operator.",
    )
    client_pod_labels: dict[str, LabelValue] | None = Field(
        None,
        max_length=MAX_MAP_ENTRIES,
        description="Labels of the pods, in the same namespace, that may connect as clients. "
        "Absent: the pods of the cluster's swarm (swarmops.dev/swarm=<the cluster's "
        "swarmops.dev/swarm label>), or pods labelled swarmops.dev/redis-client=<name> for a "
        "cluster outside any swarm.",
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
    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=MAX_MAP_ENTRIES,
        description="Node labels the Redis pods must be scheduled onto, as in a pod's "
        "nodeSelector.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=MAX_TOLERATIONS,
        description="Taints the Redis pods tolerate, as in a pod's tolerations.",
    )
    affinity: Affinity | None = Field(
        None,
        description="Pod affinity, as in a pod's affinity. Absent: the operator prefers to keep "
        "a shard's pods on different nodes and zones.",
    )
    priority_class_name: ObjectName | None = Field(
        None, description="PriorityClass of the Redis pods."
    )
    network_policy: RedisNetworkPolicy = Field(
        default_factory=RedisNetworkPolicy, description="The NetworkPolicy in front of Redis."
    )
    config: dict[str, ConfigValue] = Field(
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
    UPDATING = "Updating"
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
    slots_to_move: int = Field(
        0,
        ge=0,
        le=SLOT_COUNT,
        description="Slots still to move to reach an even split over the wanted shards "
        "(0 when balanced); above 0 while resharding.",
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
