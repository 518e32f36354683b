"""AgentPool: one kind of agent, kept running as active pods plus a warm pool of idle ones."""

from __future__ import annotations

import itertools
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from swarmops.api.common import (
    DNS_LABEL_PATTERN,
    MAX_MAP_ENTRIES,
    NAME_MAX_LENGTH,
    OWNED_KEY_PREFIX,
    TOKEN_PATTERN,
    ApiModel,
    CelRule,
    CustomResource,
    DnsLabel,
    IntOrPercent,
    StatusBase,
    cel_rules,
    is_zero,
    list_map,
)

#: Upper bound of replicas and warm pool size; it keeps a typo from asking for millions of pods.
MAX_POOL_PODS: Final = 10_000
MAX_CAPABILITIES: Final = 32
MAX_CANARY_STEPS: Final = 32
MAX_ANALYSIS_METRICS: Final = 8
WEEK_SECONDS: Final = 7 * 24 * 3600
DAY_SECONDS: Final = 24 * 3600

#: A capability or GPU product name.
Token = Annotated[str, Field(min_length=1, max_length=NAME_MAX_LENGTH, pattern=TOKEN_PATTERN)]

PRESERVE_UNKNOWN: Final[dict[str, Any]] = {"x-kubernetes-preserve-unknown-fields": True}


class AgentPoolConditionType(StrEnum):
    """Condition types an AgentPool reports besides Ready, Progressing and Degraded."""

    WARM_POOL_READY = "WarmPoolReady"


# --- Pod template ---------------------------------------------------------------------------


class Container(ApiModel):
    """A container of the agent pod. Only name and image are checked here; every other
    container field (command, env, resources, probes, ...) is passed to the pod as written
    and validated by the apiserver when the operator creates the pod."""

    model_config = ConfigDict(extra="allow", json_schema_extra=PRESERVE_UNKNOWN)

    name: DnsLabel = Field(description="Name of the container, unique within the pod.")
    image: str = Field(
        min_length=1, max_length=1024, description="Container image, e.g. ghcr.io/acme/agent:1.4."
    )


class PodSpec(ApiModel):
    """The agent pod's spec. Containers are checked here; every other pod spec field
    (volumes, affinity, tolerations, securityContext, ...) is kept as written and validated
    when the operator creates the pods."""

    model_config = ConfigDict(extra="allow", json_schema_extra=PRESERVE_UNKNOWN)

    containers: list[Container] = Field(
        min_length=1,
        max_length=32,
        description="Containers of the agent pod; at least one.",
        json_schema_extra=list_map("name"),
    )


class TemplateMetadata(ApiModel):
    """Labels and annotations put on every pod of the pool."""

    labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_MAP_ENTRIES,
        description="Labels for the pods. Keys under swarmops.dev/ are reserved for the operator.",
        json_schema_extra=cel_rules(
            CelRule(
                rule=f"self.all(key, !key.startsWith('{OWNED_KEY_PREFIX}'))",
                message=f"template labels must not use the {OWNED_KEY_PREFIX} prefix: "
                "the operator owns those keys",
            )
        ),
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_MAP_ENTRIES,
        description="Annotations for the pods.",
    )

    @model_validator(mode="after")
    def _no_owned_labels(self) -> TemplateMetadata:
        owned = sorted(key for key in self.labels if key.startswith(OWNED_KEY_PREFIX))
        if owned:
            raise ValueError(
                f"template labels must not use the {OWNED_KEY_PREFIX} prefix: {', '.join(owned)}"
            )
        return self


class PodTemplate(ApiModel):
    """The pod every agent of the pool runs, as in a Deployment's template."""

    metadata: TemplateMetadata = Field(
        default_factory=TemplateMetadata, description="Labels and annotations for the pods."
    )
    spec: PodSpec = Field(description="Pod spec of the agents.")


# --- Warm pool --------------------------------------------------------------------------------


class WarmPoolUpdatePolicy(StrEnum):
    """What happens to idle warm pods when the pod template changes."""

    #: Old warm pods stay until they are claimed or promoted; refills use the new template.
    ON_REPLENISH = "OnReplenish"
    #: Old warm pods are replaced at once (claimed pods are never touched).
    RECREATE = "Recreate"


