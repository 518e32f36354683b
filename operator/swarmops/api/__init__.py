"""The SwarmOps API: pydantic models of every custom resource, the single source of truth.

The CRDs under crds/ are generated from these models (``swarmops crds``). The operator parses
every body into a model once, at the edge: ``AgentPool.from_body(body)`` or ``parse(body)``.
"""

from swarmops.api.agentclaim import (
    AgentClaim,
    AgentClaimConditionType,
    AgentClaimSpec,
    AgentClaimStatus,
    ClaimPhase,
)
from swarmops.api.agentpool import (
    AgentPool,
    AgentPoolConditionType,
    AgentPoolSpec,
    AgentPoolStatus,
)
from swarmops.api.common import (
    API_VERSION,
    GROUP,
    VERSION,
    Condition,
    ConditionStatus,
    ConditionType,
    CustomResource,
    ObjectMeta,
    StatusBase,
)
from swarmops.api.rediscluster import (
    RedisCluster,
    RedisClusterConditionType,
    RedisClusterSpec,
    RedisClusterStatus,
)
from swarmops.api.registry import KINDS, KindInfo, kind_info, parse
from swarmops.api.swarm import Swarm, SwarmConditionType, SwarmSpec, SwarmStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "AgentClaim",
    "AgentClaimConditionType",
    "AgentClaimSpec",
    "AgentClaimStatus",
    "AgentPool",
    "AgentPoolConditionType",
    "AgentPoolSpec",
    "AgentPoolStatus",
    "ClaimPhase",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "CustomResource",
    "KindInfo",
    "ObjectMeta",
    "RedisCluster",
    "RedisClusterConditionType",
    "RedisClusterSpec",
    "RedisClusterStatus",
    "StatusBase",
    "Swarm",
    "SwarmConditionType",
    "SwarmSpec",
    "SwarmStatus",
    "kind_info",
    "parse",
]
