"""The operator works with nothing more than the Helm chart's least-privilege RBAC."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from swarmops.runtime import OperatorThread
from swarmops.testbed.binaries import repository_root
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.processes import wait_until

RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding")


def service_account_kubeconfig(testbed: TestBed, watched: str, home: str, path: Path) -> str:
    """Install the chart's RBAC for one watched namespace; a kubeconfig with its token."""
    rendered = testbed.helm(
        "template",
        "swarmops",
        str(repository_root() / "helm" / "swarmops"),
        "--namespace",
        home,
        "--set",
        f"watchNamespaces={{{watched}}}",
    ).stdout
    objects = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] in RBAC_KINDS]
    assert {doc["kind"] for doc in objects} == set(RBAC_KINDS)
    testbed.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    account = next(doc for doc in objects if doc["kind"] == "ServiceAccount")["metadata"]["name"]
    token = testbed.kubectl("create", "token", account, "-n", home).stdout.strip()
    config: dict[str, Any] = yaml.safe_load(testbed.kubeconfig.read_text())
    config["users"] = [{"name": account, "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = account
    path.write_text(yaml.safe_dump(config))
    return f"system:serviceaccount:{home}:{account}"


@pytest.mark.e2e
def test_operator_reconciles_with_the_charts_namespaced_role(
    testbed: TestBed,
    namespace: str,
    operator_factory: Callable[..., OperatorThread],
    operator_log: Callable[[], str],
    tmp_path: Path,
) -> None:
    home = f"{namespace[:50]}-sys"
    testbed.namespace_ready(home)
    kubeconfig = tmp_path / "operator.kubeconfig"
    user = service_account_kubeconfig(testbed, namespace, home, kubeconfig)
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
    # Nothing it asked for was refused (kopf's CRD and namespace scans would be).
    assert "forbidden" not in operator_log().lower()