class WarmPool(ApiModel):
    """Prewarmed idle pods that claims and scale-ups take without a cold start."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="!has(self.maxSize) || self.size <= self.maxSize",
                message="warmPool.size must not exceed warmPool.maxSize",
                field_path=".size",
            )
        )
    )

    size: int = Field(
        0,
        ge=0,
        le=MAX_POOL_PODS,
        description="Number of idle, Ready pods to keep on top of the active replicas.",
    )
    max_size: int | None = Field(
        None,
        ge=0,
        le=MAX_POOL_PODS,
        description="Most warm pods the pool may hold at any moment, including pods the "
        "operator prewarms ahead of a rollout step. Absent: size plus what a rollout step needs.",
    )
    refill_rate: int = Field(
        100,
        ge=1,
        le=10_000,
        description="Most warm pods created per second while refilling.",
    )
    readiness_timeout_seconds: int = Field(
        300,
        ge=1,
        le=DAY_SECONDS,
        description="A warm pod not Ready this long after it was scheduled is replaced. "
        "Unschedulable pods are not churned: they are counted in status instead.",
    )
    update_policy: WarmPoolUpdatePolicy = Field(
        WarmPoolUpdatePolicy.ON_REPLENISH,
        description="What happens to idle warm pods when the template changes: OnReplenish "
        "keeps them until used, Recreate replaces them at once.",
    )

    @model_validator(mode="after")
    def _size_within_max(self) -> WarmPool:
        if self.max_size is not None and self.size > self.max_size:
            raise ValueError("warmPool.size must not exceed warmPool.maxSize")
        return self


# --- GPU --------------------------------------------------------------------------------------


MIG_PROFILE_PATTERN: Final = r"^[1-7]g\.[0-9]{1,3}gb(\+me)?$"


class GpuRequirements(ApiModel):
    """GPUs each agent pod needs. The operator turns these into resource requests and node
    affinity on GPU Feature Discovery labels, and keeps pods off GPUs SwarmOps marked unhealthy."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="self.count >= 1 || (size(self.products) == 0 && "
                "!has(self.minMemoryMiB) && !has(self.migProfile))",
                message="gpu.count must be at least 1 when products, minMemoryMiB or migProfile "
                "ask for a GPU",
                field_path=".count",
            )
        )
    )

    count: int = Field(
        1,
        ge=0,
        le=16,
        description="GPUs (or MIG slices, with migProfile) per pod. 0 turns the request off.",
    )
    products: list[Token] = Field(
        default_factory=list,
        max_length=16,
        description="Acceptable GPU products, as in the nvidia.com/gpu.product node label "
        "(e.g. NVIDIA-H100-80GB-HBM3). Empty accepts any product.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    min_memory_mib: int | None = Field(
        None,
        alias="minMemoryMiB",
        ge=1,
        le=10_000_000,
        description="Least GPU memory per GPU in MiB, matched against the nvidia.com/gpu.memory "
        "node label (with migProfile: the whole GPU's memory, not the slice's).",
    )
    mig_profile: str | None = Field(
        None,
        pattern=MIG_PROFILE_PATTERN,
        max_length=16,
        description="MIG profile to request instead of whole GPUs, e.g. 1g.10gb "
        "(resource nvidia.com/mig-1g.10gb, as the device plugin's mixed MIG strategy names it).",
    )

    @model_validator(mode="after")
    def _count_when_asked(self) -> GpuRequirements:
        asked = bool(self.products) or self.min_memory_mib is not None or bool(self.mig_profile)
        if asked and self.count < 1:
            raise ValueError(
                "gpu.count must be at least 1 when products, minMemoryMiB or migProfile "
                "ask for a GPU"
            )
        return self


# --- Rollout ----------------------------------------------------------------------------------

#: A threshold on a measured value: "result < 0.05", "result >= 0.9 && result <= 1".
RESULT_CONDITION_PATTERN: Final = (
    r"^result\s*(<=|>=|==|!=|<|>)\s*-?[0-9]+(\.[0-9]+)?"
    r"(\s*&&\s*result\s*(<=|>=|==|!=|<|>)\s*-?[0-9]+(\.[0-9]+)?)?$"
)
HTTP_URL_PATTERN: Final = r"^https?://[^\s]+$"
_RESULT_CONDITION_RE: Final = re.compile(RESULT_CONDITION_PATTERN)
_RESULT_CONDITION_MESSAGE: Final = (
    "must compare result with a number, e.g. 'result < 0.05' or 'result >= 0.9 && result <= 1'"
)


