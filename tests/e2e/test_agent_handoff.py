"""The claim hand-off on the test bed: agent pods run for real on the process node, the
real operator binds a claim to one, and the agent learns its claim and parameters from
the operator's POST, without any API access of its own.

Each pool's agents get a real redis-server (loopback, with a password from a Secret, as
the agent contract says), so the roles are visible in what they do: the active agent
serves the pool's queue, warm agents serve nothing, the claimed agent serves its
claim's queue. The hand-off latency (claim bound-at to the agent's receipt) is logged,
not asserted.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swarmops.agent import Priority, TaskQueue, connect, redis_config
from swarmops.agent.contract import AGENT_PORT_NAME
from swarmops.runtime import OperatorThread
from swarmops.testbed.agentbed import RedisServer, redis_server
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.processes import wait_until
from swarmops.testbed.procnode.nodespec import POD_PLACEMENT

pytestmark = pytest.mark.e2e
logger = logging.getLogger(__name__)

POOL = "agents"
TIMEOUT = 120.0


def field(path: str) -> dict[str, Any]:
    return {"valueFrom": {"fieldRef": {"fieldPath": path}}}


def agent_pool(namespace: str, redis_url: str, *, replicas: int, warm: int) -> dict[str, Any]:
    """A pool of real agents on the process node, wired to Redis by the documented env."""
    container = {
        "name": "agent",
        "image": "ghcr.io/swarmops/swarmops:dev",
        "args": ["agent", "--handler", "swarmops.agent.examples:work"],
        "ports": [{"name": AGENT_PORT_NAME, "containerPort": 8090}],
        "env": [
            {"name": "POD_NAME", **field("metadata.name")},
            {"name": "POD_NAMESPACE", **field("metadata.namespace")},
            {"name": "POD_UID", **field("metadata.uid")},
            {"name": "POD_IP", **field("status.podIP")},
            {"name": "SWARMOPS_POD_STATE", **field("metadata.labels['swarmops.dev/state']")},
            {"name": "SWARMOPS_CLAIM", **field("metadata.labels['swarmops.dev/claim']")},
            {"name": "SWARMOPS_POOL", **field("metadata.labels['swarmops.dev/pool']")},
            {"name": "SWARMOPS_REDIS_URL", "value": redis_url},
            {
                "name": "SWARMOPS_REDIS_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "agent-redis", "key": "password"}},
            },
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": AGENT_PORT_NAME},
            "periodSeconds": 1,
        },
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": AGENT_PORT_NAME}},
    }
    return {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": POOL, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "warmPool": {"size": warm},
            "capabilities": ["python"],
            "template": {
                "spec": {
                    **POD_PLACEMENT,
                    "terminationGracePeriodSeconds": 5,
                    "containers": [container],
                }
            },
        },
    }


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as server:
        yield server


def start_pool(
    testbed: TestBed, namespace: str, redis: RedisServer, *, replicas: int, warm: int
) -> None:
    assert redis.password
    testbed.kubectl(
        "create", "secret", "generic", "agent-redis", "-n", namespace,
        f"--from-literal=password={redis.password}",
    )  # fmt: skip
    testbed.apply(agent_pool(namespace, redis.url, replicas=replicas, warm=warm))


def pods_by_state(testbed: TestBed, namespace: str) -> dict[str, list[dict[str, Any]]]:
    items = testbed.get_json("pods", "-n", namespace, "-l", f"swarmops.dev/pool={POOL}")["items"]
    found: dict[str, list[dict[str, Any]]] = {}
    for pod in items:
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod.get("status", {}).get("conditions", [])
        )
        if ready and not pod["metadata"].get("deletionTimestamp"):
            found.setdefault(pod["metadata"]["labels"]["swarmops.dev/state"], []).append(pod)
    return found


def agent_status(ip: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{ip}:8090/status", timeout=2) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def create_claim(testbed: TestBed, namespace: str, name: str, **spec: Any) -> None:
    testbed.apply(
        {
            "apiVersion": "swarmops.dev/v1alpha1",
            "kind": "AgentClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"poolRef": {"name": POOL}, **spec},
        },
    )


def bound_claim(testbed: TestBed, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def bound() -> bool:
        found.update(testbed.get_json("agentclaim", name, "-n", namespace))
        return found.get("status", {}).get("phase") == "Bound" and bool(
            found["status"].get("podIP")
        )

    wait_until(bound, timeout=TIMEOUT, what=f"claim {name} to be bound", interval=0.05)
    return found


def wait_for_claim_at_agent(ip: str, claim: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def knows() -> bool:
        seen.update(agent_status(ip))
        return (seen.get("claim") or {}).get("name") == claim and "uid" in seen["claim"]

    wait_until(knows, timeout=30, what=f"the agent at {ip} to know claim {claim}", interval=0.01)
    return seen


async def run_on_queue(redis: RedisServer, queue: str, count: int) -> set[str]:
    config = redis_config(redis.env())
    assert config is not None
    client = await connect(config)
    try:
        tasks = TaskQueue(client, queue)
        keys = [await tasks.submit({"value": i}, Priority.P1) for i in range(count)]
        results = await tasks.wait(keys, 60)
        assert len(results) == count
        return {str(r.agent) for r in results.values()}
    finally:
        await client.aclose()


def test_a_warm_agent_learns_its_claim_and_parameters_from_the_operator(
    testbed: TestBed, namespace: str, operator: OperatorThread, redis: RedisServer
) -> None:
    start_pool(testbed, namespace, redis, replicas=1, warm=2)
    wait_until(
        lambda: (
            len(pods_by_state(testbed, namespace).get("warm", [])) == 2
            and len(pods_by_state(testbed, namespace).get("active", [])) == 1
        ),
        timeout=TIMEOUT,
        what="1 active and 2 warm agents Ready",
    )
    by_state = pods_by_state(testbed, namespace)
    active = by_state["active"][0]
    warm_names = {p["metadata"]["name"] for p in by_state["warm"]}
    # Only the active agent serves the pool's queue; warm ones wait for a claim, idle.
    assert asyncio.run(run_on_queue(redis, POOL, 8)) == {active["metadata"]["name"]}
    for pod in by_state["warm"]:
        status = agent_status(pod["status"]["podIP"])
        assert (status["role"], status["state"], status["queue"]) == ("warm", "idle", None)

    parameters = {"repository": "https://example.com/app.git", "task": "fix the tests"}
    create_claim(testbed, namespace, "session", parameters=parameters, whenNoWarmPod="Wait")
    claim = bound_claim(testbed, namespace, "session")
    assert claim["status"]["podName"] in warm_names
    seen = wait_for_claim_at_agent(claim["status"]["podIP"], "session")

    assert seen["role"] == "claimed" and seen["queue"] == "claim.session"
    assert seen["claim"]["parameters"] == parameters
    assert seen["claim"]["uid"] == claim["metadata"]["uid"]
    assert seen["claim"]["capabilities"] == []
    handoff_ms = (
        parse_time(seen["claimReceivedAt"]) - parse_time(claim["status"]["boundAt"])
    ).total_seconds() * 1000
    logger.info("claim hand-off: the agent knew its claim %.1f ms after bound-at", handoff_ms)
    print(f"claim_to_agent_aware_ms={handoff_ms:.1f}")
    # The claimed agent now serves its claim's queue, and only it.
    assert asyncio.run(run_on_queue(redis, "claim.session", 3)) == {claim["status"]["podName"]}
    metrics = urllib.request.urlopen(operator_metrics_url(operator), timeout=5).read().decode()
    assert 'swarmops_agent_handoffs_total{result="delivered",role="claimed"}' in metrics

    # A scale-up promotes the remaining warm agent: it is told, and serves the pool's queue.
    (promoted,) = warm_names - {claim["status"]["podName"]}
    testbed.kubectl("scale", "agentpool", POOL, "-n", namespace, "--replicas=2")
    pod_ip = next(
        p["status"]["podIP"] for p in by_state["warm"] if p["metadata"]["name"] == promoted
    )
    wait_until(
        lambda: agent_status(pod_ip)["role"] == "active",
        timeout=TIMEOUT,
        what=f"{promoted} to be told it is active",
    )
    assert agent_status(pod_ip)["queue"] == POOL


def test_a_cold_started_agent_gets_its_claim_once_ready(
    testbed: TestBed, namespace: str, operator: OperatorThread, redis: RedisServer
) -> None:
    start_pool(testbed, namespace, redis, replicas=0, warm=0)
    create_claim(testbed, namespace, "cold", parameters={"session": "42"})
    claim = bound_claim(testbed, namespace, "cold")
    assert claim["status"]["warmHit"] is False
    seen = wait_for_claim_at_agent(claim["status"]["podIP"], "cold")
    assert seen["role"] == "claimed" and seen["claim"]["parameters"] == {"session": "42"}


def operator_metrics_url(operator: OperatorThread) -> str:
    settings = operator.settings
    return f"http://{settings.bind_address}:{settings.metrics_port}/metrics"
