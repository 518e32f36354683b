"""The warm pool on the real control plane: lost pods and a lost node, template changes
under OnReplenish and Recreate, an HPA on the scale subresource, the PodDisruptionBudget,
the readiness timeout, unschedulable pods and the refill rate limit."""

from __future__ import annotations

import datetime
import json
import random
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from swarmops.runtime import OperatorThread
from swarmops.testbed.cluster import PROCESS_NODE_NAME, TestBed
from swarmops.testbed.nodes import cpu_node
from swarmops.testbed.processes import wait_until

POOL = "warm"
TIMEOUT = 90.0
CPU_NODES = {"swarmops.dev/node-kind": "cpu"}


# --- helpers ---------------------------------------------------------------------------------


def pool_manifest(
    namespace: str,
    *,
    replicas: int = 0,
    warm: int = 0,
    image: str = "swarmops/agent:1",
    node_selector: dict[str, str] | None = None,
    warm_pool: dict[str, Any] | None = None,
    pod_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": POOL, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "warmPool": {"size": warm, **(warm_pool or {})},
            "template": {
                "spec": {
                    "nodeSelector": node_selector or CPU_NODES,
                    "containers": [{"name": "agent", "image": image}],
                    **(pod_spec or {}),
                }
            },
        },
    }


def pods(testbed: TestBed, namespace: str) -> list[dict[str, Any]]:
    """Live (not terminating) pods of the pool."""
    items = testbed.get_json("pods", "-n", namespace, "-l", f"swarmops.dev/pool={POOL}")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def of_state(found: list[dict[str, Any]], wanted: str) -> list[dict[str, Any]]:
    return [p for p in found if p["metadata"]["labels"]["swarmops.dev/state"] == wanted]


def uids(found: list[dict[str, Any]]) -> set[str]:
    return {p["metadata"]["uid"] for p in found}


def revision(pod: dict[str, Any]) -> str:
    return str(pod["metadata"]["labels"]["swarmops.dev/revision"])


def ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


def pool_status(testbed: TestBed, namespace: str) -> dict[str, Any]:
    status: dict[str, Any] = testbed.get_json("agentpool", POOL, "-n", namespace).get("status", {})
    return status


def pool_condition(testbed: TestBed, namespace: str, kind: str) -> dict[str, Any]:
    for item in pool_status(testbed, namespace).get("conditions", []):
        if item["type"] == kind:
            return dict(item)
    return {}


def settled(testbed: TestBed, namespace: str, active: int, warm: int) -> Callable[[], bool]:
    def check() -> bool:
        found = pods(testbed, namespace)
        status = pool_status(testbed, namespace)
        return (
            len(of_state(found, "active")) == active
            and len(of_state(found, "warm")) == warm
            and all(ready(p) for p in of_state(found, "active") + of_state(found, "warm"))
            and (status.get("readyReplicas"), status.get("warmReady")) == (active, warm)
        )

    return check


def event_reasons(testbed: TestBed, namespace: str) -> set[str]:
    items = testbed.get_json(
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.kind=AgentPool,involvedObject.name={POOL}",
    )["items"]
    return {item["reason"] for item in items}


def claim(testbed: TestBed, namespace: str, name: str) -> dict[str, Any]:
    testbed.apply(
        {
            "apiVersion": "swarmops.dev/v1alpha1",
            "kind": "AgentClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"poolRef": {"name": POOL}, "whenNoWarmPod": "Wait"},
        },
    )
    wait_until(
        lambda: (
            testbed.get_json("agentclaim", name, "-n", namespace).get("status", {}).get("phase")
            == "Bound"
        ),
        timeout=TIMEOUT,
        what=f"claim {name} to be Bound",
    )
    return testbed.get_json("agentclaim", name, "-n", namespace)


@pytest.fixture
def node_maker(testbed: TestBed) -> Iterator[Callable[[str, dict[str, str]], None]]:
    """Create kwok CPU nodes of a test's own (the test bed's are shared with every test),
    with extra labels only that test's pods select; they are deleted afterwards."""
    made: list[str] = []

    def make(name: str, labels: dict[str, str]) -> None:
        manifest = cpu_node(name)
        manifest["metadata"]["labels"].update(labels)
        with testbed.api_client() as api_client:
            core = testbed.core_api(api_client)
            core.create_node(manifest)
            made.append(name)
            # A create may drop status; kwok's stages read capacity from it.
            core.patch_node_status(name, {"status": manifest["status"]})
        wait_until(
            lambda: any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in testbed.get_json("node", name)["status"].get("conditions", [])
            ),
            timeout=60,
            what=f"node {name} to be Ready",
        )

    try:
        yield make
    finally:
        if made:
            testbed.kubectl("delete", "node", *made, "--ignore-not-found", "--wait=false")