def _check_result_condition(value: str) -> str:
    if not _RESULT_CONDITION_RE.match(value):
        raise ValueError(_RESULT_CONDITION_MESSAGE)
    return value


#: A threshold on a measured value. Checked by CEL rather than a schema pattern so that a
#: mistake reads as a sentence, not as a regular expression.
ResultCondition = Annotated[
    str,
    AfterValidator(_check_result_condition),
    Field(
        # Short on purpose: "result >= 0.9 && result <= 1" is 28 characters, and CEL's
        # cost estimate multiplies this length through every list the field is nested in.
        max_length=64,
        json_schema_extra=cel_rules(
            CelRule(
                rule=f"self.matches(r'{RESULT_CONDITION_PATTERN}')",
                message=_RESULT_CONDITION_MESSAGE,
            )
        ),
    ),
]


class CanaryPause(ApiModel):
    """Hold the rollout at the current weight."""

    duration_seconds: int | None = Field(
        None,
        ge=1,
        le=WEEK_SECONDS,
        description="How long to pause. Absent: until a person promotes the rollout.",
    )


class PrometheusQuery(ApiModel):
    """A PromQL query, run through the Prometheus HTTP API."""

    address: str | None = Field(
        None,
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        description="Base URL of the Prometheus HTTP API, e.g. http://prometheus:9090. "
        "Absent: the operator's configured default.",
    )
    query: str = Field(
        min_length=1,
        max_length=4096,
        description="PromQL instant query that returns one number, the measured result. "
        "{{revision}} is replaced by the canary revision.",
    )


class AnalysisMetric(ApiModel):
    """A metric measured repeatedly while the step runs."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="self.minSamples == 0 || has(self.sampleQuery)",
                message="sampleQuery is required when minSamples is above 0: it counts the "
                "observations behind each measurement",
                field_path=".sampleQuery",
                reason="FieldValueRequired",
            ),
            CelRule(
                rule="self.failureLimit < self.count",
                message="failureLimit must be smaller than count, otherwise the metric can "
                "never fail",
                field_path=".failureLimit",
            ),
        )
    )

    name: DnsLabel = Field(description="Name of the metric, unique within the analysis.")
    prometheus: PrometheusQuery = Field(description="Where and what to measure.")
    success_condition: ResultCondition = Field(
        description="When a measurement succeeds, e.g. 'result < 0.05'. One comparison, or two "
        "joined by &&.",
    )
    failure_condition: ResultCondition | None = Field(
        None,
        description="When a measurement fails. Absent: whatever is not a success fails. Present: "
        "a measurement that is neither success nor failure is inconclusive.",
    )
    initial_delay_seconds: int = Field(
        0, ge=0, le=DAY_SECONDS, description="Wait before the first measurement."
    )
    interval_seconds: int = Field(
        60, ge=1, le=DAY_SECONDS, description="Time between measurements."
    )
    count: int = Field(5, ge=1, le=1000, description="Number of measurements the metric takes.")
    failure_limit: int = Field(
        0, ge=0, le=1000, description="Failed measurements tolerated; one more rolls back."
    )
    inconclusive_limit: int = Field(
        0,
        ge=0,
        le=1000,
        description="Inconclusive measurements tolerated; one more pauses the rollout for a "
        "person.",
    )
    consecutive_error_limit: int = Field(
        4,
        ge=0,
        le=1000,
        description="Provider errors in a row tolerated (Prometheus unreachable, bad query); one "
        "more pauses the rollout. Errors never count as failures.",
    )
    sample_query: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="PromQL returning how many observations (tasks, requests) the result is "
        "based on.",
    )
    min_samples: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Fewest observations (from sampleQuery) a measurement needs. Fewer is "
        "'insufficient data': the rollout waits rather than judging.",
    )

    @model_validator(mode="after")
    def _consistent_limits(self) -> AnalysisMetric:
        if self.min_samples > 0 and self.sample_query is None:
            raise ValueError("sampleQuery is required when minSamples is above 0")
        if self.failure_limit >= self.count:
            raise ValueError("failureLimit must be smaller than count")
        return self


class PodChecks(ApiModel):
    """Checks on the canary pods themselves (prewarmed warm ones included), in force from
    the rollout's first step up to and including this analysis step; a failure rolls back."""

    require_ready: bool = Field(
        True,
        description="The analysis waits until every canary pod is Ready. false: it judges "
        "the canary pods as they are.",
    )
    max_restarts: int = Field(
        0,
        ge=0,
        le=1000,
        description="Container restarts tolerated per canary pod; a crash loop always fails.",
    )
    max_time_to_ready_seconds: int | None = Field(
        None,
        ge=1,
        le=DAY_SECONDS,
        description="A canary pod must become Ready within this many seconds of being scheduled.",
    )


