"""The operator works with nothing more than the Helm chart's least-privilege RBAC."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from swarmops.runtime import OperatorThread
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.processes import wait_until
from swarmops.testbed.rbac import NAMESPACED_KINDS, NODE_KINDS, install_chart_account


@pytest.mark.e2e
def test_operator_reconciles_with_the_charts_namespaced_role(
    testbed: TestBed,
    namespace: str,
    operator_factory: Callable[..., OperatorThread],
    operator_log: Callable[[], str],
    tmp_path: Path,
) -> None:
    account = install_chart_account(testbed, namespace, tmp_path / "operator.kubeconfig")
    kubeconfig, user = account.kubeconfig, account.user
    # Precondition: the account really is restricted (no cluster-wide reads).
    can_list = testbed.kubectl("auth", "can-i", "list", "namespaces", f"--as={user}", check=False)
    assert can_list.stdout.strip() == "no"

    operator_factory(namespace, kubeconfig=kubeconfig)
    pool = {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": "restricted", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "warmPool": {"size": 1},
            "template": {
                "spec": {
                    "nodeSelector": {"swarmops.dev/node-kind": "cpu"},
                    "containers": [{"name": "agent", "image": "swarmops/agent:rbac"}],
                }
            },
        },
    }
    testbed.kubectl("apply", "-f", "-", input=yaml.safe_dump(pool))

    def ready() -> bool:
        body = json.loads(
            testbed.kubectl("get", "agentpool", "restricted", "-n", namespace, "-o", "json").stdout
        )
        status = body.get("status", {})
        return (status.get("readyReplicas"), status.get("warmReady")) == (1, 1)

    wait_until(ready, timeout=90, what="the pool to be reconciled under the chart's Role")
    reasons = json.loads(testbed.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)[
        "items"
    ]
    assert any(event["reason"] == "PodsCreated" for event in reasons)  # events: allowed too
    # Nothing it asked for was refused (kopf's CRD and namespace scans would be, and a
    # watch of nodes: it asked first, and runs without checking GPU requests).
    assert "forbidden" not in operator_log().lower()
    assert "may not list nodes cluster-wide" in operator_log()


@pytest.mark.e2e
def test_the_charts_node_access_lets_the_operator_judge_gpu_requests(
    testbed: TestBed,
    namespace: str,
    operator_factory: Callable[..., OperatorThread],
    operator_log: Callable[[], str],
    tmp_path: Path,
) -> None:
    kinds = NAMESPACED_KINDS + NODE_KINDS
    account = install_chart_account(testbed, namespace, tmp_path / "operator.kubeconfig", kinds)
    kubeconfig, user = account.kubeconfig, account.user
    cluster_wide = f"swarmops-{account.home}-nodes"[:63].rstrip("-")
    try:
        testbed.kubectl("get", "clusterrole,clusterrolebinding", cluster_wide)  # the name is right
        for verb, allowed in (("watch", "yes"), ("patch", "no")):
            answer = testbed.kubectl("auth", "can-i", verb, "nodes", f"--as={user}", check=False)
            assert answer.stdout.strip() == allowed, f"{verb} nodes"
        operator_factory(namespace, kubeconfig=kubeconfig)
        pool = {
            "apiVersion": "swarmops.dev/v1alpha1",
            "kind": "AgentPool",
            "metadata": {"name": "greedy", "namespace": namespace},
            "spec": {
                "replicas": 1,
                "gpu": {"count": 16},
                "template": {
                    "spec": {"containers": [{"name": "agent", "image": "swarmops/agent:rbac"}]}
                },
            },
        }
        testbed.kubectl("apply", "-f", "-", input=yaml.safe_dump(pool))

        def degraded() -> bool:
            body = json.loads(
                testbed.kubectl("get", "agentpool", "greedy", "-n", namespace, "-o", "json").stdout
            )
            return any(
                c["type"] == "Degraded" and c["reason"] == "UnsatisfiableGPURequest"
                for c in body.get("status", {}).get("conditions", [])
            )

        wait_until(degraded, timeout=90, what="the GPU request to be judged under the chart's RBAC")
        assert "forbidden" not in operator_log().lower()
    finally:
        testbed.kubectl("delete", "clusterrolebinding,clusterrole", cluster_wide, check=False)


@pytest.mark.e2e
def test_a_redis_cluster_forms_under_the_charts_namespaced_role(
    testbed: TestBed,
    namespace: str,
    operator_factory: Callable[..., OperatorThread],
    operator_log: Callable[[], str],
    tmp_path: Path,
) -> None:
    from swarmops.testbed import redisbed  # noqa: PLC0415 (only this test needs it)

    account = install_chart_account(testbed, namespace, tmp_path / "operator.kubeconfig")
    kubeconfig, user = account.kubeconfig, account.user
    # The password Secret is read by name, never listed.
    listing = testbed.kubectl(
        "auth", "can-i", "list", "secrets", f"--as={user}", "-n", namespace, check=False
    )
    assert listing.stdout.strip() == "no"
    operator_factory(namespace, kubeconfig=kubeconfig)
    redisbed.apply_cluster(
        testbed, redisbed.cluster_manifest("cache", namespace, replicasPerShard=0)
    )
    body = redisbed.wait_ready(testbed, namespace, "cache", timeout=120)
    assert body["status"]["slotsOk"] == 16384
    # The operator's own lines (the test bed's process node logs in this process too, and
    # may be refused events in an earlier test's terminating namespace).
    operator_lines = [
        line for line in operator_log().splitlines() if "swarmops.testbed" not in line
    ]
    assert not [line for line in operator_lines if "forbidden" in line.lower()]
