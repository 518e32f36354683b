"""A Swarm of real agents on the test bed: planner -> workers -> reviewer, agent pods on
the process node, around a RedisCluster of real redis-server processes.

Shared by tests/e2e/test_swarm_agents.py and bench/swarm.py. The operator gives every
agent its queue (`<swarm>.<pool>`), its role and the Redis password (the RedisCluster's
Secret, mounted); only the Redis address is written into the template here: the test
bed has no cluster DNS, so the agents are pointed at one Redis pod's IP (a seed: the
cluster client finds the other nodes from it) instead of the client Service's name.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from swarmops.agent.contract import AGENT_PORT_NAME, ENV_REDIS_URL
from swarmops.testbed import redisbed
from swarmops.testbed.procnode.nodespec import POD_PLACEMENT
from swarmops.testbed.redisbed import Kubectl

POOLS: Final = ("planner", "workers", "reviewer")
DEPENDS: Final[Mapping[str, tuple[str, ...]]] = {
    "planner": (),
    "workers": ("planner",),
    "reviewer": ("workers",),
}
HANDLER: Final = "swarmops.agent.examples:work"


def agent_template(redis_url: str, *, visibility_seconds: float = 5.0) -> dict[str, Any]:
    """The pod of a real agent: nothing of the swarm contract but the Redis address."""
    container = {
        "name": "agent",
        "image": "ghcr.io/swarmops/swarmops:dev",
        "args": ["agent", "--handler", HANDLER],
        "ports": [{"name": AGENT_PORT_NAME, "containerPort": 8090}],
        "env": [
            {"name": ENV_REDIS_URL, "value": redis_url},
            {"name": "SWARMOPS_VISIBILITY_TIMEOUT_SECONDS", "value": str(visibility_seconds)},
            {"name": "SWARMOPS_LOG_LEVEL", "value": "WARNING"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": AGENT_PORT_NAME},
            "periodSeconds": 1,
        },
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": AGENT_PORT_NAME}},
    }
    return {
        "spec": {
            **POD_PLACEMENT,
            "terminationGracePeriodSeconds": 10,
            "containers": [container],
        }
    }


def swarm_manifest(
    name: str,
    namespace: str,
    *,
    redis_cluster: str,
    redis_url: str,
    workers: int = 2,
    workers_warm: int = 0,
) -> dict[str, Any]:
    """planner (1, priority 80) -> workers (`workers`, 50) -> reviewer (1, 60), using the
    existing RedisCluster `redis_cluster`."""
    template = agent_template(redis_url)

    def pool(replicas: int, priority: int, warm: int = 0) -> dict[str, Any]:
        return {
            "replicas": replicas,
            "warmPool": {"size": warm},
            "priority": priority,
            "template": template,
        }

    return {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "Swarm",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "redis": {"clusterRef": {"name": redis_cluster}},
            "pools": [
                {"name": "planner", "spec": pool(1, 80)},
                {
                    "name": "workers",
                    "dependsOn": ["planner"],
                    "spec": pool(workers, 50, workers_warm),
                },
                {"name": "reviewer", "dependsOn": ["workers"], "spec": pool(1, 60)},
            ],
            "shutdown": {"drainTimeoutSeconds": 10},
        },
    }


def start_redis(testbed: Kubectl, namespace: str, name: str, *, timeout: float = 180) -> str:
    """A RedisCluster on the process node, Ready; its seed URL (one node's pod IP)."""
    manifest = redisbed.cluster_manifest(name, namespace, shards=3, replicasPerShard=0)
    redisbed.apply_cluster(testbed, manifest)
    redisbed.wait_ready(testbed, namespace, name, timeout=timeout)
    ip = redisbed.pod_ips(testbed, namespace, name)[0]
    return f"redis://{ip}:6379"


def get_swarm(testbed: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    found = testbed.kubectl("get", "swarm", name, "-n", namespace, "-o", "json", check=False)
    if found.returncode != 0:
        return None
    body: dict[str, Any] = json.loads(found.stdout)
    return body


def is_ready(body: Mapping[str, Any] | None) -> bool:
    if not body:
        return False
    status = body.get("status") or {}
    return status.get("observedGeneration") == body["metadata"].get("generation") and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def wait_ready(
    testbed: Kubectl,
    namespace: str,
    name: str,
    *,
    timeout: float = 300,
    each_look: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Until the swarm is Ready; `each_look` runs before every look (to record order)."""
    deadline = time.monotonic() + timeout
    while True:
        if each_look is not None:
            each_look()
        body = get_swarm(testbed, namespace, name)
        if body is not None and is_ready(body):
            return body
        if time.monotonic() > deadline:
            status = json.dumps((body or {}).get("status"))
            raise TimeoutError(f"Swarm {name} not Ready within {timeout:.0f}s: {status}")
        time.sleep(0.2)


def pool_pods(testbed: Kubectl, namespace: str, agent_pool: str) -> list[dict[str, Any]]:
    """Live pods of one AgentPool."""
    listing = json.loads(
        testbed.kubectl(
            "get", "pods", "-n", namespace, "-l", f"swarmops.dev/pool={agent_pool}", "-o", "json"
        ).stdout
    )
    return [p for p in listing["items"] if not p["metadata"].get("deletionTimestamp")]


def kill_agent(pod: str) -> list[int]:
    """SIGKILL the agent process of `pod` on the process node (a crash, not a drain: the
    kubelet's deletion would SIGTERM it first and let it finish its task). Found through
    /proc by the POD_NAME the process node put in its environment."""
    wanted = f"POD_NAME={pod}".encode()
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"agent" not in argv or wanted not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            os.kill(int(entry.name), signal.SIGKILL)
            killed.append(int(entry.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    if not killed:
        raise RuntimeError(f"no agent process found for pod {pod}")
    return killed