@pytest.fixture
def own_nodes(
    node_maker: Callable[[str, dict[str, str]], None],
) -> tuple[str, dict[str, str]]:
    """Two nodes of this test's own, `<group>-a` and `<group>-b`, and their label."""
    group = f"e2e-{secrets.token_hex(3)}"
    label = {"swarmops.dev/e2e-group": group}
    for suffix in ("a", "b"):
        node_maker(f"{group}-{suffix}", label)
    return group, label


# --- tests -----------------------------------------------------------------------------------


@pytest.mark.e2e
def test_deleted_warm_pods_and_a_lost_node_are_replaced_and_warm_pods_spread(
    testbed: TestBed,
    namespace: str,
    operator: OperatorThread,
    own_nodes: tuple[str, dict[str, str]],
) -> None:
    group, label = own_nodes
    testbed.apply(pool_manifest(namespace, replicas=2, warm=6, node_selector=label))
    wait_until(settled(testbed, namespace, 2, 6), timeout=TIMEOUT, what="2 active + 6 warm")
    # Spread: the soft hostname constraint puts the warm pods on both nodes, evenly.
    warm_nodes = [p["spec"]["nodeName"] for p in of_state(pods(testbed, namespace), "warm")]
    assert sorted(set(warm_nodes)) == [f"{group}-a", f"{group}-b"]
    all_nodes = [p["spec"]["nodeName"] for p in pods(testbed, namespace)]
    assert abs(all_nodes.count(f"{group}-a") - all_nodes.count(f"{group}-b")) <= 1

    # Random warm pods deleted: replaced, with new pods, back to the counts.
    warm = of_state(pods(testbed, namespace), "warm")
    victims = random.sample(warm, 3)
    testbed.kubectl(
        "delete", "pod", "-n", namespace, "--wait=false", *(p["metadata"]["name"] for p in victims)
    )
    wait_until(
        lambda: (
            settled(testbed, namespace, 2, 6)()
            and not uids(victims) & uids(pods(testbed, namespace))
        ),
        timeout=TIMEOUT,
        what="the warm pool to replace the deleted pods",
    )

    # A node lost with pods on it: the pod garbage collector removes its pods (after
    # its quarantine of about 40 s), and the pool replaces them on the node left.
    lost = f"{group}-a"
    on_lost = {
        p["metadata"]["uid"] for p in pods(testbed, namespace) if p["spec"]["nodeName"] == lost
    }
    assert on_lost
    testbed.kubectl("delete", "node", lost, "--wait=false")

    def converged_on_the_other_node() -> bool:
        found = pods(testbed, namespace)
        return (
            settled(testbed, namespace, 2, 6)()
            and not on_lost & uids(found)
            and {p["spec"]["nodeName"] for p in found} == {f"{group}-b"}
        )

    wait_until(converged_on_the_other_node, timeout=180, what="the pool to converge after the node")
    assert len(pods(testbed, namespace)) == 8  # nothing extra


