"""What every agent pod is told about itself and its swarm: the one place the agent's
environment is built (docs/agent-runtime.md, "Configuration").

Every pool pod gets its identity and role through the downward API (the role follows the
`swarmops.dev/state` label, so a pod learns at start whether it is warm, active or
claimed). A pool that belongs to a swarm carries, on the AgentPool object, the swarm's
label and annotations naming its Redis endpoint, AUTH Secret and queue (the Swarm
controller writes them, `core/swarm.py`); its pods then get the swarm label (the Redis
NetworkPolicy admits the swarm's pods by it), `SWARMOPS_REDIS_URL`, the Secret mounted
where the agent looks for the password, and `SWARMOPS_QUEUE`.

What the user wrote wins: a variable, a volume or a mount path the template already has
is left as it is.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any, Final

from swarmops.agent import contract
from swarmops.api import AgentPool
from swarmops.api.common import OWNED_KEY_PREFIX
from swarmops.core.pods import CLAIM_LABEL, POOL_LABEL, STATE_LABEL
from swarmops.core.rediscluster.names import SWARM_LABEL

#: On an AgentPool of a swarm: the agents' Redis URL (redis:// or rediss://).
REDIS_URL_ANNOTATION: Final = f"{OWNED_KEY_PREFIX}redis-url"
#: On an AgentPool of a swarm: the Secret (name) and key holding the Redis password.
REDIS_SECRET_ANNOTATION: Final = f"{OWNED_KEY_PREFIX}redis-auth-secret"
REDIS_SECRET_KEY_ANNOTATION: Final = f"{OWNED_KEY_PREFIX}redis-auth-key"
#: On an AgentPool of a swarm: the Secret whose ca.crt verifies a TLS Redis.
REDIS_TLS_SECRET_ANNOTATION: Final = f"{OWNED_KEY_PREFIX}redis-tls-secret"
#: On an AgentPool of a swarm: the queue its active agents serve, <swarm>.<pool>.
QUEUE_ANNOTATION: Final = f"{OWNED_KEY_PREFIX}queue"

REDIS_VOLUME: Final = "swarmops-redis"
TLS_CA_KEY: Final = "ca.crt"


def _label_ref(name: str, label: str) -> dict[str, Any]:
    return {
        "name": name,
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{label}']"}},
    }


def _field_ref(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def pod_env(pool: AgentPool) -> list[dict[str, Any]]:
    """The variables every container of the pool's pods gets (unless it sets them)."""
    env = [
        _field_ref(contract.ENV_POD_NAME, "metadata.name"),
        _field_ref(contract.ENV_POD_NAMESPACE, "metadata.namespace"),
        _field_ref(contract.ENV_POD_UID, "metadata.uid"),
        _field_ref(contract.ENV_POD_IP, "status.podIP"),
        _label_ref(contract.ENV_POD_STATE, STATE_LABEL),
        _label_ref(contract.ENV_POOL, POOL_LABEL),
        _label_ref(contract.ENV_CLAIM, CLAIM_LABEL),
    ]
    notes = pool.metadata.annotations
    url = notes.get(REDIS_URL_ANNOTATION)
    if url:
        env.append({"name": contract.ENV_REDIS_URL, "value": url})
        if notes.get(REDIS_SECRET_ANNOTATION):
            # Named explicitly (not left to the agent's default): the test bed's process
            # node rewrites mount paths in variables, not inside the agent's code.
            env.append(
                {
                    "name": contract.ENV_REDIS_PASSWORD_FILE,
                    "value": contract.DEFAULT_REDIS_PASSWORD_FILE,
                }
            )
        if notes.get(REDIS_TLS_SECRET_ANNOTATION):
            env.append(
                {"name": contract.ENV_REDIS_CA_FILE, "value": contract.DEFAULT_REDIS_CA_FILE}
            )
    queue = notes.get(QUEUE_ANNOTATION)
    if queue:
        env.append({"name": contract.ENV_QUEUE, "value": queue})
    return env


def pod_labels(pool: AgentPool) -> dict[str, str]:
    """Labels the pool's pods carry for the swarm (the Redis NetworkPolicy selects on them)."""
    swarm = pool.metadata.labels.get(SWARM_LABEL)
    return {SWARM_LABEL: swarm} if swarm else {}


def redis_volume(pool: AgentPool) -> dict[str, Any] | None:
    """The swarm's Redis password (and TLS CA), projected into one directory where the
    agent looks for them; None for a pool outside a swarm or a Redis without AUTH/TLS."""
    notes = pool.metadata.annotations
    if not notes.get(REDIS_URL_ANNOTATION):
        return None
    sources: list[dict[str, Any]] = []
    secret = notes.get(REDIS_SECRET_ANNOTATION)
    if secret:
        key = notes.get(REDIS_SECRET_KEY_ANNOTATION) or "password"
        path = posixpath.basename(contract.DEFAULT_REDIS_PASSWORD_FILE)
        sources.append({"secret": {"name": secret, "items": [{"key": key, "path": path}]}})
    tls = notes.get(REDIS_TLS_SECRET_ANNOTATION)
    if tls:
        path = posixpath.basename(contract.DEFAULT_REDIS_CA_FILE)
        sources.append({"secret": {"name": tls, "items": [{"key": TLS_CA_KEY, "path": path}]}})
    if not sources:
        return None
    return {"name": REDIS_VOLUME, "projected": {"sources": sources, "defaultMode": 0o440}}


#: Where the password and the CA appear (the agent's default paths share this directory).
REDIS_MOUNT_PATH: Final = posixpath.dirname(contract.DEFAULT_REDIS_PASSWORD_FILE)


def _with_env(container: Mapping[str, Any], env: Sequence[dict[str, Any]]) -> list[Any]:
    existing = list(container.get("env") or [])
    taken = {item.get("name") for item in existing if isinstance(item, Mapping)}
    return existing + [item for item in env if item["name"] not in taken]


def agent_pod(pool: AgentPool, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """`manifest` (a pod of `pool`) with the agent's environment, labels and mounts added.

    Pure: the input is not changed.
    """
    metadata = dict(manifest.get("metadata") or {})
    metadata["labels"] = {**(metadata.get("labels") or {}), **pod_labels(pool)}
    spec = dict(manifest.get("spec") or {})
    env = pod_env(pool)
    volume = redis_volume(pool)
    existing = list(spec.get("volumes") or [])
    if volume is not None and any(
        isinstance(v, Mapping) and v.get("name") == REDIS_VOLUME for v in existing
    ):
        volume = None  # the user's own volume of that name wins
    if volume is not None:
        spec["volumes"] = [*existing, volume]
    containers = []
    for raw in spec.get("containers") or []:
        container = dict(raw)
        container["env"] = _with_env(container, env)
        mounts = list(container.get("volumeMounts") or [])
        if volume is not None and not any(
            isinstance(m, Mapping) and m.get("mountPath") == REDIS_MOUNT_PATH for m in mounts
        ):
            mounts.append({"name": REDIS_VOLUME, "mountPath": REDIS_MOUNT_PATH, "readOnly": True})
            container["volumeMounts"] = mounts
        containers.append(container)
    spec["containers"] = containers
    return {**manifest, "metadata": metadata, "spec": spec}