class CanaryAnalysis(ApiModel):
    """Decide whether the canary is healthy: pod checks plus Prometheus metrics."""

    pod_checks: PodChecks = Field(
        default_factory=PodChecks, description="Checks on the canary pods."
    )
    metrics: list[AnalysisMetric] = Field(
        default_factory=list,
        max_length=MAX_ANALYSIS_METRICS,
        description="Prometheus metrics to measure, keyed by name.",
        json_schema_extra=list_map("name"),
    )


class CanaryStep(ApiModel):
    """One step of a canary rollout: exactly one of setWeight, pause or analysis."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="[has(self.setWeight), has(self.pause), has(self.analysis)]"
                ".filter(x, x).size() == 1",
                message="each canary step sets exactly one of setWeight, pause or analysis",
            )
        )
    )

    set_weight: int | None = Field(
        None,
        ge=1,
        le=100,
        description="Percentage of the active pods to run the new revision, by pod count.",
    )
    pause: CanaryPause | None = Field(None, description="Hold at the current weight.")
    analysis: CanaryAnalysis | None = Field(None, description="Judge the canary before going on.")

    @model_validator(mode="after")
    def _exactly_one(self) -> CanaryStep:
        chosen = [self.set_weight is not None, self.pause is not None, self.analysis is not None]
        if chosen.count(True) != 1:
            raise ValueError("each canary step sets exactly one of setWeight, pause or analysis")
        return self


class CanaryStrategy(ApiModel):
    """Move active pods to the new revision step by step, judging it on the way."""

    steps: list[CanaryStep] = Field(
        min_length=1,
        max_length=MAX_CANARY_STEPS,
        description="Steps in order. setWeight values must increase strictly; after the last "
        "step the new revision is promoted to all pods.",
        json_schema_extra=cel_rules(
            CelRule(
                rule="self.all(i, step, !has(step.setWeight) || self.all(j, earlier, j >= i || "
                "!has(earlier.setWeight) || earlier.setWeight < step.setWeight))",
                message="setWeight must increase strictly from one step to the next",
            )
        ),
    )

    @model_validator(mode="after")
    def _weights_increase(self) -> CanaryStrategy:
        weights = [step.set_weight for step in self.steps if step.set_weight is not None]
        if any(later <= earlier for earlier, later in itertools.pairwise(weights)):
            raise ValueError("setWeight must increase strictly from one step to the next")
        return self


class Rollout(ApiModel):
    """How a template change reaches the active pods."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="!((self.maxSurge == 0 || self.maxSurge == '0%') && "
                "(self.maxUnavailable == 0 || self.maxUnavailable == '0%'))",
                message="maxSurge and maxUnavailable must not both be zero: the rollout could "
                "never make progress",
            )
        )
    )

    max_surge: IntOrPercent = Field(
        "25%",
        description="Extra active pods allowed during a rollout, as a count or a percentage of "
        "replicas (rounded up).",
    )
    max_unavailable: IntOrPercent = Field(
        0,
        description="Active pods that may be missing during a rollout, as a count or a "
        "percentage of replicas (rounded down).",
    )
    drain_timeout_seconds: int = Field(
        600,
        ge=0,
        le=WEEK_SECONDS,
        description="How long an active agent being removed (scale-down, or a rollout "
        "replacing it) may finish its work: it is deleted once it reports idle, or when this "
        "passes.",
    )
    progress_deadline_seconds: int = Field(
        1800,
        ge=60,
        le=WEEK_SECONDS,
        description="A rollout step that makes no progress this long marks the pool Degraded "
        "(it is not rolled back for that alone). Agents load slowly, so this is generous.",
    )
    canary: CanaryStrategy | None = Field(
        None,
        description="Canary steps. Absent: a rolling replacement bounded by maxSurge and "
        "maxUnavailable.",
    )

    @model_validator(mode="after")
    def _can_progress(self) -> Rollout:
        if is_zero(self.max_surge) and is_zero(self.max_unavailable):
            raise ValueError("maxSurge and maxUnavailable must not both be zero")
        return self


