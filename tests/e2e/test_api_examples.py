"""The shipped examples apply cleanly, and the CRDs behave as kubectl, HPA and kstatus expect:
short names, the swarmops category, printer columns, the scale subresource, the status
subresource and ``kubectl wait --for=condition=Ready``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from swarmops.api import GROUP, KINDS, VERSION, AgentPool, kind_info, parse

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "manifests" / "examples"


def _contains(stored: Any, written: Any) -> bool:
    """Everything written is still there (the apiserver may only add defaults)."""
    if isinstance(written, dict):
        return isinstance(stored, dict) and all(
            key in stored and _contains(stored[key], value) for key, value in written.items()
        )
    if isinstance(written, list):
        return (
            isinstance(stored, list)
            and len(stored) == len(written)
            and all(_contains(a, b) for a, b in zip(stored, written, strict=True))
        )
    return bool(stored == written)


def _get(testbed: Any, namespace: str, resource: str, name: str) -> dict[str, Any]:
    result = testbed.kubectl("get", resource, name, "-n", namespace, "-o", "json")
    return dict(json.loads(result.stdout))


@pytest.mark.e2e
def test_examples_apply_and_keep_every_field(
    testbed: Any, crds_installed: Path, namespace: str
) -> None:
    testbed.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES))
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for written in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            info = kind_info(written["kind"])
            stored = _get(testbed, namespace, info.crd_name, written["metadata"]["name"])
            assert _contains(stored["spec"], written["spec"]), path.name
            assert parse(stored).metadata.name == written["metadata"]["name"]


@pytest.mark.e2e
def test_short_names_and_category_are_served(
    testbed: Any, crds_installed: Path, namespace: str
) -> None:
    listing = testbed.kubectl("api-resources", "--no-headers").stdout
    owners: dict[str, list[str]] = {}
    for line in listing.splitlines():
        # NAME [SHORTNAMES] APIVERSION NAMESPACED KIND: five columns when short names exist.
        columns = line.split()
        if len(columns) == 5:
            for short in columns[1].split(","):
                owners.setdefault(short, []).append(f"{columns[0]}.{columns[2]}")
    for info in KINDS:
        for short in info.short_names:
            assert owners.get(short) == [f"{info.plural}.{GROUP}/{VERSION}"], owners.get(short)

    testbed.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES))
    everything = testbed.kubectl("get", "swarmops", "-n", namespace, "-o", "name").stdout
    for info in KINDS:
        assert f"{info.singular}.{GROUP}/" in everything


@pytest.mark.e2e
def test_agent_pool_scale_subresource_and_printer_columns(
    testbed: Any, crds_installed: Path, namespace: str
) -> None:
    testbed.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "agentpool.yaml"))
    selector = "swarmops.dev/pool=coder,swarmops.dev/state=active"
    testbed.kubectl(
        "patch",
        "agentpool",
        "coder",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"replicas": 2, "selector": selector}}),
    )

    testbed.kubectl("scale", "agentpool", "coder", "-n", namespace, "--replicas=5")

    pool = AgentPool.from_body(_get(testbed, namespace, "agentpool", "coder"))
    assert pool.spec.replicas == 5
    scale = json.loads(
        testbed.kubectl(
            "get",
            "--raw",
            f"/apis/swarmops.dev/v1alpha1/namespaces/{namespace}/agentpools/coder/scale",
        ).stdout
    )
    assert scale["spec"]["replicas"] == 5
    assert scale["status"] == {"replicas": 2, "selector": selector}

    table = testbed.kubectl("get", "agentpool", "coder", "-n", namespace).stdout
    assert table.split()[:7] == ["NAME", "DESIRED", "READY", "WARM", "CLAIMED", "REVISION", "AGE"]


@pytest.mark.e2e
def test_status_is_only_written_through_the_status_subresource(
    testbed: Any, crds_installed: Path, namespace: str
) -> None:
    testbed.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "agentclaim.yaml"))
    testbed.kubectl(
        "patch",
        "agentclaim",
        "coder-session",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Bound"}}),
    )
    claim = _get(testbed, namespace, "agentclaim", "coder-session")
    assert "status" not in claim


@pytest.mark.e2e
def test_kubectl_wait_understands_the_ready_condition(
    testbed: Any, crds_installed: Path, namespace: str
) -> None:
    testbed.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "rediscluster.yaml"))
    generation = _get(testbed, namespace, "rediscluster", "cache")["metadata"]["generation"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {
        "observedGeneration": generation,
        "phase": "Ready",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "ClusterHealthy",
                "message": "16384 slots assigned, cluster_state ok",
                "lastTransitionTime": now,
                "observedGeneration": generation,
            }
        ],
    }
    testbed.kubectl(
        "patch",
        "rediscluster",
        "cache",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )

    result = testbed.kubectl(
        "wait", "--for=condition=Ready", "rediscluster/cache", "-n", namespace, "--timeout=30s"
    )

    assert "condition met" in result.stdout
    table = testbed.kubectl("get", "rediscluster", "cache", "-n", namespace, "-o", "wide").stdout
    assert "ClusterHealthy" in table
