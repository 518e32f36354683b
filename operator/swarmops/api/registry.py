"""What the API server needs to know about each kind besides its schema, and parsing by kind."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from swarmops.api.agentclaim import AgentClaim
from swarmops.api.agentpool import AgentPool
from swarmops.api.common import (
    DNS_1035_LABEL_PATTERN,
    GROUP,
    NAME_MAX_LENGTH,
    VERSION,
    CustomResource,
)
from swarmops.api.rediscluster import RedisCluster
from swarmops.api.swarm import SWARM_NAME_MAX_LENGTH, Swarm

CATEGORY: Final = "swarmops"

#: RedisCluster objects name StatefulSets <name>-<shard>; a StatefulSet name must leave room
#: for the controller-revision-hash label value (63 - 11 = 52), so 40 keeps shard suffixes safe.
REDIS_CLUSTER_NAME_MAX_LENGTH: Final = 40


@dataclass(frozen=True)
class PrinterColumn:
    """One column of ``kubectl get``."""

    name: str
    json_path: str
    type: str
    description: str
    priority: int = 0
    format: str | None = None

    def to_crd(self) -> dict[str, Any]:
        column: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.format is not None:
            column["format"] = self.format
        if self.priority:
            column["priority"] = self.priority
        return column


@dataclass(frozen=True)
class ScaleSubresource:
    """Where ``kubectl scale``, HPA and KEDA read and write replica counts."""

    spec_replicas_path: str
    status_replicas_path: str
    label_selector_path: str


@dataclass(frozen=True)
class KindInfo:
    """Everything about one kind that is not in its pydantic model."""

    model: type[CustomResource]
    plural: str
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
    name_max_length: int = NAME_MAX_LENGTH
    name_pattern: str | None = None
    scale: ScaleSubresource | None = None
    selectable_fields: tuple[str, ...] = ()
    categories: tuple[str, ...] = field(default=(CATEGORY,))

    @property
    def kind(self) -> str:
        return self.model.KIND

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def group(self) -> str:
        return GROUP

    @property
    def version(self) -> str:
        return VERSION


def _ready_column(priority: int = 0) -> PrinterColumn:
    return PrinterColumn(
        name="Status",
        json_path='.status.conditions[?(@.type=="Ready")].reason',
        type="string",
        description="Reason of the Ready condition.",
        priority=priority,
    )


_AGE = PrinterColumn(
    name="Age",
    json_path=".metadata.creationTimestamp",
    type="date",
    description="Time since the object was created.",
)

AGENT_POOL = KindInfo(
    model=AgentPool,
    plural="agentpools",
    short_names=("apool",),
    printer_columns=(
        PrinterColumn("Desired", ".spec.replicas", "integer", "Active agents wanted."),
        PrinterColumn("Ready", ".status.readyReplicas", "integer", "Active agents Ready."),
        PrinterColumn("Warm", ".status.warmReady", "integer", "Warm agents Ready to hand out."),
        PrinterColumn("Claimed", ".status.claimed", "integer", "Agents bound to claims."),
        PrinterColumn("Revision", ".status.currentRevision", "string", "Stable template revision."),
        PrinterColumn(
            "Rollout", ".status.rollout.phase", "string", "Phase of the rollout.", priority=1
        ),
        PrinterColumn(
            "Unschedulable",
            ".status.unschedulable",
            "integer",
            "Pods the scheduler cannot place.",
            priority=1,
        ),
        _ready_column(priority=1),
        _AGE,
    ),
    scale=ScaleSubresource(
        spec_replicas_path=".spec.replicas",
        status_replicas_path=".status.replicas",
        label_selector_path=".status.selector",
    ),
)

AGENT_CLAIM = KindInfo(
    model=AgentClaim,
    plural="agentclaims",
    short_names=("aclaim",),
    printer_columns=(
        PrinterColumn("Pool", ".spec.poolRef.name", "string", "Pool the agent comes from."),
        PrinterColumn("Phase", ".status.phase", "string", "Where the claim is in its life."),
        PrinterColumn("Pod", ".status.podName", "string", "Pod bound to the claim."),
        PrinterColumn("Warm", ".status.warmHit", "boolean", "Whether a warm pod was handed out."),
        PrinterColumn("Node", ".status.nodeName", "string", "Node of the pod.", priority=1),
        PrinterColumn(
            "Bind-ms",
            ".status.timeToBindMilliseconds",
            "integer",
            "Milliseconds from creation to Bound.",
            priority=1,
        ),
        _AGE,
    ),
    selectable_fields=(".spec.poolRef.name", ".status.phase"),
)

REDIS_CLUSTER = KindInfo(
    model=RedisCluster,
    plural="redisclusters",
    short_names=("rediscl",),
    name_max_length=REDIS_CLUSTER_NAME_MAX_LENGTH,
    name_pattern=DNS_1035_LABEL_PATTERN,
    printer_columns=(
        PrinterColumn("Shards", ".spec.shards", "integer", "Shards (masters) wanted."),
        PrinterColumn("Ready", ".status.readyShards", "integer", "Shards fully Ready."),
        PrinterColumn("Replicas", ".spec.replicasPerShard", "integer", "Replicas per master."),
        PrinterColumn("Phase", ".status.phase", "string", "Where the cluster is."),
        PrinterColumn(
            "Slots", ".status.slotsAssigned", "integer", "Hash slots assigned.", priority=1
        ),
        _ready_column(priority=1),
        _AGE,
    ),
)

SWARM = KindInfo(
    model=Swarm,
    plural="swarms",
    short_names=("sw",),
    name_max_length=SWARM_NAME_MAX_LENGTH,
    name_pattern=DNS_1035_LABEL_PATTERN,
    printer_columns=(
        PrinterColumn("Ready", ".status.readyPools", "integer", "Pools that are Ready."),
        PrinterColumn("Pools", ".status.totalPools", "integer", "Pools in the swarm."),
        PrinterColumn("Phase", ".status.phase", "string", "Where the swarm is."),
        PrinterColumn(
            "Suspended", ".spec.suspend", "boolean", "Whether the swarm is suspended.", priority=1
        ),
        _ready_column(priority=1),
        _AGE,
    ),
)

#: Every kind SwarmOps serves, in a stable order.
KINDS: Final[tuple[KindInfo, ...]] = (AGENT_POOL, AGENT_CLAIM, REDIS_CLUSTER, SWARM)

_BY_KIND: Final[dict[str, KindInfo]] = {info.kind: info for info in KINDS}


def kind_info(kind: str) -> KindInfo:
    """The registry entry of a kind; KeyError names the known kinds."""
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise KeyError(f"unknown kind {kind!r}; SwarmOps serves {sorted(_BY_KIND)}") from None


def parse(body: Mapping[str, Any]) -> CustomResource:
    """Parse a raw object of any SwarmOps kind into its model, dispatching on ``kind``."""
    kind = body.get("kind")
    if not isinstance(kind, str):
        raise ValueError("body has no kind")
    return kind_info(kind).model.from_body(body)
