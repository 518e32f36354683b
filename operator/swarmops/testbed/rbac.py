"""The Helm chart's RBAC on the test bed: an operator account with exactly what the
chart grants, for tests that prove the operator needs nothing more."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from swarmops.testbed.binaries import repository_root
from swarmops.testbed.cluster import TestBed

# What the chart gives an operator watching named namespaces.
NAMESPACED_KINDS = ("ServiceAccount", "Role", "RoleBinding")
# The chart's read access to nodes (cluster-scoped), for GPU requests.
NODE_KINDS = ("ClusterRole", "ClusterRoleBinding")


@dataclass(frozen=True)
class ChartAccount:
    """The chart's ServiceAccount, and a kubeconfig that authenticates as it."""

    kubeconfig: Path
    user: str  # system:serviceaccount:<home>:<name>, for `kubectl auth can-i --as`
    home: str  # the namespace the operator's account lives in


def install_chart_account(
    testbed: TestBed,
    watched: str,
    kubeconfig: Path,
    kinds: tuple[str, ...] = NAMESPACED_KINDS,
) -> ChartAccount:
    """Render the chart for an operator living in `<watched>-sys` and watching `watched`,
    apply its objects of `kinds`, and write a kubeconfig with the account's token."""
    home = f"{watched[:50]}-sys"
    testbed.namespace_ready(home)
    rendered = testbed.helm(
        "template",
        "swarmops",
        str(repository_root() / "helm" / "swarmops"),
        "--namespace",
        home,
        "--set",
        f"watchNamespaces={{{watched}}}",
    ).stdout
    objects = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] in kinds]
    found = {doc["kind"] for doc in objects}
    if found != set(kinds):
        raise RuntimeError(f"the chart renders {sorted(found)}, not {sorted(kinds)}")
    testbed.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    account = next(doc for doc in objects if doc["kind"] == "ServiceAccount")["metadata"]["name"]
    token = testbed.kubectl("create", "token", account, "-n", home).stdout.strip()
    config: dict[str, Any] = yaml.safe_load(testbed.kubeconfig.read_text())
    config["users"] = [{"name": account, "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = account
    kubeconfig.write_text(yaml.safe_dump(config))
    return ChartAccount(kubeconfig, f"system:serviceaccount:{home}:{account}", home)
