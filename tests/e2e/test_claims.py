"""AgentClaims on the real control plane: warm binds, bursts that never bind a pod twice,
cold starts, waiting, a missing pool, an operator killed mid-burst, ttl and deletion, a
pod write the apiserver refuses, stale warm pods under Recreate, and a pool deleted
under its claims."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from swarmops.runtime import OperatorThread
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.processes import free_port, wait_until
from swarmops.testbed.rbac import install_chart_account

POOL = "agents"
CPU_NODES = {"swarmops.dev/node-kind": "cpu"}
NO_NODE = {"swarmops.dev/node-kind": "none-such"}
TIMEOUT = 90.0


# --- helpers ---------------------------------------------------------------------------------


def apply_pool(
    testbed: TestBed,
    namespace: str,
    *,
    warm: int,
    name: str = POOL,
    capabilities: Iterable[str] = ("python",),
    node_selector: dict[str, str] | None = None,
    replicas: int = 0,
    update_policy: str = "OnReplenish",
    image: str = "swarmops/agent:e2e",
) -> None:
    manifest = {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "warmPool": {"size": warm, "updatePolicy": update_policy},
            "capabilities": list(capabilities),
            "template": {
                "spec": {
                    "nodeSelector": node_selector or CPU_NODES,
                    "containers": [{"name": "agent", "image": image}],
                }
            },
        },
    }
    testbed.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))


def claim_body(name: str, pool: str = POOL, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "AgentClaim",
        "metadata": {"name": name},
        "spec": {"poolRef": {"name": pool}, **spec},
    }


def create_claims(
    testbed: TestBed, namespace: str, names: list[str], pool: str = POOL, **spec: Any
) -> None:
    """Create the claims at once, from as many threads: a burst, not a sequence."""
    with testbed.api_client() as api_client:
        api = client.CustomObjectsApi(api_client)

        def create(name: str) -> None:
            api.create_namespaced_custom_object(
                "swarmops.dev", "v1alpha1", namespace, "agentclaims", claim_body(name, pool, **spec)
            )

        with ThreadPoolExecutor(max_workers=min(len(names), 8)) as executor:
            list(executor.map(create, names))


def claims(testbed: TestBed, namespace: str) -> dict[str, dict[str, Any]]:
    items = testbed.get_json("agentclaims", "-n", namespace)["items"]
    return {item["metadata"]["name"]: item for item in items}


def pool_pods(testbed: TestBed, namespace: str) -> dict[str, dict[str, Any]]:
    """Live (not terminating) pods of the pool, by name."""
    items = testbed.get_json("pods", "-n", namespace, "-l", f"swarmops.dev/pool={POOL}")["items"]
    return {p["metadata"]["name"]: p for p in items if not p["metadata"].get("deletionTimestamp")}


def state(pod: dict[str, Any]) -> str:
    return str(pod["metadata"]["labels"].get("swarmops.dev/state"))


def ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


def warm_ready(testbed: TestBed, namespace: str) -> dict[str, dict[str, Any]]:
    return {
        name: pod
        for name, pod in pool_pods(testbed, namespace).items()
        if state(pod) == "warm" and ready(pod)
    }


def phase(item: dict[str, Any]) -> str | None:
    value = item.get("status", {}).get("phase")
    return None if value is None else str(value)


def condition(item: dict[str, Any], kind: str) -> tuple[str, str] | None:
    for c in item.get("status", {}).get("conditions", []):
        if c["type"] == kind:
            return c["status"], c["reason"]
    return None


def all_in(testbed: TestBed, namespace: str, phases: set[str], count: int) -> Callable[[], bool]:
    def check() -> bool:
        found = claims(testbed, namespace)
        return len(found) == count and all(phase(c) in phases for c in found.values())

    return check


def claim_events(testbed: TestBed, namespace: str, name: str | None = None) -> list[dict[str, Any]]:
    selector = "involvedObject.kind=AgentClaim"
    if name is not None:
        selector += f",involvedObject.name={name}"
    items: list[dict[str, Any]] = testbed.get_json(
        "events", "-n", namespace, "--field-selector", selector
    )["items"]
    return items


def fill_pool(testbed: TestBed, namespace: str, warm: int, **kwargs: Any) -> set[str]:
    apply_pool(testbed, namespace, warm=warm, **kwargs)
    wait_until(
        lambda: len(warm_ready(testbed, namespace)) == warm,
        timeout=TIMEOUT,
        what=f"{warm} Ready warm pods",
    )
    return {p["metadata"]["uid"] for p in warm_ready(testbed, namespace).values()}


def freeze_refills(testbed: TestBed, namespace: str, warm: int) -> None:
    """Point the template at no node: the pool's existing warm pods stay (OnReplenish),
    and whatever it creates from now on (refills and cold starts) can never be Ready."""
    apply_pool(testbed, namespace, warm=warm, node_selector=NO_NODE)


def assert_bound_exactly_once(testbed: TestBed, namespace: str) -> dict[str, dict[str, Any]]:
    """Every Bound claim names its own pod; every claimed pod belongs to exactly one claim,
    the one whose label it carries and whose uid is its controller; no pod is extra."""
    found = claims(testbed, namespace)
    bound = {name: c for name, c in found.items() if phase(c) == "Bound"}
    pod_names = [c["status"]["podName"] for c in bound.values()]
    assert len(pod_names) == len(set(pod_names)), Counter(pod_names).most_common(3)
    labelled = {
        name: pod
        for name, pod in pool_pods(testbed, namespace).items()
        if "swarmops.dev/claim" in pod["metadata"]["labels"]
    }
    assert set(labelled) == set(pod_names), "claimed pods and bound claims differ"
    for claim_name, item in bound.items():
        pod = labelled[item["status"]["podName"]]
        assert pod["metadata"]["labels"]["swarmops.dev/claim"] == claim_name
        assert state(pod) == "claimed"
        owners = pod["metadata"]["ownerReferences"]
        assert [(o["kind"], o["uid"], o.get("controller")) for o in owners] == [
            ("AgentClaim", item["metadata"]["uid"], True)
        ]
        assert item["status"].get("nodeName") == pod["spec"].get("nodeName")
    return bound


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False


def metric(operator: OperatorThread, line_prefix: str) -> float:
    url = f"http://127.0.0.1:{operator.settings.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- tests -----------------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_claim_binds_a_warm_pod_the_pool_refills_and_deletion_collects_the_pod(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    warm_uids = fill_pool(testbed, namespace, warm=2)
    create_claims(testbed, namespace, ["session"], capabilities=["python"])
    testbed.kubectl(
        "wait", "--for=condition=Ready", "agentclaim/session", "-n", namespace, "--timeout=60s"
    )
    item = claims(testbed, namespace)["session"]
    status = item["status"]
    assert status["phase"] == "Bound" and status["warmHit"] is True
    assert status["podIP"] and status["nodeName"] and status["boundAt"]
    assert status["timeToBindMilliseconds"] >= 0
    assert condition(item, "Bound") == ("True", "WarmPodBound")
    pod = pool_pods(testbed, namespace)[status["podName"]]
    assert pod["metadata"]["uid"] in warm_uids  # a pod that was warm, not a new one
    bound = assert_bound_exactly_once(testbed, namespace)
    assert set(bound) == {"session"}

    # The pool counts the claimed pod and refills its warm pool with new pods.
    def refilled() -> bool:
        warm = warm_ready(testbed, namespace)
        pool = testbed.get_json("agentpool", POOL, "-n", namespace)
        return len(warm) == 2 and pool.get("status", {}).get("claimed") == 1

    wait_until(refilled, timeout=TIMEOUT, what="the warm pool to refill")
    reasons = {e["reason"]: e["message"] for e in claim_events(testbed, namespace, "session")}
    assert "Bound" in reasons and "warm pod" in reasons["Bound"]
    assert metric(operator, 'swarmops_claim_warm_pool_total{result="hit"}') == 1

    # Delete policy: the real garbage collector removes the pod once the claim is gone.
    testbed.kubectl("delete", "agentclaim", "session", "-n", namespace, "--wait=false")
    wait_until(
        lambda: status["podName"] not in pool_pods(testbed, namespace),
        timeout=TIMEOUT,
        what="the garbage collector to delete the claimed pod",
    )
    wait_until(
        lambda: testbed.get_json("agentpool", POOL, "-n", namespace)["status"].get("claimed") == 0,
        timeout=TIMEOUT,
        what="the pool to count no claimed pod",
    )


@pytest.mark.e2e
def test_a_burst_of_20_claims_on_10_warm_pods_binds_each_once_with_10_cold_starts(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    warm_uids = fill_pool(testbed, namespace, warm=10)
    freeze_refills(testbed, namespace, warm=10)  # exactly 10 warm pods to hand out
    names = [f"burst-{i:02d}" for i in range(20)]
    create_claims(testbed, namespace, names, whenNoWarmPod="ColdStart")
    wait_until(all_in(testbed, namespace, {"Bound"}, 20), timeout=TIMEOUT, what="20 Bound claims")
    bound = assert_bound_exactly_once(testbed, namespace)
    hits = [c for c in bound.values() if c["status"]["warmHit"]]
    misses = [c for c in bound.values() if not c["status"]["warmHit"]]
    assert len(hits) == 10 and len(misses) == 10
    pods = pool_pods(testbed, namespace)
    assert {pods[c["status"]["podName"]]["metadata"]["uid"] for c in hits} == warm_uids
    for item in misses:  # cold-started: from the (now unschedulable) template, not Ready
        assert condition(item, "Bound") == ("True", "ColdStarted")

    def misses_report_unschedulable() -> bool:
        # Bound comes with the create; the scheduler's verdict on the pod comes after.
        found = claims(testbed, namespace)
        return all(
            condition(found[c["metadata"]["name"]], "Ready") == ("False", "PodUnschedulable")
            for c in misses
        )

    wait_until(
        misses_report_unschedulable,
        timeout=TIMEOUT,
        what="the cold-started claims to report their pods unschedulable",
    )
    assert metric(operator, 'swarmops_claim_warm_pool_total{result="hit"}') == 10
    assert metric(operator, 'swarmops_claim_warm_pool_total{result="miss"}') == 10


@pytest.mark.e2e
def test_waiting_claims_fail_with_bind_timeout_when_no_warm_pod_comes(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    fill_pool(testbed, namespace, warm=10)
    freeze_refills(testbed, namespace, warm=10)
    names = [f"wait-{i:02d}" for i in range(20)]
    create_claims(testbed, namespace, names, whenNoWarmPod="Wait", bindTimeoutSeconds=5)
    wait_until(
        all_in(testbed, namespace, {"Bound", "Failed"}, 20),
        timeout=TIMEOUT,
        what="every claim Bound or Failed",
    )
    found = claims(testbed, namespace)
    failed = {n: c for n, c in found.items() if phase(c) == "Failed"}
    bound = assert_bound_exactly_once(testbed, namespace)
    assert len(bound) == 10 and all(c["status"]["warmHit"] for c in bound.values())
    assert len(failed) == 10
    for name, item in failed.items():
        assert condition(item, "Bound") == ("False", "BindTimeout")
        assert condition(item, "Degraded") == ("True", "BindTimeout")
        assert "podName" not in item["status"]
        assert "BindTimeout" in {e["reason"] for e in claim_events(testbed, namespace, name)}
    # No cold start happened: the only claimed pods are the 10 that were warm.
    claimed = [p for p in pool_pods(testbed, namespace).values() if state(p) == "claimed"]
    assert len(claimed) == 10


@pytest.mark.e2e
def test_waiting_claims_bind_as_the_pool_refills(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    fill_pool(testbed, namespace, warm=2)
    names = [f"queue-{i}" for i in range(6)]
    create_claims(testbed, namespace, names, whenNoWarmPod="Wait", bindTimeoutSeconds=120)
    wait_until(all_in(testbed, namespace, {"Bound"}, 6), timeout=TIMEOUT, what="6 Bound claims")
    bound = assert_bound_exactly_once(testbed, namespace)
    assert all(c["status"]["warmHit"] for c in bound.values())  # never a cold start
    for name in names:
        testbed.kubectl(
            "wait", "--for=condition=Ready", f"agentclaim/{name}", "-n", namespace, "--timeout=60s"
        )


@pytest.mark.e2e
def test_a_claim_for_a_missing_pool_is_degraded_while_others_bind_and_heals(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    fill_pool(testbed, namespace, warm=1)
    create_claims(testbed, namespace, ["orphan"], pool="later", bindTimeoutSeconds=300)
    create_claims(testbed, namespace, ["lucky"])

    def degraded() -> bool:
        item = claims(testbed, namespace).get("orphan", {})
        return condition(item, "Degraded") == ("True", "PoolNotFound")

    wait_until(degraded, timeout=TIMEOUT, what="the orphan claim Degraded with PoolNotFound")
    orphan = claims(testbed, namespace)["orphan"]
    assert phase(orphan) == "Pending"
    assert condition(orphan, "Ready") == ("False", "PoolNotFound")
    events = claim_events(testbed, namespace, "orphan")
    assert [(e["type"], e["reason"]) for e in events] == [("Warning", "PoolNotFound")]
    assert "AgentPool later does not exist" in events[0]["message"]
    testbed.kubectl(
        "wait", "--for=condition=Ready", "agentclaim/lucky", "-n", namespace, "--timeout=60s"
    )
    assert operator.alive

    # The pool appears: the claim binds without anyone touching it.
    apply_pool(testbed, namespace, warm=1, name="later")
    testbed.kubectl(
        "wait", "--for=condition=Ready", "agentclaim/orphan", "-n", namespace, "--timeout=60s"
    )
    healed = claims(testbed, namespace)["orphan"]
    assert condition(healed, "Degraded") == ("False", "AsExpected")


@pytest.mark.e2e
def test_capabilities_the_pool_lacks_degrade_the_claim(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    apply_pool(testbed, namespace, warm=0)
    create_claims(testbed, namespace, ["picky"], capabilities=["browser"], bindTimeoutSeconds=2)
    wait_until(all_in(testbed, namespace, {"Failed"}, 1), timeout=TIMEOUT, what="the claim to fail")
    item = claims(testbed, namespace)["picky"]
    assert condition(item, "Degraded") == ("True", "CapabilitiesNotOffered")
    reasons = [e["reason"] for e in claim_events(testbed, namespace, "picky")]
    assert reasons.count("CapabilitiesNotOffered") == 2  # degraded, then failed


@pytest.mark.e2e
def test_an_operator_killed_mid_burst_leaves_every_claim_bound_exactly_once(
    testbed: TestBed,
    namespace: str,
    tmp_path: Path,
    operator_factory: Callable[..., OperatorThread],
) -> None:
    health, metrics = free_port(), free_port()
    log_path = tmp_path / "first-operator.log"
    with log_path.open("w") as log:
        first = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "swarmops.cli",
                "run",
                "--kubeconfig",
                str(testbed.kubeconfig),
                "--namespace",
                namespace,
                "--health-port",
                str(health),
                "--metrics-port",
                str(metrics),
            ],
            env={**os.environ},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    names = [f"crash-{i:02d}" for i in range(30)]

    def trickle() -> None:
        """Claims arriving one after another, so the kill lands in the middle of them."""
        for name in names:
            create_claims(testbed, namespace, [name])
            time.sleep(0.05)

    try:
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{metrics}/readyz"),
            timeout=60,
            what="the first operator",
        )
        fill_pool(testbed, namespace, warm=10)
        with ThreadPoolExecutor(max_workers=1) as background:
            burst = background.submit(trickle)

            def bound_count() -> int:
                return sum(phase(c) == "Bound" for c in claims(testbed, namespace).values())

            wait_until(lambda: bound_count() >= 3, timeout=TIMEOUT, what="binds to start")
            first.send_signal(signal.SIGKILL)  # no cleanup, no graceful stop
            first.wait(timeout=30)
            bound_by_first = bound_count()
            burst.result(timeout=TIMEOUT)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
    assert bound_by_first < len(names)  # the kill did land mid-burst
    operator_factory(namespace)

    def all_bound_and_placed() -> bool:
        # A cold-started pod is bound before the scheduler places it; its claim's status
        # names the node once the pod's next event is reconciled.
        found = claims(testbed, namespace)
        return all_in(testbed, namespace, {"Bound"}, 30)() and all(
            c["status"].get("nodeName") for c in found.values()
        )

    wait_until(all_bound_and_placed, timeout=TIMEOUT, what="every claim Bound after the restart")
    bound = assert_bound_exactly_once(testbed, namespace)
    assert len(bound) == 30
    # Nothing extra: the pool's pods are its warm ones plus exactly the claimed ones.
    pods = pool_pods(testbed, namespace)
    assert sum(state(p) == "claimed" for p in pods.values()) == 30
    wait_until(
        lambda: len(warm_ready(testbed, namespace)) == 10,
        timeout=TIMEOUT,
        what="the pool to converge on 10 warm pods",
    )


@pytest.mark.e2e
@pytest.mark.parametrize("policy", ["Delete", "Retain"])
def test_the_ttl_releases_the_claim_per_its_shutdown_policy(
    testbed: TestBed, namespace: str, operator: OperatorThread, policy: str
) -> None:
    fill_pool(testbed, namespace, warm=1)
    create_claims(
        testbed,
        namespace,
        ["brief"],
        lifetime={"ttlSecondsAfterBound": 2, "shutdownPolicy": policy},
    )
    wait_until(all_in(testbed, namespace, {"Released"}, 1), timeout=TIMEOUT, what="Released")
    item = claims(testbed, namespace)["brief"]
    pod_name = item["status"]["podName"]
    assert condition(item, "Bound") == ("False", "TTLExpired")
    assert item["status"]["warmHit"] is True and item["status"]["expiresAt"]
    assert "Released" in {e["reason"] for e in claim_events(testbed, namespace, "brief")}
    if policy == "Delete":
        wait_until(
            lambda: (
                not testbed.kubectl(
                    "get", "pod", pod_name, "-n", namespace, "--ignore-not-found", "-o", "name"
                ).stdout.strip()
            ),
            timeout=TIMEOUT,
            what="the pod to be deleted",
        )
        return
    # Retain: the pod lives on, owned by nobody, out of the pool; the claim lets go.
    wait_until(
        lambda: not claims(testbed, namespace)["brief"]["metadata"].get("finalizers"),
        timeout=TIMEOUT,
        what="the retain finalizer to come off",
    )
    pod = testbed.get_json("pod", pod_name, "-n", namespace)
    assert not pod["metadata"].get("ownerReferences")
    assert "swarmops.dev/pool" not in pod["metadata"]["labels"]
    assert pod["metadata"]["labels"]["swarmops.dev/claim"] == "brief"
    testbed.kubectl("delete", "agentclaim", "brief", "-n", namespace, "--timeout=60s")
    assert testbed.get_json("pod", pod_name, "-n", namespace)["metadata"]["name"] == pod_name


@pytest.mark.e2e
def test_deleting_a_retained_claim_keeps_its_pod(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    fill_pool(testbed, namespace, warm=1)
    create_claims(testbed, namespace, ["keeper"], lifetime={"shutdownPolicy": "Retain"})
    testbed.kubectl(
        "wait", "--for=condition=Ready", "agentclaim/keeper", "-n", namespace, "--timeout=60s"
    )
    item = claims(testbed, namespace)["keeper"]
    assert item["metadata"]["finalizers"] == ["swarmops.dev/retain-pod"]
    pod_name = item["status"]["podName"]
    # The finalizer holds the claim until its pod is cut loose; then it goes.
    testbed.kubectl("delete", "agentclaim", "keeper", "-n", namespace, "--timeout=60s")
    pod = testbed.get_json("pod", pod_name, "-n", namespace)
    assert not pod["metadata"].get("deletionTimestamp")
    assert not pod["metadata"].get("ownerReferences")
    assert "swarmops.dev/pool" not in pod["metadata"]["labels"]


@pytest.mark.e2e
def test_claims_need_nothing_beyond_the_charts_role(
    testbed: TestBed,
    namespace: str,
    operator_factory: Callable[..., OperatorThread],
    operator_log: Callable[[], str],
    tmp_path: Path,
) -> None:
    account = install_chart_account(testbed, namespace, tmp_path / "operator.kubeconfig")
    operator_factory(namespace, kubeconfig=account.kubeconfig)
    fill_pool(testbed, namespace, warm=1)
    freeze_refills(testbed, namespace, warm=1)
    # A warm bind with the finalizer (Retain), then a cold start (the pool is empty).
    create_claims(testbed, namespace, ["kept"], lifetime={"shutdownPolicy": "Retain"})
    testbed.kubectl(
        "wait", "--for=condition=Ready", "agentclaim/kept", "-n", namespace, "--timeout=60s"
    )
    create_claims(testbed, namespace, ["cold"])
    wait_until(all_in(testbed, namespace, {"Bound"}, 2), timeout=TIMEOUT, what="both Bound")
    assert claims(testbed, namespace)["cold"]["status"]["warmHit"] is False
    testbed.kubectl("delete", "agentclaim", "kept", "-n", namespace, "--timeout=60s")
    # The operator's own lines (the test bed's process node logs in this process too, and
    # may be refused Events in an earlier test's terminating namespace).
    operator_lines = [
        line for line in operator_log().splitlines() if "swarmops.testbed" not in line
    ]
    assert not [line for line in operator_lines if "forbidden" in line.lower()]


@pytest.mark.e2e
def test_a_pod_write_the_apiserver_refuses_is_bind_failed_until_it_gives_up_or_heals(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    apply_pool(testbed, namespace, warm=0)  # nothing warm: every claim must cold-start
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-pods", "namespace": namespace},
        "spec": {"hard": {"pods": "0"}},
    }
    testbed.kubectl("apply", "-f", "-", input=yaml.safe_dump(quota))
    create_claims(testbed, namespace, ["patient"], bindTimeoutSeconds=600)
    create_claims(testbed, namespace, ["hasty"], bindTimeoutSeconds=15)

    def refused(name: str) -> Callable[[], bool]:
        def check() -> bool:
            item = claims(testbed, namespace).get(name, {})
            return condition(item, "Degraded") == ("True", "BindFailed")

        return check

    wait_until(refused("patient"), timeout=TIMEOUT, what="the claim Degraded with BindFailed")
    patient = claims(testbed, namespace)["patient"]
    assert phase(patient) == "Pending"
    assert condition(patient, "Bound") == ("False", "BindFailed")
    message = next(c["message"] for c in patient["status"]["conditions"] if c["type"] == "Bound")
    assert "quota" in message  # the apiserver's own words, not a guess
    events = claim_events(testbed, namespace, "patient")
    assert [(e["type"], e["reason"]) for e in events] == [("Warning", "BindFailed")]
    assert not any(
        "swarmops.dev/claim" in p["metadata"]["labels"]
        for p in pool_pods(testbed, namespace).values()
    )

    # A claim whose deadline passes while the writes are refused fails with the refusal.
    wait_until(
        lambda: phase(claims(testbed, namespace).get("hasty", {})) == "Failed",
        timeout=TIMEOUT,
        what="the short claim to fail",
    )
    hasty = claims(testbed, namespace)["hasty"]
    assert condition(hasty, "Bound") == ("False", "BindFailed")
    final = next(c["message"] for c in hasty["status"]["conditions"] if c["type"] == "Bound")
    assert "quota" in final and "gave up after 15s" in final
    assert operator.alive

    # The quota goes: the waiting claim binds by itself, cold.
    testbed.kubectl("delete", "resourcequota", "no-pods", "-n", namespace)
    testbed.kubectl(
        "wait", "--for=condition=Bound", "agentclaim/patient", "-n", namespace, "--timeout=60s"
    )
    healed = claims(testbed, namespace)["patient"]
    assert healed["status"]["warmHit"] is False
    assert condition(healed, "Degraded") == ("False", "AsExpected")
    assert set(assert_bound_exactly_once(testbed, namespace)) == {"patient"}
    assert phase(claims(testbed, namespace)["hasty"]) == "Failed"  # terminal stays terminal


HOLD_LABEL = "e2e.swarmops.dev/hold"


@contextlib.contextmanager
def pod_deletes_held(testbed: TestBed, namespace: str) -> Iterator[None]:
    """While inside, the apiserver refuses to delete this namespace's pods labelled
    HOLD_LABEL (a ValidatingAdmissionPolicy, cluster-wide: always lifted on the way out)."""
    name = f"hold-{namespace}"[:63]
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["DELETE"],
                        "resources": ["pods"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": f"!has(oldObject.metadata.labels) || "
                    f"!('{HOLD_LABEL}' in oldObject.metadata.labels)",
                    "message": "held by the test",
                    "reason": "Forbidden",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hold-probe", "namespace": namespace, "labels": {HOLD_LABEL: "yes"}},
        "spec": {"nodeSelector": NO_NODE, "containers": [{"name": "c", "image": "none"}]},
    }

    def refused() -> bool:
        result = testbed.kubectl(
            "delete", "pod", "hold-probe", "-n", namespace, "--dry-run=server", check=False
        )
        return result.returncode != 0 and "held by the test" in result.stderr

    try:
        testbed.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([policy, binding]))
        testbed.kubectl("apply", "-f", "-", input=yaml.safe_dump(probe))
        wait_until(refused, timeout=TIMEOUT, what="the apiserver to enforce the hold")
        yield
    finally:
        testbed.kubectl("delete", "validatingadmissionpolicybinding", name, "--ignore-not-found")
        testbed.kubectl("delete", "validatingadmissionpolicy", name, "--ignore-not-found")


def revision(pod: dict[str, Any]) -> str:
    return str(pod["metadata"]["labels"].get("swarmops.dev/revision"))


@pytest.mark.e2e
def test_under_recreate_a_claim_refuses_stale_warm_pods_and_waits_for_the_new_template(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    stale_uids = fill_pool(testbed, namespace, warm=2, update_policy="Recreate")
    old_revision = testbed.get_json("agentpool", POOL, "-n", namespace)["status"]["currentRevision"]
    # Recreate deletes stale warm pods at once; to see a claim meet one, the apiserver
    # refuses to delete these two.
    stale = list(warm_ready(testbed, namespace))
    testbed.kubectl("label", "pod", *stale, f"{HOLD_LABEL}=yes", "-n", namespace)

    def new_template(node_selector: dict[str, str] | None = None) -> None:
        apply_pool(
            testbed,
            namespace,
            warm=2,
            update_policy="Recreate",
            image="swarmops/agent:e2e-2",
            node_selector=node_selector,
        )

    with pod_deletes_held(testbed, namespace):
        # A new template whose pods never become Ready: only stale pods are Ready.
        new_template(NO_NODE)
        wait_until(
            lambda: (
                testbed.get_json("agentpool", POOL, "-n", namespace)["status"].get(
                    "currentRevision"
                )
                not in (None, old_revision)
            ),
            timeout=TIMEOUT,
            what="the pool to see the new template",
        )
        create_claims(testbed, namespace, ["fresh"], whenNoWarmPod="Wait", bindTimeoutSeconds=300)

        def waiting() -> bool:
            item = claims(testbed, namespace).get("fresh", {})
            return condition(item, "Bound") == ("False", "WaitingForWarmPod")

        # The claim looked, and found nothing it may take, while two warm pods were Ready.
        wait_until(waiting, timeout=TIMEOUT, what="the claim to wait for a warm pod")
        still_warm = warm_ready(testbed, namespace)
        assert {p["metadata"]["uid"] for p in still_warm.values()} == stale_uids
        assert {revision(p) for p in still_warm.values()} == {old_revision}
        assert phase(claims(testbed, namespace)["fresh"]) == "Pending"

        # The template becomes placeable: the claim binds a pod of the newest template.
        new_template()
        testbed.kubectl(
            "wait", "--for=condition=Bound", "agentclaim/fresh", "-n", namespace, "--timeout=60s"
        )
        bound = assert_bound_exactly_once(testbed, namespace)["fresh"]
        pod = pool_pods(testbed, namespace)[bound["status"]["podName"]]
        current = testbed.get_json("agentpool", POOL, "-n", namespace)["status"]["currentRevision"]
        assert pod["metadata"]["uid"] not in stale_uids
        assert revision(pod) == current != old_revision
        assert bound["status"]["warmHit"] is True


@pytest.mark.e2e
def test_deleting_a_pool_deletes_its_warm_and_active_pods_and_keeps_the_claimed_ones(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    apply_pool(testbed, namespace, warm=3, replicas=1)
    wait_until(
        lambda: (
            len(warm_ready(testbed, namespace)) == 3
            and sum(state(p) == "active" for p in pool_pods(testbed, namespace).values()) == 1
        ),
        timeout=TIMEOUT,
        what="3 Ready warm pods and an active one",
    )
    create_claims(testbed, namespace, ["stays", "goes"])
    wait_until(all_in(testbed, namespace, {"Bound"}, 2), timeout=TIMEOUT, what="2 Bound claims")
    claimed = {
        name: item["status"]["podName"]
        for name, item in assert_bound_exactly_once(testbed, namespace).items()
    }
    claimed_uids = {
        pool_pods(testbed, namespace)[pod]["metadata"]["uid"] for pod in claimed.values()
    }

    testbed.kubectl("delete", "agentpool", POOL, "-n", namespace, "--timeout=60s")

    def only_claimed_left() -> bool:
        pods = testbed.get_json("pods", "-n", namespace, "-l", f"swarmops.dev/pool={POOL}")
        return {p["metadata"]["uid"] for p in pods["items"]} == claimed_uids

    wait_until(only_claimed_left, timeout=TIMEOUT, what="the warm and active pods to go")
    for item in claims(testbed, namespace).values():
        assert phase(item) == "Bound" and condition(item, "Ready") == ("True", "PodReady")
    assert all(
        not p["metadata"].get("deletionTimestamp") for p in pool_pods(testbed, namespace).values()
    )

    # A claimed pod ends with its claim (Delete policy), not with the pool.
    testbed.kubectl("delete", "agentclaim", "goes", "-n", namespace, "--wait=false")
    wait_until(
        lambda: set(pool_pods(testbed, namespace)) == {claimed["stays"]},
        timeout=TIMEOUT,
        what="the ended claim's pod to go",
    )
    stays = claims(testbed, namespace)["stays"]
    assert phase(stays) == "Bound" and stays["status"]["podName"] == claimed["stays"]
    assert operator.alive
