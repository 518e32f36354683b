"""Fixtures shared by every test: the test bed (a real control plane on loopback,
started once per session and only when a test asks for it) and a fresh namespace
per test."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from swarmops.testbed.binaries import repository_root
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.prometheus import Prometheus

REPO_ROOT = repository_root()


@pytest.fixture(scope="session")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBed]:
    bed = TestBed(tmp_path_factory.mktemp("testbed"))
    bed.start()
    try:
        yield bed
    finally:
        bed.stop()


@pytest.fixture(scope="session")
def crds_installed(testbed: TestBed) -> Path:
    """The generated CRDs from crds/, applied and Established."""
    crd_dir = REPO_ROOT / "crds"
    testbed.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd_dir))
    testbed.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(crd_dir))
    return crd_dir


@pytest.fixture(scope="session")
def prometheus_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    bed = Prometheus(tmp_path_factory.mktemp("prometheus"))
    try:
        bed.start()
        yield bed
    finally:
        bed.close()


@pytest.fixture
def prometheus(prometheus_session: Prometheus) -> Prometheus:
    """A real Prometheus scraping a metrics source this test controls (`.source.set`);
    running, with nothing set, at the start of every test."""
    prometheus_session.reset()
    return prometheus_session


@pytest.fixture
def namespace(testbed: TestBed, request: pytest.FixtureRequest) -> Iterator[str]:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{secrets.token_hex(3)}"
    testbed.namespace_ready(name)
    yield name
    with testbed.api_client() as api_client:
        # Not waited for: the namespace controller finishes it in the background.
        client.CoreV1Api(api_client).delete_namespace(name, propagation_policy="Background")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    # A failing end-to-end test says where the control plane's logs are.
    bed = item.funcargs.get("testbed") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(bed, TestBed):
        report.sections.append(("test bed", f"state and logs: {bed.state_dir}"))
    return report