class Disruption(ApiModel):
    """The PodDisruptionBudget the operator keeps for the pool's active and claimed pods."""

    max_unavailable: IntOrPercent = Field(
        1,
        description="Active and claimed pods a voluntary disruption (a node drain) may take at "
        "once, as a count or a percentage.",
    )


# --- Spec and status --------------------------------------------------------------------------


class AgentPoolSpec(ApiModel):
    """The desired state of an AgentPool."""

    replicas: int = Field(
        1,
        ge=0,
        le=MAX_POOL_PODS,
        description="Active agents serving the swarm's shared work. Scaling up promotes warm "
        "pods first. This is what kubectl scale and an HPA change.",
    )
    template: PodTemplate = Field(description="The pod every agent of the pool runs.")
    warm_pool: WarmPool = Field(
        default_factory=WarmPool,
        description="Prewarmed idle pods handed to claims and scale-ups without a cold start.",
    )
    capabilities: list[Token] = Field(
        default_factory=list,
        max_length=MAX_CAPABILITIES,
        description="What the agents of this pool can do (e.g. python, browser); claims and "
        "routing match on these.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    gpu: GpuRequirements | None = Field(
        None,
        description="GPUs each agent pod needs: the operator adds the resource request, node "
        "affinity on GPU Feature Discovery labels and a toleration of the nvidia.com/gpu taint "
        "to the pods. A request no GPU node can satisfy sets Degraded "
        "(UnsatisfiableGPURequest); the pods are still created.",
    )
    rollout: Rollout = Field(
        default_factory=Rollout, description="How a template change reaches the active pods."
    )
    disruption: Disruption = Field(
        default_factory=Disruption,
        description="Budget for voluntary disruptions of active and claimed pods.",
    )
    priority: int = Field(
        50,
        ge=0,
        le=100,
        description="Importance of this pool (higher wins): decides which pods the scheduler "
        "preempts first and who gets room when a swarm budget is short.",
    )


class RolloutPhase(StrEnum):
    """Where the current rollout is."""

    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    COMPLETED = "Completed"
    ABORTED = "Aborted"


