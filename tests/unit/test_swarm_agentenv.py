"""The agent's environment, built in one place: every pool pod, and a swarm pool's Redis."""

from __future__ import annotations

from typing import Any

from swarmops.agent import contract
from swarmops.agent.config import load_config
from swarmops.api import AgentPool
from swarmops.core.agentenv import (
    QUEUE_ANNOTATION,
    REDIS_MOUNT_PATH,
    REDIS_SECRET_ANNOTATION,
    REDIS_SECRET_KEY_ANNOTATION,
    REDIS_TLS_SECRET_ANNOTATION,
    REDIS_URL_ANNOTATION,
    REDIS_VOLUME,
    agent_pod,
)
from swarmops.core.pods import PodState
from swarmops.core.pool import pod_manifest
from swarmops.core.rediscluster.names import SWARM_LABEL
from swarmops.core.testing import make_pool

SWARM_NOTES = {
    REDIS_URL_ANNOTATION: "redis://research-redis.team.svc:6379",
    REDIS_SECRET_ANNOTATION: "research-redis-auth",
    REDIS_SECRET_KEY_ANNOTATION: "password",
    QUEUE_ANNOTATION: "research.workers",
}


def swarm_pool(notes: dict[str, str] | None = None) -> AgentPool:
    pool = make_pool(1)
    metadata = pool.metadata.model_copy(
        update={
            "labels": {SWARM_LABEL: "research"},
            "annotations": SWARM_NOTES if notes is None else notes,
        }
    )
    return pool.model_copy(update={"metadata": metadata})


def env_of(manifest: dict[str, Any], container: int = 0) -> dict[str, Any]:
    return {e["name"]: e for e in manifest["spec"]["containers"][container]["env"]}


def resolve(manifest: dict[str, Any], state: str) -> dict[str, str]:
    """The variables as a kubelet would set them for this pod (downward API resolved)."""
    labels = manifest["metadata"]["labels"]
    fields = {
        "metadata.name": "research-workers-abcde",
        "metadata.namespace": "team",
        "metadata.uid": "uid-pod",
        "status.podIP": "10.0.0.7",
    }
    resolved: dict[str, str] = {}
    for name, item in env_of(manifest).items():
        if "value" in item:
            resolved[name] = item["value"]
            continue
        path = item["valueFrom"]["fieldRef"]["fieldPath"]
        if path.startswith("metadata.labels['"):
            key = path[len("metadata.labels['") : -2]
            value = labels.get(key, "")
            resolved[name] = state if key == "swarmops.dev/state" else value
        else:
            resolved[name] = fields[path]
    return resolved


def test_every_pool_pod_learns_its_role_and_identity() -> None:
    manifest = pod_manifest(
        make_pool(1), make_pool(1).spec.template.to_wire(), "rev1", PodState.WARM
    )
    env = env_of(manifest)
    assert env[contract.ENV_POD_STATE]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['swarmops.dev/state']"
    )
    for name in (contract.ENV_POD_NAME, contract.ENV_POD_IP, contract.ENV_POOL):
        assert name in env
    assert contract.ENV_REDIS_URL not in env
    assert "volumes" not in manifest["spec"]
    assert SWARM_LABEL not in manifest["metadata"]["labels"]


def test_a_swarm_pool_pod_gets_redis_the_secret_mount_the_queue_and_the_label() -> None:
    pool = swarm_pool()
    manifest = pod_manifest(pool, pool.spec.template.to_wire(), "rev1", PodState.ACTIVE)
    assert manifest["metadata"]["labels"][SWARM_LABEL] == "research"
    env = env_of(manifest)
    assert env[contract.ENV_REDIS_URL]["value"] == "redis://research-redis.team.svc:6379"
    assert env[contract.ENV_QUEUE]["value"] == "research.workers"
    assert env[contract.ENV_REDIS_PASSWORD_FILE]["value"] == contract.DEFAULT_REDIS_PASSWORD_FILE
    (volume,) = manifest["spec"]["volumes"]
    assert volume["name"] == REDIS_VOLUME
    (source,) = volume["projected"]["sources"]
    assert source["secret"] == {
        "name": "research-redis-auth",
        "items": [{"key": "password", "path": "password"}],
    }
    (mount,) = manifest["spec"]["containers"][0]["volumeMounts"]
    assert mount == {"name": REDIS_VOLUME, "mountPath": REDIS_MOUNT_PATH, "readOnly": True}
    assert contract.DEFAULT_REDIS_PASSWORD_FILE.startswith(REDIS_MOUNT_PATH + "/")


def test_the_agent_reads_what_the_pod_is_given() -> None:
    pool = swarm_pool()
    manifest = pod_manifest(pool, pool.spec.template.to_wire(), "rev1", PodState.WARM)
    environ = resolve(manifest, "warm")
    files = {contract.DEFAULT_REDIS_PASSWORD_FILE: "s3cret\n"}
    config = load_config({"handler": "m:f"}, environ, files.get)
    assert config.queue == "research.workers"
    assert str(config.role) == "warm"
    assert config.redis is not None
    assert config.redis.url == "redis://research-redis.team.svc:6379"
    assert config.redis.password == "s3cret"
    assert config.name == "research-workers-abcde" and config.bind_address == "10.0.0.7"


def test_what_the_user_wrote_wins() -> None:
    pool = swarm_pool()
    manifest: dict[str, Any] = {
        "metadata": {"labels": {}},
        "spec": {
            "containers": [
                {
                    "name": "agent",
                    "image": "x",
                    "env": [{"name": contract.ENV_QUEUE, "value": "mine"}],
                    "volumeMounts": [{"name": "own", "mountPath": REDIS_MOUNT_PATH}],
                }
            ],
            "volumes": [{"name": "own", "emptyDir": {}}],
        },
    }
    out = agent_pod(pool, manifest)
    env = out["spec"]["containers"][0]["env"]
    assert [e["value"] for e in env if e["name"] == contract.ENV_QUEUE] == ["mine"]
    assert out["spec"]["containers"][0]["volumeMounts"] == [
        {"name": "own", "mountPath": REDIS_MOUNT_PATH}
    ]
    # The input is not changed.
    assert manifest["spec"]["containers"][0]["env"] == [
        {"name": contract.ENV_QUEUE, "value": "mine"}
    ]


def test_tls_adds_the_ca_beside_the_password() -> None:
    pool = swarm_pool({**SWARM_NOTES, REDIS_TLS_SECRET_ANNOTATION: "redis-tls"})
    manifest = pod_manifest(pool, pool.spec.template.to_wire(), "rev1", PodState.ACTIVE)
    (volume,) = manifest["spec"]["volumes"]
    names = [s["secret"]["name"] for s in volume["projected"]["sources"]]
    assert names == ["research-redis-auth", "redis-tls"]
    assert env_of(manifest)[contract.ENV_REDIS_CA_FILE]["value"] == contract.DEFAULT_REDIS_CA_FILE


def test_a_redis_without_auth_mounts_nothing() -> None:
    pool = swarm_pool({REDIS_URL_ANNOTATION: "redis://r.team.svc:6379"})
    manifest = pod_manifest(pool, pool.spec.template.to_wire(), "rev1", PodState.ACTIVE)
    assert "volumes" not in manifest["spec"]
    assert contract.ENV_REDIS_PASSWORD_FILE not in env_of(manifest)
