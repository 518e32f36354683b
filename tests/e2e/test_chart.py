"""The Helm chart: the plain-YAML install is its rendering, and a real `helm install`
grants the operator exactly what it needs and nothing cluster-wide it does not."""

from __future__ import annotations

import subprocess

import pytest

from swarmops.testbed.binaries import repository_root
from swarmops.testbed.cluster import TestBed

CHART = repository_root() / "helm" / "swarmops"


@pytest.mark.e2e
def test_install_manifest_is_the_rendered_chart(testbed: TestBed) -> None:
    rendered = subprocess.run(
        ["bash", str(repository_root() / "hack" / "render-install.sh")],
        check=True,
        capture_output=True,
        text=True,
        cwd="/",
        env={**testbed.env(), "RENDER_TO_STDOUT": "1"},
    )
    assert rendered.returncode == 0
    committed = (repository_root() / "manifests" / "install.yaml").read_text()
    assert committed == rendered.stdout, "manifests/install.yaml is stale: run `make generate`"


@pytest.mark.e2e
def test_chart_lints(testbed: TestBed) -> None:
    result = testbed.helm("lint", "--strict", str(CHART), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _can(testbed: TestBed, service_account: str, verb: str, resource: str, namespace: str) -> bool:
    result = testbed.kubectl(
        "auth", "can-i", verb, resource, f"--as={service_account}", "-n", namespace, check=False
    )
    return result.stdout.strip() == "yes"


@pytest.mark.e2e
def test_namespaced_install_grants_least_privilege(testbed: TestBed, namespace: str) -> None:
    release = "swarmops"
    testbed.helm(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        f"watchNamespaces={{{namespace}}}",
        "--wait=false",
    )
    try:
        operator = f"system:serviceaccount:{namespace}:{release}"
        for verb, resource in [
            ("create", "pods"),
            ("delete", "pods"),
            ("watch", "agentpools.swarmops.dev"),
            ("patch", "agentpools.swarmops.dev/status"),
            ("patch", "agentclaims.swarmops.dev/status"),
            ("create", "events"),
        ]:
            assert _can(testbed, operator, verb, resource, namespace), f"cannot {verb} {resource}"
        for verb, resource, where in [
            ("get", "secrets", namespace),
            ("create", "pods", "default"),
            ("list", "agentpools.swarmops.dev", "default"),
            ("delete", "agentpools.swarmops.dev", namespace),
            ("delete", "nodes", namespace),
            ("create", "clusterroles", namespace),
        ]:
            assert not _can(testbed, operator, verb, resource, where), f"may {verb} {resource}"
        deployment = testbed.kubectl(
            "get", "deployment", release, "-n", namespace, "-o", "jsonpath={.spec.template.spec}"
        ).stdout
        assert '"runAsNonRoot":true' in deployment
        assert '"readOnlyRootFilesystem":true' in deployment
        assert f"--namespace={namespace}" in deployment
    finally:
        testbed.helm("uninstall", release, "--namespace", namespace, check=False)
