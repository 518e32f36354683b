"""The operator-agent contract: the hand-off payload, where an agent listens, what the
operator tells a pod, and the agent's environment (Redis URL, password, queue)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmops.agent import contract
from swarmops.agent.config import ConfigError, load_config, redis_config
from swarmops.agent.contract import (
    AgentEndpoint,
    Assignment,
    ClaimInfo,
    PodRole,
    agent_endpoint,
    claim_queue,
)
from swarmops.api import AgentClaim
from swarmops.handlers.agentnotify import assignment_for_pod

UTC = datetime.UTC

texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)
times = st.datetimes(
    min_value=datetime.datetime(2000, 1, 1), max_value=datetime.datetime(2100, 1, 1)
).map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000, tzinfo=UTC))
claims = st.builds(
    ClaimInfo,
    name=texts,
    namespace=texts,
    uid=texts,
    parameters=st.dictionaries(texts, st.text(max_size=50), max_size=5),
    capabilities=st.lists(texts, max_size=3).map(tuple),
    bound_at=st.none() | times,
    warm_hit=st.none() | st.booleans(),
    expires_at=st.none() | times,
)


@given(claims)
def test_claims_round_trip_on_the_wire(claim: ClaimInfo) -> None:
    assert ClaimInfo.from_wire(claim.to_wire()) == claim


@given(texts, texts, claims)
def test_assignments_round_trip_on_the_wire(pod: str, uid: str, claim: ClaimInfo) -> None:
    for assignment in (
        Assignment(pod, uid, PodRole.CLAIMED, claim),
        Assignment(pod, uid, PodRole.ACTIVE),
        Assignment(pod, uid, PodRole.WARM),
    ):
        assert Assignment.from_wire(assignment.to_wire()) == assignment


@pytest.mark.parametrize(
    "wire",
    [
        [],
        {"role": "active"},
        {"pod": {"name": "p", "uid": "u"}, "role": "boss"},
        {"pod": {"name": "p", "uid": "u"}, "role": "claimed"},  # no claim
        {"pod": {"name": "p", "uid": "u"}, "role": "active", "claim": {"name": "c"}},
        {"pod": {"name": "p"}, "role": "warm"},
        {"pod": {"name": "p", "uid": "u"}, "role": "claimed", "claim": {"name": "c"}},
    ],
)
def test_malformed_assignments_are_refused(wire: Any) -> None:
    with pytest.raises(ValueError):
        Assignment.from_wire(wire)


def test_the_same_news_has_the_same_key() -> None:
    claim = ClaimInfo("c", "ns", "uid-1")
    first = Assignment("p", "u", PodRole.CLAIMED, claim)
    again = Assignment("p", "u", PodRole.CLAIMED, ClaimInfo("c", "ns", "uid-1", {"x": "y"}))
    assert first.key == again.key
    assert first.key != Assignment("p", "u", PodRole.CLAIMED, ClaimInfo("c", "ns", "uid-2")).key
    assert Assignment("p", "u", PodRole.WARM).key != Assignment("p", "u", PodRole.ACTIVE).key
    assert claim.queue == claim_queue("c") == "claim.c"


def pod_body(
    *,
    state: str = "warm",
    claim: str | None = None,
    claim_uid: str = "claim-uid",
    ip: str | None = "10.0.0.7",
    port_name: str = contract.AGENT_PORT_NAME,
) -> dict[str, Any]:
    labels = {"swarmops.dev/pool": "coder", "swarmops.dev/state": state}
    annotations = {}
    owners = [{"uid": "pool-uid", "controller": True, "kind": "AgentPool", "name": "coder"}]
    if claim:
        labels["swarmops.dev/claim"] = claim
        annotations = {"swarmops.dev/bound-at": "2030-01-02T03:04:05.678Z"}
        annotations["swarmops.dev/warm-hit"] = "true"
        owners = [{"uid": claim_uid, "controller": True, "kind": "AgentClaim", "name": claim}]
    return {
        "metadata": {
            "name": "coder-x1",
            "namespace": "team",
            "uid": "pod-uid",
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": owners,
            "creationTimestamp": "2030-01-02T03:00:00Z",
        },
        "spec": {
            "containers": [
                {"name": "sidecar", "ports": [{"containerPort": 9000}]},
                {"name": "agent", "ports": [{"name": port_name, "containerPort": 8090}]},
            ]
        },
        "status": {"podIP": ip} if ip else {},
    }


def test_an_agent_is_found_by_its_named_port() -> None:
    assert agent_endpoint(pod_body()) == AgentEndpoint(
        "coder-x1", "team", "pod-uid", "10.0.0.7", 8090
    )
    assert agent_endpoint(pod_body()).url("/v1/assignment") == "http://10.0.0.7:8090/v1/assignment"  # type: ignore[union-attr]
    assert agent_endpoint(pod_body(port_name="http")) is None  # not an agent: never called
    assert agent_endpoint(pod_body(ip=None)) is None  # not yet addressable
    ipv6 = AgentEndpoint("p", "n", "u", "fd00::1", 8090)
    assert ipv6.url("/status") == "http://[fd00::1]:8090/status"


def claim_object(name: str = "session", uid: str = "claim-uid") -> AgentClaim:
    return AgentClaim.from_body(
        {
            "apiVersion": "swarmops.dev/v1alpha1",
            "kind": "AgentClaim",
            "metadata": {"name": name, "namespace": "team", "uid": uid},
            "spec": {
                "poolRef": {"name": "coder"},
                "capabilities": ["python"],
                "parameters": {"repository": "https://example.com/app.git"},
            },
        }
    )


def test_the_operator_tells_warm_and_active_pods_their_role() -> None:
    for state in ("warm", "active"):
        told = assignment_for_pod(pod_body(state=state), None)
        assert told is not None
        endpoint, assignment = told
        assert assignment == Assignment("coder-x1", "pod-uid", PodRole(state))
        assert endpoint.ip == "10.0.0.7"


def test_the_operator_tells_a_claimed_pod_its_claim_and_parameters() -> None:
    told = assignment_for_pod(pod_body(state="claimed", claim="session"), claim_object())
    assert told is not None
    claim = told[1].claim
    assert claim is not None
    assert (claim.name, claim.namespace, claim.uid) == ("session", "team", "claim-uid")
    assert claim.parameters == {"repository": "https://example.com/app.git"}
    assert claim.capabilities == ("python",)
    assert claim.bound_at == datetime.datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert claim.warm_hit is True


@pytest.mark.parametrize(
    ("body", "claim"),
    [
        (pod_body(state="claimed", claim="session"), None),  # claim not in the cache yet
        (pod_body(state="claimed", claim="session"), claim_object(uid="other")),  # older claim
        (pod_body(state="claimed", claim="session"), claim_object(name="another")),
        (pod_body(state="nonsense"), None),
        (pod_body(port_name="metrics"), None),
    ],
)
def test_the_operator_says_nothing_it_is_not_sure_of(
    body: dict[str, Any], claim: AgentClaim | None
) -> None:
    assert assignment_for_pod(body, claim) is None


# --- the agent's environment -----------------------------------------------------------------


def files(**content: str) -> Any:
    return content.get


def test_redis_is_optional() -> None:
    assert redis_config({}) is None


def test_the_password_file_wins_over_the_variable() -> None:
    env = {
        "SWARMOPS_REDIS_URL": "redis://cache:6379",
        "SWARMOPS_REDIS_PASSWORD": "from-env",
        "SWARMOPS_REDIS_PASSWORD_FILE": "/secret/pw",
    }
    config = redis_config(env, files(**{"/secret/pw": "from-file\n"}))
    assert config is not None and config.password == "from-file"
    assert "from-file" not in repr(config)
    env.pop("SWARMOPS_REDIS_PASSWORD_FILE")
    assert redis_config(env, files()).password == "from-env"  # type: ignore[union-attr]


def test_the_default_secret_mount_is_read_when_nothing_is_said() -> None:
    env = {"SWARMOPS_REDIS_URL": "redis://cache:6379"}
    mounted = files(**{contract.DEFAULT_REDIS_PASSWORD_FILE: "mounted"})
    assert redis_config(env, mounted).password == "mounted"  # type: ignore[union-attr]
    assert redis_config(env, files()).password is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SWARMOPS_REDIS_URL": "http://x"}, "redis://"),
        ({"SWARMOPS_REDIS_URL": "redis://x", "SWARMOPS_REDIS_CLUSTER": "maybe"}, "auto"),
        (
            {"SWARMOPS_REDIS_URL": "redis://x", "SWARMOPS_REDIS_PASSWORD_FILE": "/nope"},
            "not found",
        ),
    ],
)
def test_bad_redis_settings_say_why(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        redis_config(env, files())


def test_cluster_mode_can_be_forced() -> None:
    env = {"SWARMOPS_REDIS_URL": "redis://x", "SWARMOPS_REDIS_CLUSTER": "true"}
    assert redis_config(env, files()).cluster is True  # type: ignore[union-attr]
    assert redis_config({**env, "SWARMOPS_REDIS_CLUSTER": "auto"}, files()).cluster is None  # type: ignore[union-attr]


def test_the_agent_config_from_a_pods_environment() -> None:
    env = {
        "POD_NAME": "coder-x1",
        "POD_NAMESPACE": "team",
        "POD_UID": "pod-uid",
        "POD_IP": "10.0.0.7",
        "SWARMOPS_POD_STATE": "warm",
        "SWARMOPS_CLAIM": "",
        "SWARMOPS_POOL": "coder",
        "SWARMOPS_DRAIN_TIMEOUT_SECONDS": "40",
    }
    config = load_config({"handler": "swarmops.agent.examples:echo"}, env, files())
    assert (config.name, config.bind_address, config.port) == ("coder-x1", "10.0.0.7", 8090)
    assert (config.queue, config.role, config.claim) == ("coder", PodRole.WARM, None)
    assert config.drain_timeout == 40.0 and config.redis is None
    flagged = load_config({"handler": "m:f", "queue": "jobs", "port": 0}, env, files())
    assert (flagged.queue, flagged.port) == ("jobs", 0)


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({}, {}, "--handler"),
        ({"handler": "no-colon"}, {}, "module:function"),
        ({"handler": "m:f"}, {"SWARMOPS_POD_STATE": "idle"}, "warm, active, claimed"),
        ({"handler": "m:f", "queue": "a{b}"}, {}, "queue"),
        ({"handler": "m:f"}, {"SWARMOPS_VISIBILITY_TIMEOUT_SECONDS": "soon"}, "not a number"),
        ({"handler": "m:f"}, {"SWARMOPS_MAX_DELIVERIES": "0"}, "between"),
    ],
)
def test_bad_agent_settings_say_why(
    flags: dict[str, Any], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(flags, env, files())
