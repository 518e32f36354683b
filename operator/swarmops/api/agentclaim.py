"""AgentClaim: "give me one dedicated agent now", served from a pool's warm pods."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import Field

from swarmops.api.agentpool import MAX_CAPABILITIES, Token
from swarmops.api.common import (
    MAX_MAP_ENTRIES,
    NAME_MAX_LENGTH,
    ApiModel,
    CustomResource,
    LocalObjectReference,
    StatusBase,
    cel_rules,
    immutable,
)

MONTH_SECONDS: Final = 30 * 24 * 3600
PARAMETER_MAX_LENGTH: Final = 4096

#: A claim parameter's value: bounded, so the immutability rule has a bounded CEL cost.
ParameterValue = Annotated[str, Field(max_length=PARAMETER_MAX_LENGTH)]


class AgentClaimConditionType(StrEnum):
    """Condition types an AgentClaim reports besides Ready, Progressing and Degraded."""

    BOUND = "Bound"


class WhenNoWarmPod(StrEnum):
    """What a claim does when its pool has no Ready warm pod that matches."""

    #: Start a pod from the pool's template at once (a cold start).
    COLD_START = "ColdStart"
    #: Wait for a warm pod, up to bindTimeoutSeconds.
    WAIT = "Wait"


class ShutdownPolicy(StrEnum):
    """What happens to the claimed pod when the claim ends."""

    DELETE = "Delete"
    RETAIN = "Retain"


class ClaimLifetime(ApiModel):
    """How long the claim holds its agent, and what happens to the pod afterwards."""

    ttl_seconds_after_bound: int | None = Field(
        None,
        ge=1,
        le=MONTH_SECONDS,
        description="The claim is released this many seconds after it was bound. Absent: it "
        "holds the agent until the claim is deleted.",
    )
    shutdown_policy: ShutdownPolicy = Field(
        ShutdownPolicy.DELETE,
        description="When the claim ends (ttl or deletion): Delete the pod, or Retain it "
        "(released from the claim, left for inspection).",
    )


class AgentClaimSpec(ApiModel):
    """The desired state of an AgentClaim."""

    pool_ref: LocalObjectReference = Field(
        description="The AgentPool to take an agent from, in the same namespace.",
        json_schema_extra=cel_rules(immutable("poolRef", "a claim belongs to one pool")),
    )
    capabilities: list[Token] = Field(
        default_factory=list,
        max_length=MAX_CAPABILITIES,
        description="Capabilities the agent must offer; all of them must be in the pool's "
        "spec.capabilities.",
        json_schema_extra={
            "x-kubernetes-list-type": "set",
            **cel_rules(immutable("capabilities")),
        },
    )
    parameters: dict[str, ParameterValue] = Field(
        default_factory=dict,
        max_length=MAX_MAP_ENTRIES,
        description="Free-form parameters for the agent (a session id, a repository, a task "
        "description): handed to the agent with the claim when it is bound "
        "(docs/agent-runtime.md). Immutable.",
        json_schema_extra=cel_rules(
            immutable("parameters", "they are handed to the agent once, when it is bound")
        ),
    )
    when_no_warm_pod: WhenNoWarmPod = Field(
        WhenNoWarmPod.COLD_START,
        description="When no matching warm pod is Ready: ColdStart a pod from the template, or "
        "Wait for one. Either way the claim fails after bindTimeoutSeconds.",
    )
    bind_timeout_seconds: int = Field(
        300,
        ge=1,
        le=24 * 3600,
        description="How long the claim may stay Pending before it fails with a reason.",
    )
    lifetime: ClaimLifetime = Field(
        default_factory=ClaimLifetime,
        description="How long the claim holds its agent and what happens to the pod afterwards.",
    )


class ClaimPhase(StrEnum):
    """Where a claim is in its life."""

    PENDING = "Pending"
    BOUND = "Bound"
    FAILED = "Failed"
    RELEASED = "Released"


class AgentClaimStatus(StatusBase):
    """The observed state of an AgentClaim, written by the operator."""

    phase: ClaimPhase = Field(ClaimPhase.PENDING, description="Where the claim is in its life.")
    pod_name: str | None = Field(
        None, max_length=253, description="Name of the pod bound to the claim."
    )
    pod_ip: str | None = Field(
        None, alias="podIP", max_length=64, description="IP address of the bound pod."
    )
    node_name: str | None = Field(None, max_length=253, description="Node the bound pod runs on.")
    revision: str | None = Field(
        None, max_length=NAME_MAX_LENGTH, description="Template revision of the bound pod."
    )
    warm_hit: bool | None = Field(
        None, description="True when a warm pod was handed out; false after a cold start."
    )
    bound_at: datetime | None = Field(None, description="When the claim was bound.")
    time_to_bind_milliseconds: int | None = Field(
        None, ge=0, description="From the claim's creationTimestamp to Bound, in milliseconds."
    )
    expires_at: datetime | None = Field(
        None, description="When the claim will be released (from lifetime.ttlSecondsAfterBound)."
    )


class AgentClaim(CustomResource):
    """An AgentClaim asks for one dedicated agent from an AgentPool: a warm pod is bound to
    it at once, or a pod is cold-started when the warm pool is empty."""

    KIND = "AgentClaim"

    kind: Literal["AgentClaim"] = "AgentClaim"
    spec: AgentClaimSpec = Field(description="Desired state of the claim.")
    status: AgentClaimStatus = Field(
        default_factory=AgentClaimStatus, description="Observed state of the claim."
    )