@pytest.mark.e2e
def test_a_template_change_keeps_warm_pods_on_replenish_and_replaces_them_on_recreate(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    testbed.apply(pool_manifest(namespace, warm=3, image="swarmops/agent:1"))
    wait_until(settled(testbed, namespace, 0, 3), timeout=TIMEOUT, what="3 warm pods")
    bound = claim(testbed, namespace, "before")
    claimed_uid = next(
        p["metadata"]["uid"]
        for p in pods(testbed, namespace)
        if p["metadata"]["name"] == bound["status"]["podName"]
    )
    wait_until(settled(testbed, namespace, 0, 3), timeout=TIMEOUT, what="the refill")
    old_warm = of_state(pods(testbed, namespace), "warm")
    old_revision = revision(old_warm[0])
    assert {revision(p) for p in old_warm} == {old_revision}

    # OnReplenish (the default): the template changes, the idle warm pods stay.
    testbed.apply(pool_manifest(namespace, warm=3, image="swarmops/agent:2"))
    wait_until(
        lambda: pool_status(testbed, namespace).get("currentRevision") not in (None, old_revision),
        timeout=TIMEOUT,
        what="the pool to see the new template",
    )
    new_revision = pool_status(testbed, namespace)["currentRevision"]
    assert uids(of_state(pods(testbed, namespace), "warm")) == uids(old_warm)
    # A claim takes an old warm pod (they are handed out until used up); the refill is new.
    claim(testbed, namespace, "during")
    wait_until(settled(testbed, namespace, 0, 3), timeout=TIMEOUT, what="the refill")
    warm_now = of_state(pods(testbed, namespace), "warm")
    assert sorted(revision(p) for p in warm_now) == sorted([old_revision] * 2 + [new_revision])

    # Recreate: the stale warm pods are replaced at once from the new template.
    testbed.apply(
        pool_manifest(
            namespace, warm=3, image="swarmops/agent:2", warm_pool={"updatePolicy": "Recreate"}
        ),
    )
    wait_until(
        lambda: (
            settled(testbed, namespace, 0, 3)()
            and {revision(p) for p in of_state(pods(testbed, namespace), "warm")} == {new_revision}
        ),
        timeout=TIMEOUT,
        what="the stale warm pods to be replaced",
    )
    assert "StaleWarmPodsDeleted" in event_reasons(testbed, namespace)
    # Claimed pods are never touched: the first claim's pod is the same pod, still old.
    claimed = {p["metadata"]["uid"]: p for p in of_state(pods(testbed, namespace), "claimed")}
    assert claimed_uid in claimed and revision(claimed[claimed_uid]) == old_revision
    assert len(claimed) == 2
    before = testbed.get_json("agentclaim", "before", "-n", namespace)
    assert before["status"]["phase"] == "Bound"


@pytest.mark.e2e
def test_an_hpa_drives_the_pool_through_its_scale_subresource(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    testbed.apply(pool_manifest(namespace, replicas=1, warm=2))
    wait_until(settled(testbed, namespace, 1, 2), timeout=TIMEOUT, what="1 active + 2 warm")
    warm_before = uids(of_state(pods(testbed, namespace), "warm"))
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": POOL, "namespace": namespace},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "swarmops.dev/v1alpha1",
                "kind": "AgentPool",
                "name": POOL,
            },
            # Above the pool's replicas: the HPA controller raises the pool to its minimum
            # through /scale before it even looks at metrics (the test bed has no metrics
            # server, so that is the only scaling it can do here).
            "minReplicas": 3,
            "maxReplicas": 5,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50},
                    },
                }
            ],
        },
    }
    testbed.apply(hpa)

    def hpa_read_and_scaled() -> bool:
        status = testbed.get_json("hpa", POOL, "-n", namespace).get("status", {})
        able = [c for c in status.get("conditions", []) if c["type"] == "AbleToScale"]
        return (
            bool(able)
            and able[0]["status"] == "True"
            and status.get("currentReplicas") == 3
            and status.get("desiredReplicas") == 3
        )

    # The HPA controller syncs every 15 s.
    wait_until(hpa_read_and_scaled, timeout=120, what="the HPA to read and scale the pool")
    wait_until(settled(testbed, namespace, 3, 2), timeout=TIMEOUT, what="3 active + 2 warm")
    assert testbed.get_json("agentpool", POOL, "-n", namespace)["spec"]["replicas"] == 3
    # Promoted, not cold-started: the two former warm pods are now active.
    assert warm_before <= uids(of_state(pods(testbed, namespace), "active"))


@pytest.mark.e2e
def test_the_disruption_budget_covers_active_and_claimed_pods(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    testbed.apply(pool_manifest(namespace, replicas=2, warm=2))
    wait_until(settled(testbed, namespace, 2, 2), timeout=TIMEOUT, what="2 active + 2 warm")
    claim(testbed, namespace, "session")
    wait_until(settled(testbed, namespace, 2, 2), timeout=TIMEOUT, what="the refill")
    pool_uid = testbed.get_json("agentpool", POOL, "-n", namespace)["metadata"]["uid"]

    def budget_is(min_available: int, expected: int, allowed: int) -> Callable[[], bool]:
        def check() -> bool:
            found = testbed.kubectl("get", "pdb", POOL, "-n", namespace, "-o", "json", check=False)
            if found.returncode != 0:
                return False
            pdb = json.loads(found.stdout)
            status = pdb.get("status", {})
            return (
                pdb["spec"].get("minAvailable") == min_available
                and status.get("observedGeneration") == pdb["metadata"]["generation"]
                and status.get("expectedPods") == expected
                and status.get("currentHealthy") == expected
                and status.get("disruptionsAllowed") == allowed
            )

        return check

    # 2 active + 1 claimed; maxUnavailable 1 (the default): 2 must stay, 1 may go.
    wait_until(budget_is(2, 3, 1), timeout=TIMEOUT, what="the budget over 2 active + 1 claimed")
    pdb = testbed.get_json("pdb", POOL, "-n", namespace)
    owners = pdb["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"], o["uid"], o["controller"]) for o in owners] == [
        ("AgentPool", POOL, pool_uid, True)
    ]

    # The budget follows replicas and the percentage form, rounded as Kubernetes does.
    manifest = pool_manifest(namespace, replicas=4, warm=2)
    manifest["spec"]["disruption"] = {"maxUnavailable": "50%"}
    testbed.apply(manifest)
    wait_until(settled(testbed, namespace, 4, 2), timeout=TIMEOUT, what="4 active + 2 warm")
    wait_until(budget_is(2, 5, 3), timeout=TIMEOUT, what="the budget over 4 active + 1 claimed")

    # Deleted by hand: the operator puts it back.
    testbed.kubectl("delete", "pdb", POOL, "-n", namespace)
    wait_until(budget_is(2, 5, 3), timeout=TIMEOUT, what="the budget to be recreated")


