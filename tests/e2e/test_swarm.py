"""Swarms on the real control plane, with kwok pods: start order, reverse-order shutdown
(suspend and deletion), invalid specs beside a healthy swarm, and the budget.

Order is checked as an invariant of every snapshot the test takes while the swarm moves
(a pool has pods only once its dependencies are Ready; a pool is scaled to 0 only once
its dependents have no pods left), and against the swarm's own record (startedAt).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from swarmops.runtime import OperatorThread
from swarmops.testbed import redisbed
from swarmops.testbed.binaries import repository_root
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.processes import wait_until

SWARM = "research"
ORDER = ("planner", "workers", "reviewer")
DEPENDS = {"planner": [], "workers": ["planner"], "reviewer": ["workers"]}


def pool_spec(
    replicas: int, warm: int = 0, priority: int = 50, cpu: str = "100m"
) -> dict[str, Any]:
    return {
        "replicas": replicas,
        "warmPool": {"size": warm},
        "priority": priority,
        "template": {
            "spec": {
                "nodeSelector": {"swarmops.dev/node-kind": "cpu"},
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "agent",
                        "image": "swarmops/agent:e2e",
                        "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}},
                    }
                ],
            }
        },
    }


def swarm_manifest(namespace: str, name: str = SWARM, **spec: Any) -> dict[str, Any]:
    pools = [
        {"name": "planner", "spec": pool_spec(1, priority=80)},
        {"name": "workers", "dependsOn": ["planner"], "weight": 3, "spec": pool_spec(3, warm=2)},
        {"name": "reviewer", "dependsOn": ["workers"], "spec": pool_spec(1, priority=60)},
    ]
    return {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "Swarm",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"pools": pools, **spec},
    }


def swarm_body(testbed: TestBed, namespace: str, name: str = SWARM) -> dict[str, Any] | None:
    found = testbed.kubectl("get", "swarm", name, "-n", namespace, "-o", "json", check=False)
    if found.returncode != 0:
        return None
    body: dict[str, Any] = json.loads(found.stdout)
    return body


def condition(body: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for item in ((body or {}).get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            return dict(item)
    return {}


def snapshot(
    testbed: TestBed, namespace: str, *, pods_first: bool = False
) -> dict[str, dict[str, Any]]:
    """Per swarm pool: its AgentPool's spec and status, and its live pods.

    Two reads, so which comes first matters for what a look can prove: pod counts only
    grow while a swarm starts and only shrink while it stops, and a started pool stays
    Ready. Starting, pods are read first (a pool not Ready after them was not Ready when
    they were seen); stopping, the pools are (pods seen after a pool was at 0 were there
    when it was set to 0).
    """
    if pods_first:
        pods = testbed.get_json("pods", "-n", namespace)["items"]
    pools = {
        item["metadata"]["labels"].get("swarmops.dev/swarm-pool"): item
        for item in testbed.get_json("agentpools", "-n", namespace)["items"]
    }
    if not pods_first:
        pods = testbed.get_json("pods", "-n", namespace)["items"]
    view: dict[str, dict[str, Any]] = {}
    for name, pool in pools.items():
        if name is None:
            continue
        mine = [
            p
            for p in pods
            if p["metadata"]["labels"].get("swarmops.dev/pool") == pool["metadata"]["name"]
            and not p["metadata"].get("deletionTimestamp")
        ]
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (pool.get("status") or {}).get("conditions") or []
        )
        view[name] = {
            "replicas": pool["spec"].get("replicas"),
            "warm": pool["spec"]["warmPool"]["size"],
            # A gated pool (held at 0) is trivially Ready: it does not count.
            "ready": ready
            and pool["spec"].get("replicas", 0) > 0
            and (pool.get("status") or {}).get("observedGeneration")
            == pool["metadata"]["generation"],
            "pods": len(mine),
            "body": pool,
            "pod_bodies": mine,
        }
    return view


def start_order_violations(view: dict[str, dict[str, Any]], seen_ready: set[str]) -> list[str]:
    """A pool has pods only if every dependency has been Ready (now or in an earlier look)."""
    for name, pool in view.items():
        if pool["ready"]:
            seen_ready.add(name)
    return [
        f"{name} has pods before {dependency} was Ready"
        for name, pool in view.items()
        if pool["pods"]
        for dependency in DEPENDS[name]
        if dependency not in seen_ready
    ]


def stop_order_violations(view: dict[str, dict[str, Any]]) -> list[str]:
    """A pool held at 0 has no dependent with pods left (dependents stop first)."""
    return [
        f"{name} is scaled to 0 while {dependent} still has pods"
        for name, pool in view.items()
        if pool["replicas"] == 0 and pool["warm"] == 0
        for dependent, deps in DEPENDS.items()
        if name in deps and dependent in view and view[dependent]["pods"]
    ]


@pytest.fixture
def swarms(testbed: TestBed, namespace: str, operator: OperatorThread) -> Iterator[None]:
    """Swarms in this namespace; left without our finalizer once the test is done, so the
    namespace can go after the operator has stopped."""
    yield
    for item in testbed.get_json("swarms", "-n", namespace)["items"]:
        testbed.kubectl(
            "patch",
            "swarm",
            item["metadata"]["name"],
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )


@pytest.mark.e2e
def test_pools_start_in_order_stop_in_reverse_and_resume(
    testbed: TestBed, namespace: str, swarms: None, operator_log: Callable[[], str]
) -> None:
    testbed.apply(swarm_manifest(namespace))
    seen_ready: set[str] = set()
    # wait_until swallows a failing check, so what each look finds wrong is kept here.
    violations: list[str] = []
    looks = 0

    def started() -> bool:
        nonlocal looks
        view = snapshot(testbed, namespace, pods_first=True)
        looks += 1
        violations.extend(start_order_violations(view, seen_ready))
        body = swarm_body(testbed, namespace)
        return bool(condition(body, "Ready").get("status") == "True")

    wait_until(started, timeout=120, interval=0.2, what="the swarm Ready")
    assert violations == [] and looks > 0
    body = swarm_body(testbed, namespace)
    assert body is not None
    status = body["status"]
    assert status["phase"] == "Ready" and status["readyPools"] == status["totalPools"] == 3
    assert status["observedGeneration"] == body["metadata"]["generation"]
    assert body["metadata"]["finalizers"] == ["swarmops.dev/swarm-shutdown"]
    started_at = {p["name"]: p["startedAt"] for p in status["pools"]}
    assert started_at["planner"] <= started_at["workers"] <= started_at["reviewer"]

    view = snapshot(testbed, namespace)
    assert {name: (v["replicas"], v["warm"]) for name, v in view.items()} == {
        "planner": (1, 0),
        "workers": (3, 2),
        "reviewer": (1, 0),
    }
    # Owned by the swarm; pods labelled for the swarm, told their queue and role.
    for name, pool in view.items():
        owner = pool["body"]["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"]) == ("Swarm", body["metadata"]["uid"])
        assert pool["body"]["spec"]["template"]["spec"]["priorityClassName"].startswith(
            "swarmops-priority-"
        )
        for pod in pool["pod_bodies"]:
            assert pod["metadata"]["labels"]["swarmops.dev/swarm"] == SWARM
            env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
            assert env["SWARMOPS_QUEUE"]["value"] == f"{SWARM}.{name}"
            assert "SWARMOPS_POD_STATE" in env
            assert (
                pod["spec"]["priorityClassName"]
                == pool["body"]["spec"]["template"]["spec"]["priorityClassName"]
            )
            assert pod["spec"]["priority"] in (50, 60, 80)
    reasons = [e["reason"] for e in testbed.get_json("events", "-n", namespace)["items"]]
    assert reasons.count("PoolStarting") == 3 and "SwarmReady" in reasons

    # Suspend: reverse order, every snapshot.
    testbed.kubectl(
        "patch", "swarm", SWARM, "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )

    def suspended() -> bool:
        violations.extend(stop_order_violations(snapshot(testbed, namespace)))
        body = swarm_body(testbed, namespace) or {}
        return bool(body.get("status", {}).get("phase") == "Suspended")

    wait_until(suspended, timeout=120, interval=0.2, what="the swarm Suspended")
    assert violations == []
    view = snapshot(testbed, namespace)
    assert all(v["pods"] == 0 for v in view.values()), view
    body = swarm_body(testbed, namespace)
    stopped_at = {p["name"]: p["stoppedAt"] for p in body["status"]["pools"]}  # type: ignore[index]
    assert stopped_at["reviewer"] <= stopped_at["workers"] <= stopped_at["planner"]
    assert condition(body, "Ready")["reason"] == "Suspended"

    # Resume: in order again.
    testbed.kubectl(
        "patch", "swarm", SWARM, "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    seen_ready.clear()
    wait_until(started, timeout=120, interval=0.2, what="the swarm Ready again")
    assert violations == []

    # Delete: reverse order, then the swarm goes (its finalizer released).
    testbed.kubectl("delete", "swarm", SWARM, "-n", namespace, "--wait=false")

    def deleted() -> bool:
        violations.extend(stop_order_violations(snapshot(testbed, namespace)))
        return swarm_body(testbed, namespace) is None

    wait_until(deleted, timeout=120, interval=0.2, what="the swarm deleted")
    assert violations == []
    reasons = [e["reason"] for e in testbed.get_json("events", "-n", namespace)["items"]]
    assert reasons.count("PoolStopped") >= 6  # three on suspend, three on deletion
    assert "ERROR" not in operator_log()


@pytest.mark.e2e
def test_invalid_swarms_start_nothing_and_others_are_served(
    testbed: TestBed, namespace: str, swarms: None
) -> None:
    cycle = swarm_manifest(namespace, "cyclic")
    cycle["spec"]["pools"][0]["dependsOn"] = ["reviewer"]
    testbed.apply(cycle)
    dangling = swarm_manifest(namespace, "dangling")
    dangling["spec"]["pools"][0] = {"name": "planner", "poolRef": {"name": "nowhere"}}
    testbed.apply(dangling)
    testbed.apply(swarm_manifest(namespace, "healthy"))

    def invalid(name: str) -> dict[str, Any]:
        return condition(swarm_body(testbed, namespace, name), "InvalidSpec")

    wait_until(
        lambda: (
            invalid("cyclic").get("status") == "True"
            and invalid("dangling").get("status") == "True"
        ),
        timeout=60,
        what="both invalid swarms reported",
    )
    assert "planner -> reviewer -> workers -> planner" in invalid("cyclic")["message"]
    assert "AgentPool nowhere" in invalid("dangling")["message"]
    for name in ("cyclic", "dangling"):
        body = swarm_body(testbed, namespace, name)
        assert condition(body, "Ready")["status"] == "False"
        assert condition(body, "Degraded")["status"] == "True"
    wait_until(
        lambda: (
            condition(swarm_body(testbed, namespace, "healthy"), "Ready").get("status") == "True"
        ),
        timeout=120,
        what="the healthy swarm Ready",
    )
    # Nothing of the invalid swarms exists.
    names = [
        p["metadata"]["name"] for p in testbed.get_json("agentpools", "-n", namespace)["items"]
    ]
    assert sorted(names) == ["healthy-planner", "healthy-reviewer", "healthy-workers"]
    events = testbed.get_json("events", "-n", namespace)["items"]
    warned = {e["involvedObject"]["name"] for e in events if e["reason"] == "InvalidSpec"}
    assert warned == {"cyclic", "dangling"}

    # Fixed: the cycle goes, the swarm starts.
    cycle["spec"]["pools"][0]["dependsOn"] = []
    testbed.apply(cycle)
    wait_until(
        lambda: (
            condition(swarm_body(testbed, namespace, "cyclic"), "Ready").get("status") == "True"
        ),
        timeout=120,
        what="the repaired swarm Ready",
    )
    assert invalid("cyclic")["status"] == "False"


@pytest.mark.e2e
def test_a_budget_caps_by_priority_and_weight_and_grows_back(
    testbed: TestBed, namespace: str, swarms: None
) -> None:
    # Asks: planner 1 (priority 80), workers 3 + 2 warm (50), reviewer 1 (60), 1 CPU each:
    # 7 CPUs. A budget of 4 keeps planner and reviewer, 2 workers and no warm pods.
    manifest = swarm_manifest(namespace)
    for pool in manifest["spec"]["pools"]:
        pool["spec"] = pool["spec"] | {
            "template": pool_spec(0, cpu="1")["template"],
        }
    manifest["spec"]["budget"] = {"cpu": "4"}
    testbed.apply(manifest)

    def settled(replicas: int, warm: int, limited: str) -> Callable[[], bool]:
        def check() -> bool:
            body = swarm_body(testbed, namespace)
            view = snapshot(testbed, namespace)
            workers = view.get("workers")
            return (
                workers is not None
                and (workers["replicas"], workers["warm"]) == (replicas, warm)
                and condition(body, "BudgetLimited").get("status") == limited
                and condition(body, "Ready").get("status") == "True"
            )

        return check

    wait_until(settled(2, 0, "True"), timeout=120, what="workers capped at 2, no warm")
    body = swarm_body(testbed, namespace)
    message = condition(body, "BudgetLimited")["message"]
    assert "workers (2 of 3 replicas, 0 of 2 warm)" in message
    view = snapshot(testbed, namespace)
    assert (view["planner"]["replicas"], view["reviewer"]["replicas"]) == (1, 1)
    assert body["status"]["budgetUsed"]["cpu"] == "4000m"  # type: ignore[index]
    workers = next(p for p in body["status"]["pools"] if p["name"] == "workers")  # type: ignore[index]
    assert (workers["allowedReplicas"], workers["allowedWarm"]) == (2, 0)
    reasons = [e["reason"] for e in testbed.get_json("events", "-n", namespace)["items"]]
    assert "BudgetLimited" in reasons

    # Room for the actives, not yet for every warm pod: warm pods are what is short.
    testbed.kubectl(
        "patch",
        "swarm",
        SWARM,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"budget":{"cpu":"6"}}}',
    )
    wait_until(settled(3, 1, "True"), timeout=120, what="workers at 3 with 1 warm")
    testbed.kubectl(
        "patch",
        "swarm",
        SWARM,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"budget":{"cpu":"8"}}}',
    )
    wait_until(settled(3, 2, "False"), timeout=120, what="workers back to 3 with 2 warm")
    reasons = [e["reason"] for e in testbed.get_json("events", "-n", namespace)["items"]]
    assert "BudgetRestored" in reasons


@pytest.mark.e2e
def test_the_swarms_redis_gates_every_pool_and_goes_last(
    testbed: TestBed, namespace: str, swarms: None
) -> None:
    # The RedisCluster on the process node (real redis-server processes), the pools on kwok.
    redis_spec = redisbed.cluster_manifest("unused", namespace, replicasPerShard=0)["spec"]
    testbed.apply(swarm_manifest(namespace, redis={"spec": redis_spec}))
    violations: list[str] = []

    def redis_state() -> tuple[bool, bool]:
        """(exists and not deleting, Ready)."""
        found = testbed.kubectl(
            "get", "rediscluster", f"{SWARM}-redis", "-n", namespace, "-o", "json", check=False
        )
        if found.returncode != 0:
            return False, False
        body = json.loads(found.stdout)
        return not body["metadata"].get("deletionTimestamp"), redisbed.is_ready(body)

    def started() -> bool:
        view = snapshot(testbed, namespace, pods_first=True)
        _, ready = redis_state()
        if not ready:  # read after the pods: not Ready now means not Ready when they were seen
            violations.extend(
                f"{n} has pods before Redis is Ready" for n, v in view.items() if v["pods"]
            )
        return bool(condition(swarm_body(testbed, namespace), "Ready").get("status") == "True")

    wait_until(started, timeout=240, interval=0.3, what="the swarm Ready with its Redis")
    assert violations == []
    body = swarm_body(testbed, namespace)
    assert body is not None
    assert body["status"]["redis"] == {
        "name": f"{SWARM}-redis",
        "ready": True,
        "endpoint": f"{SWARM}-redis.{namespace}.svc:6379",
        "authSecretName": f"{SWARM}-redis-auth",
    }
    cluster = redisbed.get_cluster(testbed, namespace, f"{SWARM}-redis")
    assert cluster["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    assert cluster["metadata"]["labels"]["swarmops.dev/swarm"] == SWARM
    for pod in snapshot(testbed, namespace)["workers"]["pod_bodies"]:
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        assert env["SWARMOPS_REDIS_URL"]["value"] == f"redis://{SWARM}-redis.{namespace}.svc:6379"

    testbed.kubectl("delete", "swarm", SWARM, "-n", namespace, "--wait=false")

    def deleted() -> bool:
        alive, _ = redis_state()  # first: pods seen after Redis went were there when it went
        view = snapshot(testbed, namespace)
        violations.extend(stop_order_violations(view))
        if not alive:
            violations.extend(
                f"Redis went while {n} had pods" for n, v in view.items() if v["pods"]
            )
        return swarm_body(testbed, namespace) is None

    wait_until(deleted, timeout=180, interval=0.2, what="the swarm deleted")
    assert violations == []
    assert redis_state() == (False, False)
    reasons = [e["reason"] for e in testbed.get_json("events", "-n", namespace)["items"]]
    assert "RedisClusterDeleting" in reasons


@pytest.mark.e2e
def test_the_example_swarm_waits_for_its_redis(
    testbed: TestBed, namespace: str, swarms: None
) -> None:
    """manifests/examples/swarm.yaml, as shipped: its Redis (kwok has no redis-server, so
    it never becomes Ready here) gates every pool, and the budget fits every ask."""
    example = repository_root() / "manifests" / "examples" / "swarm.yaml"
    testbed.kubectl("apply", "-n", namespace, "-f", str(example))

    def waiting() -> bool:
        body = swarm_body(testbed, namespace)
        pools = ((body or {}).get("status") or {}).get("pools") or []
        return len(pools) == 3 and all(p["phase"] == "Waiting" for p in pools)

    wait_until(waiting, timeout=60, what="the example's pools waiting for Redis")
    body = swarm_body(testbed, namespace)
    assert body is not None
    for pool in body["status"]["pools"]:
        assert "RedisCluster research-redis" in pool["message"]
    assert condition(body, "BudgetLimited")["status"] == "False"
    assert condition(body, "Ready")["status"] == "False"
    view = snapshot(testbed, namespace)
    assert {name: (v["replicas"], v["warm"], v["pods"]) for name, v in view.items()} == {
        "planner": (0, 0, 0),
        "workers": (0, 0, 0),
        "reviewer": (0, 0, 0),
    }
    cluster = redisbed.get_cluster(testbed, namespace, "research-redis")
    assert cluster["spec"]["shards"] == 3
    assert cluster["metadata"]["ownerReferences"][0]["kind"] == "Swarm"


@pytest.mark.e2e
def test_replicas_scaled_by_another_manager_are_not_fought(
    testbed: TestBed, namespace: str, swarms: None, operator: OperatorThread
) -> None:
    testbed.apply(swarm_manifest(namespace))
    wait_until(
        lambda: condition(swarm_body(testbed, namespace), "Ready").get("status") == "True",
        timeout=120,
        what="the swarm Ready",
    )
    # An HPA or a person scales the workers through the scale subresource.
    testbed.kubectl("scale", "agentpool", f"{SWARM}-workers", "-n", namespace, "--replicas=5")
    # A change to the swarm makes it apply every pool again: the reviewer grows...
    manifest = swarm_manifest(namespace)
    manifest["spec"]["pools"][2]["spec"]["replicas"] = 2

    def applied() -> bool:
        view = snapshot(testbed, namespace)
        return bool(view["reviewer"]["replicas"] == 2 and view["reviewer"]["pods"] == 2)

    testbed.apply(manifest)
    wait_until(applied, timeout=120, what="the reviewer at 2")
    wait_until(
        lambda: condition(swarm_body(testbed, namespace), "Ready").get("status") == "True",
        timeout=120,
        what="the swarm Ready again",
    )
    # ...and the workers keep the other manager's 5, with their 2 warm pods.
    view = snapshot(testbed, namespace)
    assert (view["workers"]["replicas"], view["workers"]["warm"]) == (5, 2)
    assert view["workers"]["pods"] == 7
    url = f"http://{operator.settings.bind_address}:{operator.settings.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        metrics = response.read().decode()
    assert f'swarmops_swarm_pools_ready{{namespace="{namespace}",swarm="{SWARM}"}} 3.0' in metrics
    assert 'swarmops_reconcile_total{kind="Swarm",result="ok"}' in metrics
