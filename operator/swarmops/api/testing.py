"""Hypothesis strategies for valid SwarmOps objects, for tests of this package and others.

Every strategy builds objects through the models, so whatever it draws passes the models'
own validation; the end-to-end tests check that the real apiserver accepts the same objects
and returns them without pruning a field. Needs the ``dev`` extra (hypothesis).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from hypothesis import strategies as st

from swarmops.api.agentclaim import (
    AgentClaim,
    AgentClaimSpec,
    AgentClaimStatus,
    ClaimLifetime,
    ClaimPhase,
    ShutdownPolicy,
    WhenNoWarmPod,
)
from swarmops.api.agentpool import (
    AgentPool,
    AgentPoolSpec,
    AgentPoolStatus,
    AnalysisMetric,
    CanaryAnalysis,
    CanaryPause,
    CanaryStep,
    CanaryStrategy,
    Container,
    Disruption,
    GpuRequirements,
    MetricPhase,
    MetricResult,
    PodChecks,
    PodSpec,
    PodTemplate,
    PrometheusQuery,
    RevisionStatus,
    Rollout,
    RolloutPhase,
    RolloutStatus,
    TemplateMetadata,
    WarmPool,
    WarmPoolUpdatePolicy,
)
from swarmops.api.common import (
    Condition,
    ConditionStatus,
    ConditionType,
    LocalObjectReference,
    ObjectMeta,
    ResourceRequirements,
    SecretKeyReference,
)
from swarmops.api.rediscluster import (
    MANAGED_DIRECTIVES,
    ReclaimPolicy,
    RedisAuth,
    RedisCluster,
    RedisClusterPhase,
    RedisClusterSpec,
    RedisClusterStatus,
    RedisDisruptionBudget,
    RedisExporter,
    RedisNodeRole,
    RedisNodeStatus,
    RedisPersistence,
    RedisTls,
)
from swarmops.api.swarm import (
    ResourceUsage,
    ShutdownOrder,
    Swarm,
    SwarmBudget,
    SwarmPhase,
    SwarmPool,
    SwarmPoolPhase,
    SwarmPoolStatus,
    SwarmRedis,
    SwarmRedisStatus,
    SwarmShutdown,
    SwarmSpec,
    SwarmStartup,
    SwarmStatus,
)

T = TypeVar("T")

# Small sizes keep each example quick to apply to a real apiserver.
_SMALL = 3

dns_labels = st.from_regex(r"\A[a-z]([a-z0-9-]{0,14}[a-z0-9])?\Z")
tokens = st.from_regex(r"\A[a-z][a-z0-9._-]{0,10}[a-z0-9]\Z")
images = st.builds(
    "{}/{}:{}".format,
    st.sampled_from(["ghcr.io/example", "registry.local:5000/agents", "docker.io/library"]),
    dns_labels,
    st.from_regex(r"\A[0-9]{1,2}\.[0-9]{1,2}(-[a-z]{1,5})?\Z"),
)
label_values = st.from_regex(r"\A([A-Za-z0-9]([-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?)?\Z")
label_keys = st.builds(
    "{}{}".format, st.sampled_from(["", "app.kubernetes.io/", "example.com/"]), dns_labels
)
quantities = st.one_of(
    st.integers(min_value=0, max_value=1024),
    st.builds("{}m".format, st.integers(min_value=1, max_value=64_000)),
    st.builds(
        "{}{}".format, st.integers(min_value=1, max_value=512), st.sampled_from(["Mi", "Gi", "k"])
    ),
)
int_or_percent = st.one_of(
    st.integers(min_value=0, max_value=50),
    st.builds("{}%".format, st.integers(min_value=0, max_value=100)),
)
timestamps = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)
counts = st.integers(min_value=0, max_value=10_000)


def _optional(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.one_of(st.none(), strategy)


# --- AgentPool -----------------------------------------------------------------------------


@st.composite
def containers(draw: st.DrawFn, name: str) -> Container:
    # Fields the schema does not model must survive untouched (preserve-unknown-fields).
    extra: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "command": st.lists(tokens, min_size=1, max_size=_SMALL),
                "env": st.lists(
                    st.fixed_dictionaries({"name": dns_labels.map(str.upper), "value": tokens}),
                    max_size=_SMALL,
                ),
                "resources": st.fixed_dictionaries(
                    {"requests": st.fixed_dictionaries({"cpu": st.just("100m")})}
                ),
                "imagePullPolicy": st.sampled_from(["Always", "IfNotPresent"]),
            },
        )
    )
    return Container.model_validate({"name": name, "image": draw(images), **extra})


@st.composite
def pod_templates(draw: st.DrawFn) -> PodTemplate:
    names = draw(st.lists(dns_labels, min_size=1, max_size=_SMALL, unique=True))
    extra: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "terminationGracePeriodSeconds": st.integers(min_value=0, max_value=3600),
                "nodeSelector": st.dictionaries(label_keys, label_values, max_size=_SMALL),
                "tolerations": st.lists(
                    st.fixed_dictionaries(
                        {"key": label_keys, "operator": st.just("Exists")},
                        optional={"effect": st.sampled_from(["NoSchedule", "NoExecute"])},
                    ),
                    max_size=_SMALL,
                ),
            },
        )
    )
    spec = PodSpec.model_validate(
        {"containers": [draw(containers(name)) for name in names], **extra}
    )
    metadata = TemplateMetadata(
        labels=draw(st.dictionaries(label_keys, label_values, max_size=_SMALL)),
        annotations=draw(st.dictionaries(label_keys, tokens, max_size=_SMALL)),
    )
    return PodTemplate(metadata=metadata, spec=spec)


@st.composite
def warm_pools(draw: st.DrawFn) -> WarmPool:
    size = draw(st.integers(min_value=0, max_value=50))
    return WarmPool(
        size=size,
        max_size=draw(_optional(st.integers(min_value=size, max_value=100))),
        refill_rate=draw(st.integers(min_value=1, max_value=10_000)),
        readiness_timeout_seconds=draw(st.integers(min_value=1, max_value=86_400)),
        update_policy=draw(st.sampled_from(WarmPoolUpdatePolicy)),
    )


@st.composite
def gpu_requirements(draw: st.DrawFn) -> GpuRequirements:
    products = draw(
        st.lists(
            st.sampled_from(["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-40GB", "NVIDIA-L4"]),
            max_size=2,
            unique=True,
        )
    )
    min_memory = draw(_optional(st.integers(min_value=1, max_value=200_000)))
    mig = draw(_optional(st.sampled_from(["1g.10gb", "3g.40gb", "1g.12gb+me"])))
    asked = bool(products) or min_memory is not None or mig is not None
    count = draw(st.integers(min_value=1 if asked else 0, max_value=16))
    return GpuRequirements(
        count=count, products=products, min_memory_mib=min_memory, mig_profile=mig
    )


result_conditions = st.builds(
    "result {} {}".format,
    st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
    st.sampled_from(["0", "0.05", "1", "-3", "100.5"]),
)


@st.composite
def analysis_metrics(draw: st.DrawFn, name: str) -> AnalysisMetric:
    count = draw(st.integers(min_value=1, max_value=20))
    min_samples = draw(st.integers(min_value=0, max_value=100))
    sample_query = "sum(tasks_total)" if min_samples else draw(_optional(st.just("sum(x)")))
    return AnalysisMetric(
        name=name,
        prometheus=PrometheusQuery(
            address=draw(_optional(st.just("http://prometheus.monitoring:9090"))),
            query='sum(rate(errors_total{revision="{{revision}}"}[1m]))',
        ),
        success_condition=draw(result_conditions),
        failure_condition=draw(_optional(result_conditions)),
        initial_delay_seconds=draw(st.integers(min_value=0, max_value=600)),
        interval_seconds=draw(st.integers(min_value=1, max_value=600)),
        count=count,
        failure_limit=draw(st.integers(min_value=0, max_value=count - 1)),
        inconclusive_limit=draw(st.integers(min_value=0, max_value=10)),
        consecutive_error_limit=draw(st.integers(min_value=0, max_value=10)),
        sample_query=sample_query,
        min_samples=min_samples,
    )


@st.composite
def canary_analyses(draw: st.DrawFn) -> CanaryAnalysis:
    names = draw(st.lists(dns_labels, max_size=2, unique=True))
    return CanaryAnalysis(
        pod_checks=PodChecks(
            require_ready=draw(st.booleans()),
            max_restarts=draw(st.integers(min_value=0, max_value=10)),
            max_time_to_ready_seconds=draw(_optional(st.integers(min_value=1, max_value=3600))),
        ),
        metrics=[draw(analysis_metrics(name)) for name in names],
    )


@st.composite
def canary_strategies(draw: st.DrawFn) -> CanaryStrategy:
    kinds = draw(
        st.lists(st.sampled_from(["setWeight", "pause", "analysis"]), min_size=1, max_size=6)
    )
    weights = iter(
        sorted(
            draw(
                st.lists(
                    st.integers(min_value=1, max_value=100),
                    min_size=kinds.count("setWeight"),
                    max_size=kinds.count("setWeight"),
                    unique=True,
                )
            )
        )
    )
    steps: list[CanaryStep] = []
    for kind in kinds:
        if kind == "setWeight":
            steps.append(CanaryStep(set_weight=next(weights)))
        elif kind == "pause":
            duration = draw(_optional(st.integers(min_value=1, max_value=3600)))
            steps.append(CanaryStep(pause=CanaryPause(duration_seconds=duration)))
        else:
            steps.append(CanaryStep(analysis=draw(canary_analyses())))
    return CanaryStrategy(steps=steps)


@st.composite
def rollouts(draw: st.DrawFn) -> Rollout:
    surge = draw(int_or_percent)
    unavailable = draw(int_or_percent)
    if surge in (0, "0%") and unavailable in (0, "0%"):
        surge = 1
    return Rollout(
        max_surge=surge,
        max_unavailable=unavailable,
        drain_timeout_seconds=draw(st.integers(min_value=0, max_value=3600)),
        progress_deadline_seconds=draw(st.integers(min_value=60, max_value=7200)),
        canary=draw(_optional(canary_strategies())),
    )


@st.composite
def agent_pool_specs(draw: st.DrawFn) -> AgentPoolSpec:
    return AgentPoolSpec(
        replicas=draw(st.integers(min_value=0, max_value=100)),
        template=draw(pod_templates()),
        warm_pool=draw(warm_pools()),
        capabilities=draw(st.lists(tokens, max_size=_SMALL, unique=True)),
        gpu=draw(_optional(gpu_requirements())),
        rollout=draw(rollouts()),
        disruption=Disruption(max_unavailable=draw(int_or_percent)),
        priority=draw(st.integers(min_value=0, max_value=100)),
    )


@st.composite
def conditions(draw: st.DrawFn) -> list[Condition]:
    types = draw(
        st.lists(
            st.sampled_from([*ConditionType, "WarmPoolReady", "example.com/Custom"]),
            max_size=4,
            unique=True,
        )
    )
    return [
        Condition(
            type=str(condition_type),
            status=draw(st.sampled_from(ConditionStatus)),
            observed_generation=draw(_optional(st.integers(min_value=0, max_value=1000))),
            last_transition_time=draw(timestamps),
            reason=draw(st.from_regex(r"\A[A-Z][A-Za-z0-9]{0,20}\Z")),
            message=draw(st.text(max_size=40)),
        )
        for condition_type in types
    ]


@st.composite
def rollout_statuses(draw: st.DrawFn) -> RolloutStatus:
    names = draw(st.lists(dns_labels, max_size=2, unique=True))
    finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
    return RolloutStatus(
        phase=draw(st.sampled_from(RolloutPhase)),
        stable_revision=draw(_optional(dns_labels)),
        canary_revision=draw(_optional(dns_labels)),
        current_step_index=draw(st.integers(min_value=0, max_value=31)),
        started_at=draw(_optional(timestamps)),
        step_started_at=draw(_optional(timestamps)),
        canary_weight=draw(st.integers(min_value=0, max_value=100)),
        canary_replicas=draw(counts),
        canary_ready_replicas=draw(counts),
        pause_reason=draw(_optional(st.sampled_from(["Manual", "Inconclusive"]))),
        message=draw(st.text(max_size=40)),
        analysis=[
            MetricResult(
                name=name,
                phase=draw(st.sampled_from(MetricPhase)),
                measurements=draw(counts),
                successes=draw(counts),
                failures=draw(counts),
                inconclusive=draw(counts),
                consecutive_errors=draw(counts),
                last_value=draw(_optional(finite)),
                last_samples=draw(_optional(finite)),
                last_measured_at=draw(_optional(timestamps)),
                insufficient_data=draw(st.booleans()),
            )
            for name in names
        ],
    )


@st.composite
def agent_pool_statuses(draw: st.DrawFn) -> AgentPoolStatus:
    revisions = draw(st.lists(dns_labels, max_size=_SMALL, unique=True))
    return AgentPoolStatus(
        observed_generation=draw(st.integers(min_value=0, max_value=1000)),
        conditions=draw(conditions()),
        replicas=draw(counts),
        ready_replicas=draw(counts),
        warm=draw(counts),
        warm_ready=draw(counts),
        claimed=draw(counts),
        draining=draw(counts),
        unschedulable=draw(counts),
        current_revision=draw(_optional(dns_labels)),
        update_revision=draw(_optional(dns_labels)),
        selector=draw(_optional(st.just("swarmops.dev/pool=x,swarmops.dev/state=active"))),
        revisions=[
            RevisionStatus(revision=revision, replicas=draw(counts), warm=draw(counts))
            for revision in revisions
        ],
        rollout=draw(_optional(rollout_statuses())),
    )


# --- AgentClaim ----------------------------------------------------------------------------


@st.composite
def agent_claim_specs(draw: st.DrawFn) -> AgentClaimSpec:
    return AgentClaimSpec(
        pool_ref=LocalObjectReference(name=draw(dns_labels)),
        capabilities=draw(st.lists(tokens, max_size=_SMALL, unique=True)),
        when_no_warm_pod=draw(st.sampled_from(WhenNoWarmPod)),
        bind_timeout_seconds=draw(st.integers(min_value=1, max_value=86_400)),
        lifetime=ClaimLifetime(
            ttl_seconds_after_bound=draw(_optional(st.integers(min_value=1, max_value=86_400))),
            shutdown_policy=draw(st.sampled_from(ShutdownPolicy)),
        ),
    )


@st.composite
def agent_claim_statuses(draw: st.DrawFn) -> AgentClaimStatus:
    return AgentClaimStatus(
        observed_generation=draw(st.integers(min_value=0, max_value=1000)),
        conditions=draw(conditions()),
        phase=draw(st.sampled_from(ClaimPhase)),
        pod_name=draw(_optional(dns_labels)),
        pod_ip=draw(_optional(st.ip_addresses(v=4).map(str))),
        node_name=draw(_optional(dns_labels)),
        revision=draw(_optional(dns_labels)),
        warm_hit=draw(_optional(st.booleans())),
        bound_at=draw(_optional(timestamps)),
        time_to_bind_milliseconds=draw(_optional(st.integers(min_value=0, max_value=10**9))),
        expires_at=draw(_optional(timestamps)),
    )


# --- RedisCluster --------------------------------------------------------------------------


resource_requirements = st.builds(
    ResourceRequirements,
    requests=st.dictionaries(st.sampled_from(["cpu", "memory"]), quantities, max_size=2),
    limits=st.dictionaries(st.sampled_from(["cpu", "memory"]), quantities, max_size=2),
)


@st.composite
def redis_cluster_specs(draw: st.DrawFn) -> RedisClusterSpec:
    auth_enabled = draw(st.booleans())
    tls_enabled = draw(st.booleans())
    config_keys = st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z").filter(
        lambda key: key not in MANAGED_DIRECTIVES
    )
    return RedisClusterSpec(
        shards=draw(st.integers(min_value=3, max_value=100)),
        replicas_per_shard=draw(st.integers(min_value=0, max_value=5)),
        image=draw(st.sampled_from(["redis:7.2", "redis:7", "valkey/valkey:8"])),
        resources=draw(resource_requirements),
        persistence=draw(
            _optional(
                st.builds(
                    RedisPersistence,
                    size=quantities,
                    storage_class_name=_optional(dns_labels),
                    append_only=st.booleans(),
                    reclaim_policy=st.sampled_from(ReclaimPolicy),
                )
            )
        ),
        auth=RedisAuth(
            enabled=auth_enabled,
            secret_ref=draw(
                _optional(st.builds(SecretKeyReference, name=dns_labels, key=tokens))
                if auth_enabled
                else st.none()
            ),
        ),
        tls=RedisTls(
            enabled=tls_enabled,
            secret_name=draw(dns_labels if tls_enabled else _optional(dns_labels)),
        ),
        exporter=RedisExporter(
            enabled=draw(st.booleans()),
            port=draw(st.integers(min_value=1024, max_value=65535)),
            resources=draw(resource_requirements),
        ),
        pod_disruption_budget=RedisDisruptionBudget(enabled=draw(st.booleans())),
        config=draw(st.dictionaries(config_keys, tokens, max_size=_SMALL)),
    )


@st.composite
def redis_cluster_statuses(draw: st.DrawFn) -> RedisClusterStatus:
    pods = draw(st.lists(dns_labels, max_size=4, unique=True))
    node_ids = st.from_regex(r"\A[0-9a-f]{40}\Z")
    return RedisClusterStatus(
        observed_generation=draw(st.integers(min_value=0, max_value=1000)),
        conditions=draw(conditions()),
        phase=draw(st.sampled_from(RedisClusterPhase)),
        shards=draw(st.integers(min_value=0, max_value=100)),
        ready_shards=draw(st.integers(min_value=0, max_value=100)),
        slots_assigned=draw(st.integers(min_value=0, max_value=16384)),
        slots_ok=draw(st.integers(min_value=0, max_value=16384)),
        cluster_state=draw(_optional(st.sampled_from(["ok", "fail"]))),
        bootstrapped_at=draw(_optional(timestamps)),
        nodes=[
            RedisNodeStatus(
                pod_name=pod,
                node_id=draw(_optional(node_ids)),
                role=draw(_optional(st.sampled_from(RedisNodeRole))),
                shard=draw(st.integers(min_value=0, max_value=99)),
                master_node_id=draw(_optional(node_ids)),
                slots=draw(st.integers(min_value=0, max_value=16384)),
            )
            for pod in pods
        ],
        endpoint=draw(_optional(st.just("cache-client.default.svc:6379"))),
        auth_secret_name=draw(_optional(dns_labels)),
    )


# --- Swarm ---------------------------------------------------------------------------------


@st.composite
def swarm_specs(draw: st.DrawFn) -> SwarmSpec:
    names = draw(
        st.lists(
            st.from_regex(r"\A[a-z]([a-z0-9-]{0,10}[a-z0-9])?\Z"),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    pools: list[SwarmPool] = []
    for index, name in enumerate(names):
        # Depending only on earlier pools keeps the graph acyclic, as a person would write it.
        earlier = names[:index]
        depends_on = draw(st.lists(st.sampled_from(earlier), unique=True)) if earlier else []
        inline = draw(st.booleans())
        pools.append(
            SwarmPool(
                name=name,
                spec=draw(agent_pool_specs()) if inline else None,
                pool_ref=None if inline else LocalObjectReference(name=draw(dns_labels)),
                depends_on=depends_on,
                weight=draw(st.integers(min_value=1, max_value=1000)),
            )
        )
    redis_kind = draw(st.sampled_from(["none", "spec", "ref"]))
    redis = None
    if redis_kind == "spec":
        redis = SwarmRedis(spec=draw(redis_cluster_specs()))
    elif redis_kind == "ref":
        redis = SwarmRedis(cluster_ref=LocalObjectReference(name=draw(dns_labels)))
    budget = draw(
        _optional(
            st.builds(
                SwarmBudget,
                cpu=_optional(quantities),
                memory=_optional(quantities),
                gpus=_optional(st.integers(min_value=0, max_value=64)),
            )
        )
    )
    return SwarmSpec(
        pools=pools,
        redis=redis,
        budget=budget,
        suspend=draw(st.booleans()),
        startup=SwarmStartup(
            dependency_timeout_seconds=draw(st.integers(min_value=1, max_value=86_400))
        ),
        shutdown=SwarmShutdown(
            order=draw(st.sampled_from(ShutdownOrder)),
            drain_timeout_seconds=draw(st.integers(min_value=0, max_value=86_400)),
        ),
    )


@st.composite
def swarm_statuses(draw: st.DrawFn) -> SwarmStatus:
    names = draw(st.lists(st.from_regex(r"\A[a-z][a-z0-9]{0,8}\Z"), max_size=3, unique=True))
    return SwarmStatus(
        observed_generation=draw(st.integers(min_value=0, max_value=1000)),
        conditions=draw(conditions()),
        phase=draw(st.sampled_from(SwarmPhase)),
        pools=[
            SwarmPoolStatus(
                name=name,
                agent_pool=f"swarm-{name}",
                phase=draw(st.sampled_from(SwarmPoolPhase)),
                replicas=draw(counts),
                ready_replicas=draw(counts),
                warm_ready=draw(counts),
                allowed_replicas=draw(_optional(counts)),
                allowed_warm=draw(_optional(counts)),
                message=draw(st.text(max_size=40)),
            )
            for name in names
        ],
        redis=draw(
            _optional(
                st.builds(
                    SwarmRedisStatus,
                    name=dns_labels,
                    ready=st.booleans(),
                    endpoint=_optional(st.just("swarm-redis-client.ns.svc:6379")),
                    auth_secret_name=_optional(dns_labels),
                )
            )
        ),
        ready_pools=draw(st.integers(min_value=0, max_value=32)),
        total_pools=draw(st.integers(min_value=0, max_value=32)),
        budget_used=draw(
            _optional(
                st.builds(
                    ResourceUsage,
                    cpu=_optional(quantities),
                    memory=_optional(quantities),
                    gpus=st.integers(min_value=0, max_value=64),
                )
            )
        ),
    )


# --- Whole objects -------------------------------------------------------------------------

#: Names valid for every kind (the shortest limit is the Swarm's 30 characters).
object_names = st.from_regex(r"\A[a-z]([a-z0-9-]{0,20}[a-z0-9])?\Z")


def agent_pools() -> st.SearchStrategy[AgentPool]:
    return st.builds(
        AgentPool,
        metadata=st.builds(ObjectMeta, name=object_names),
        spec=agent_pool_specs(),
        status=agent_pool_statuses(),
    )


def agent_claims() -> st.SearchStrategy[AgentClaim]:
    return st.builds(
        AgentClaim,
        metadata=st.builds(ObjectMeta, name=object_names),
        spec=agent_claim_specs(),
        status=agent_claim_statuses(),
    )


def redis_clusters() -> st.SearchStrategy[RedisCluster]:
    return st.builds(
        RedisCluster,
        metadata=st.builds(ObjectMeta, name=object_names),
        spec=redis_cluster_specs(),
        status=redis_cluster_statuses(),
    )


def swarms() -> st.SearchStrategy[Swarm]:
    return st.builds(
        Swarm,
        metadata=st.builds(ObjectMeta, name=object_names),
        spec=swarm_specs(),
        status=swarm_statuses(),
    )


#: A strategy per kind, for tests that run over every kind.
STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "AgentPool": agent_pools(),
    "AgentClaim": agent_claims(),
    "RedisCluster": redis_clusters(),
    "Swarm": swarms(),
}
