"""The contract between the operator and an agent: names, paths and the hand-off payload.

Pure and dependency-free, so both sides import it: the agent runtime (`swarmops agent`)
serves what is named here and the operator (handlers/claims.py through
handlers/agentnotify.py) calls it. docs/agent-runtime.md is the prose version.

The hand-off. When a pod of an AgentPool changes what it is for (bound to a claim,
promoted from warm to active), the operator POSTs an `Assignment` to the agent's HTTP
endpoint: the container port named `swarmops-agent`, path `/v1/assignment`. Right
after a bind patch succeeds it does so at once, in the background (the claim's status
write does not wait for it); and whenever the pod's watch event shows a Ready pod
whose state it has not yet delivered to that pod (cold starts once Ready, promotions,
a POST lost or an operator restarted), so delivery is level-triggered. The agent
accepts an assignment only for its own pod (name and uid), and the same assignment
twice is a no-op, so repeats are harmless.

Why a push over HTTP: the operator already holds everything the agent needs the
moment the bind patch returns (the pod's IP from its body, the claim's parameters
from its cache), so one POST on the pod network reaches the agent with no API call,
no per-agent watch on the API server (agents need no RBAC at all)
and no dependency on a Redis the pool may not have. Redis pub/sub would lose a
message sent while the agent reconnects; the downward API refreshes labels only on
the kubelet's sync period (tens of seconds).
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

#: The container port, by name, that the operator delivers assignments to. A pod with no
#: port of that name is not a SwarmOps agent and is never called.
AGENT_PORT_NAME: Final = "swarmops-agent"
DEFAULT_AGENT_PORT: Final = 8090

ASSIGNMENT_PATH: Final = "/v1/assignment"
#: POST {"pod", "podUid"}: take no new task, finish the current one, keep serving; the
#: answer is the /status body, so the operator learns `idle` in the same round trip.
DRAIN_PATH: Final = "/v1/drain"
STATUS_PATH: Final = "/status"
READY_PATH: Final = "/readyz"
LIVE_PATH: Final = "/healthz"
METRICS_PATH: Final = "/metrics"

# --- the agent's environment (docs/agent-runtime.md, "Configuration") -------------------------

#: redis://[user@]host:port[/db] or rediss:// for TLS. Absent: no queues and no heartbeat.
ENV_REDIS_URL: Final = "SWARMOPS_REDIS_URL"
#: The password itself (from a secretKeyRef) ...
ENV_REDIS_PASSWORD: Final = "SWARMOPS_REDIS_PASSWORD"
#: ... or a file holding it (a mounted Secret); the file wins when both are set.
ENV_REDIS_PASSWORD_FILE: Final = "SWARMOPS_REDIS_PASSWORD_FILE"
#: Read when neither of the two above is set and the file exists: where a Swarm mounts
#: its RedisCluster's AUTH Secret (key `password`).
DEFAULT_REDIS_PASSWORD_FILE: Final = "/var/run/secrets/swarmops.dev/redis/password"
ENV_REDIS_USERNAME: Final = "SWARMOPS_REDIS_USERNAME"
#: CA bundle for rediss://; by default /var/run/secrets/swarmops.dev/redis/ca.crt if present.
ENV_REDIS_CA_FILE: Final = "SWARMOPS_REDIS_CA_FILE"
DEFAULT_REDIS_CA_FILE: Final = "/var/run/secrets/swarmops.dev/redis/ca.crt"
#: auto (default: ask the server), true (Redis Cluster) or false (a single server).
ENV_REDIS_CLUSTER: Final = "SWARMOPS_REDIS_CLUSTER"
ENV_QUEUE: Final = "SWARMOPS_QUEUE"
#: The pod's `swarmops.dev/state` and `swarmops.dev/claim` labels at start, through the
#: downward API (fieldRef metadata.labels['...']): what the agent is before any hand-off.
ENV_POD_STATE: Final = "SWARMOPS_POD_STATE"
ENV_CLAIM: Final = "SWARMOPS_CLAIM"
ENV_POOL: Final = "SWARMOPS_POOL"
ENV_POD_NAME: Final = "POD_NAME"
ENV_POD_NAMESPACE: Final = "POD_NAMESPACE"
ENV_POD_UID: Final = "POD_UID"
ENV_POD_IP: Final = "POD_IP"


class PodRole(enum.StrEnum):
    """What an agent is for: the operator's `swarmops.dev/state` label of its pod.

    `warm` agents wait to be claimed and take no queued work (so a claim always finds
    them idle); `active` agents serve their pool's queue; a `claimed` agent serves only
    its claim's queue.
    """

    WARM = "warm"
    ACTIVE = "active"
    CLAIMED = "claimed"


def claim_queue(claim: str) -> str:
    """The queue a claimed agent serves: tasks for one claim go to its agent only."""
    return f"claim.{claim}"


@dataclass(frozen=True, slots=True)
class ClaimInfo:
    """The claim an agent was bound to, with what its spec asks of the agent."""

    name: str
    namespace: str
    uid: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ()
    bound_at: datetime.datetime | None = None
    warm_hit: bool | None = None
    expires_at: datetime.datetime | None = None

    @property
    def queue(self) -> str:
        return claim_queue(self.name)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
            "parameters": dict(self.parameters),
            "capabilities": list(self.capabilities),
        }
        if self.bound_at is not None:
            wire["boundAt"] = _time(self.bound_at)
        if self.warm_hit is not None:
            wire["warmHit"] = self.warm_hit
        if self.expires_at is not None:
            wire["expiresAt"] = _time(self.expires_at)
        return wire

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> ClaimInfo:
        parameters = wire.get("parameters") or {}
        if not isinstance(parameters, Mapping):
            raise ValueError("claim.parameters must be an object")
        warm_hit = wire.get("warmHit")
        return cls(
            name=_required(wire, "name"),
            namespace=_required(wire, "namespace"),
            uid=_required(wire, "uid"),
            parameters={str(k): str(v) for k, v in parameters.items()},
            capabilities=tuple(str(c) for c in wire.get("capabilities") or ()),
            bound_at=_parse_time(wire.get("boundAt")),
            warm_hit=bool(warm_hit) if warm_hit is not None else None,
            expires_at=_parse_time(wire.get("expiresAt")),
        )


@dataclass(frozen=True, slots=True)
class Assignment:
    """What the operator tells an agent it is for: the body of POST /v1/assignment."""

    pod: str
    pod_uid: str
    role: PodRole
    claim: ClaimInfo | None = None

    @property
    def key(self) -> tuple[str, str]:
        """Two assignments with the same key say the same thing (deduplication)."""
        return (str(self.role), self.claim.uid if self.claim is not None else "")

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "pod": {"name": self.pod, "uid": self.pod_uid},
            "role": str(self.role),
        }
        if self.claim is not None:
            wire["claim"] = self.claim.to_wire()
        return wire

    @classmethod
    def from_wire(cls, wire: Any) -> Assignment:
        if not isinstance(wire, Mapping):
            raise ValueError("an assignment is a JSON object")
        pod = wire.get("pod")
        if not isinstance(pod, Mapping):
            raise ValueError("assignment.pod must be an object with name and uid")
        try:
            role = PodRole(str(wire.get("role")))
        except ValueError:
            roles = ", ".join(str(r) for r in PodRole)
            raise ValueError(f"assignment.role must be one of {roles}") from None
        claim_wire = wire.get("claim")
        claim = None
        if claim_wire is not None:
            if not isinstance(claim_wire, Mapping):
                raise ValueError("assignment.claim must be an object")
            claim = ClaimInfo.from_wire(claim_wire)
        if (role is PodRole.CLAIMED) != (claim is not None):
            raise ValueError("assignment.claim is given exactly when role is claimed")
        return cls(
            pod=_required(pod, "name"), pod_uid=_required(pod, "uid"), role=role, claim=claim
        )


@dataclass(frozen=True, slots=True)
class AgentEndpoint:
    """Where a pod's agent listens, read from the pod: its IP and named port."""

    pod: str
    namespace: str
    pod_uid: str
    ip: str
    port: int

    def url(self, path: str) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}{path}"


def agent_port(pod_body: Mapping[str, Any]) -> int | None:
    """The container port named `swarmops-agent` of a pod body, if any."""
    spec = pod_body.get("spec") or {}
    for container in spec.get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("name") == AGENT_PORT_NAME and port.get("containerPort"):
                return int(port["containerPort"])
    return None


def agent_endpoint(pod_body: Mapping[str, Any]) -> AgentEndpoint | None:
    """Where to deliver assignments to this pod: None when it is no agent or has no IP."""
    port = agent_port(pod_body)
    metadata = pod_body.get("metadata") or {}
    ip = (pod_body.get("status") or {}).get("podIP")
    if port is None or not ip:
        return None
    return AgentEndpoint(
        pod=str(metadata.get("name") or ""),
        namespace=str(metadata.get("namespace") or ""),
        pod_uid=str(metadata.get("uid") or ""),
        ip=str(ip),
        port=port,
    )


def _required(wire: Mapping[str, Any], key: str) -> str:
    value = wire.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} is required (a non-empty string)")
    return value


def _time(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime.datetime | None:
    if not value:
        return None
    parsed = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)