class MetricPhase(StrEnum):
    """Outcome of an analysis metric so far."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


class MetricResult(ApiModel):
    """Measurements of one analysis metric in the current step."""

    name: DnsLabel = Field(description="Name of the metric.")
    phase: MetricPhase = Field(description="Outcome so far.")
    measurements: int = Field(0, ge=0, description="Measurements taken.")
    successes: int = Field(0, ge=0, description="Successful measurements.")
    failures: int = Field(0, ge=0, description="Failed measurements.")
    inconclusive: int = Field(0, ge=0, description="Inconclusive measurements.")
    consecutive_errors: int = Field(0, ge=0, description="Provider errors in a row.")
    last_value: float | None = Field(None, description="The most recent measured value.")
    last_samples: float | None = Field(
        None, description="Observations behind the most recent measurement (sampleQuery)."
    )
    last_measured_at: datetime | None = Field(
        None, description="When the most recent measurement was attempted."
    )
    insufficient_data: bool = Field(
        False,
        description="The most recent attempt had fewer samples than minSamples, or no data: "
        "the metric waits, without using up a measurement.",
    )
    message: str = Field("", max_length=1024, description="Why the metric is where it is.")


class RolloutStatus(ApiModel):
    """Progress of the current or last rollout; the operator resumes from here after a restart."""

    phase: RolloutPhase = Field(description="Where the rollout is.")
    stable_revision: str | None = Field(
        None, max_length=NAME_MAX_LENGTH, description="Revision known good."
    )
    canary_revision: str | None = Field(
        None, max_length=NAME_MAX_LENGTH, description="Revision being rolled out."
    )
    current_step_index: int = Field(
        0,
        ge=0,
        description="Index of the canary step in progress; the number of steps once every "
        "step is done and the canary is being promoted to all pods.",
    )
    started_at: datetime | None = Field(
        None, description="When this rollout began (the canary revision first appeared)."
    )
    step_started_at: datetime | None = Field(
        None, description="When the current step started; timed pauses count from here."
    )
    canary_weight: int = Field(
        0, ge=0, le=100, description="Percentage of active pods meant to run the canary."
    )
    canary_replicas: int = Field(0, ge=0, description="Active pods of the canary revision.")
    canary_ready_replicas: int = Field(0, ge=0, description="Ready active canary pods.")
    pause_reason: str | None = Field(
        None,
        max_length=128,
        description="Why the rollout is paused (e.g. Manual, Inconclusive, InsufficientData, "
        "ProviderErrors, Unschedulable).",
    )
    message: str = Field("", max_length=4096, description="Human-readable state of the rollout.")
    analysis: list[MetricResult] = Field(
        default_factory=list,
        max_length=MAX_ANALYSIS_METRICS,
        description="Results of the current analysis step, per metric.",
        json_schema_extra=list_map("name"),
    )


class RevisionStatus(ApiModel):
    """Pod counts of one template revision."""

    revision: str = Field(
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=DNS_LABEL_PATTERN,
        description="Stable hash of the pod template.",
    )
    replicas: int = Field(0, ge=0, description="Active pods of this revision.")
    ready_replicas: int = Field(0, ge=0, description="Ready active pods of this revision.")
    warm: int = Field(0, ge=0, description="Warm pods of this revision.")
    warm_ready: int = Field(0, ge=0, description="Ready warm pods of this revision.")
    claimed: int = Field(0, ge=0, description="Claimed pods of this revision.")


class AgentPoolStatus(StatusBase):
    """The observed state of an AgentPool, written by the operator."""

    replicas: int = Field(0, ge=0, description="Active pods (all revisions), Ready or not.")
    ready_replicas: int = Field(0, ge=0, description="Active pods that are Ready.")
    warm: int = Field(0, ge=0, description="Warm (idle) pods, Ready or not.")
    warm_ready: int = Field(0, ge=0, description="Warm pods that are Ready to be handed out.")
    claimed: int = Field(0, ge=0, description="Pods bound to an AgentClaim.")
    draining: int = Field(
        0,
        ge=0,
        description="Active pods being removed, drain-aware: no longer counted in replicas, "
        "deleted once their agent is idle or rollout.drainTimeoutSeconds passes. A pool "
        "has stopped when replicas, warm and draining are all 0.",
    )
    unschedulable: int = Field(
        0, ge=0, description="Pods the scheduler cannot place; a condition says why."
    )
    current_revision: str | None = Field(
        None,
        max_length=NAME_MAX_LENGTH,
        description="Revision (template hash) of the stable pods.",
    )
    update_revision: str | None = Field(
        None,
        max_length=NAME_MAX_LENGTH,
        description="Revision of the current template; differs from currentRevision while a "
        "rollout runs.",
    )
    selector: str | None = Field(
        None,
        max_length=1024,
        description="Label selector of the active pods, for the scale subresource (HPA, KEDA).",
    )
    revisions: list[RevisionStatus] = Field(
        default_factory=list,
        max_length=16,
        description="Pod counts per template revision.",
        json_schema_extra=list_map("revision"),
    )
    rollout: RolloutStatus | None = Field(None, description="Progress of the current rollout.")


class AgentPool(CustomResource):
    """An AgentPool keeps `replicas` active agent pods plus a warm pool of prewarmed idle pods
    that AgentClaims take in milliseconds, and rolls template changes out as canaries."""

    KIND = "AgentPool"

    kind: Literal["AgentPool"] = "AgentPool"
    spec: AgentPoolSpec = Field(description="Desired state of the pool.")
    status: AgentPoolStatus = Field(
        default_factory=AgentPoolStatus, description="Observed state of the pool."
    )