@pytest.mark.e2e
def test_warm_pods_not_ready_in_time_are_replaced(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    # The process node runs pods as local processes; an image it cannot run stays not
    # Ready for ever (ImageNotRunnable), as an agent that hangs while loading would.
    manifest = pool_manifest(
        namespace,
        warm=2,
        image="swarmops/never-ready:1",
        node_selector={"swarmops.dev/testbed-node": "process"},
        warm_pool={"readinessTimeoutSeconds": 3},
        pod_spec={
            "tolerations": [
                {"key": "swarmops.dev/process-node", "operator": "Exists", "effect": "NoSchedule"}
            ]
        },
    )
    testbed.apply(manifest)
    wait_until(
        lambda: len(of_state(pods(testbed, namespace), "warm")) == 2,
        timeout=TIMEOUT,
        what="2 warm pods",
    )
    first = uids(of_state(pods(testbed, namespace), "warm"))
    assert all(p["spec"].get("nodeName") == PROCESS_NODE_NAME for p in pods(testbed, namespace))
    wait_until(
        lambda: (
            not first & uids(of_state(pods(testbed, namespace), "warm"))
            and len(of_state(pods(testbed, namespace), "warm")) == 2
        ),
        timeout=TIMEOUT,
        what="both warm pods to be replaced",
    )
    assert "WarmPodsNotReady" in event_reasons(testbed, namespace)


@pytest.mark.e2e
def test_unschedulable_warm_pods_are_counted_with_the_schedulers_message_not_churned(
    testbed: TestBed,
    namespace: str,
    operator: OperatorThread,
    node_maker: Callable[[str, dict[str, str]], None],
) -> None:
    group = f"e2e-{secrets.token_hex(3)}"
    label = {"swarmops.dev/e2e-group": group}  # no node has it, yet
    testbed.apply(
        pool_manifest(
            namespace, warm=3, node_selector=label, warm_pool={"readinessTimeoutSeconds": 1}
        ),
    )

    def counted() -> bool:
        status = pool_status(testbed, namespace)
        degraded = pool_condition(testbed, namespace, "Degraded")
        return (
            status.get("unschedulable") == 3
            and degraded.get("status") == "True"
            and degraded.get("reason") == "Unschedulable"
        )

    wait_until(counted, timeout=TIMEOUT, what="3 unschedulable pods in status")
    message = pool_condition(testbed, namespace, "Degraded")["message"]
    # The scheduler's own words, from the pods' PodScheduled condition.
    assert "3 pods cannot be scheduled: 0/" in message and "node affinity/selector" in message
    warm_ready_condition = pool_condition(testbed, namespace, "WarmPoolReady")
    assert warm_ready_condition["reason"] == "Unschedulable"
    assert "PodsUnschedulable" in event_reasons(testbed, namespace)
    first = uids(pods(testbed, namespace))
    # Well past the 1 s readiness timeout: still the same three pods, and no more.
    time.sleep(4)
    assert uids(pods(testbed, namespace)) == first

    # Room appears: the very same pods are placed, and the pool is healthy.
    node_maker(f"{group}-a", label)
    wait_until(settled(testbed, namespace, 0, 3), timeout=TIMEOUT, what="3 Ready warm pods")
    assert uids(pods(testbed, namespace)) == first
    wait_until(
        lambda: pool_condition(testbed, namespace, "Degraded").get("status") == "False",
        timeout=TIMEOUT,
        what="Degraded to clear",
    )
    assert pool_status(testbed, namespace)["unschedulable"] == 0


@pytest.mark.e2e
def test_the_refill_respects_its_rate_limit(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    # 12 pods at 2 a second with a burst of 2: the last is created 5 s after the first at
    # the earliest. A lower bound the limiter guarantees, not a speed measurement.
    testbed.apply(pool_manifest(namespace, warm=12, warm_pool={"refillRate": 2}))
    seen_limited = []

    def filled() -> bool:
        progressing = pool_condition(testbed, namespace, "Progressing")
        if progressing.get("reason") == "RefillRateLimited":
            seen_limited.append(progressing["message"])
        return settled(testbed, namespace, 0, 12)()

    wait_until(filled, timeout=TIMEOUT, what="12 warm pods")
    stamps = sorted(
        datetime.datetime.fromisoformat(p["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
        for p in pods(testbed, namespace)
    )
    # creationTimestamp has whole seconds: allow one of rounding.
    assert (stamps[-1] - stamps[0]).total_seconds() >= 4
    assert seen_limited and "(2/s)" in seen_limited[0]
