"""End-to-end fixtures on top of the test bed: the operator, running in-process.

`operator` runs the real operator (`swarmops.runtime.run_operator`, the same code as
`swarmops run`) in a background thread with its own event loop, scoped to the test's
namespace and talking to the test bed's apiserver. It waits until the operator is
ready, captures its logs (attached to the report of a failing test) and stops it
cleanly at the end; a test may also stop it early.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from swarmops.runtime import OperatorThread, build_services
from swarmops.settings import Settings
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.processes import free_port, wait_until

# Loggers whose records the operator fixture keeps, and the level it needs from them.
CAPTURED_LOGGERS = {"swarmops": logging.DEBUG, "kopf": logging.INFO, "aiohttp": logging.WARNING}
OPERATOR_LOG = pytest.StashKey["LogCapture"]()
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class LogCapture(logging.Handler):
    """Keeps formatted log lines in memory, for a failing test's report."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(threadName)s %(name)s: %(message)s")
        )
        self.lines: list[str] = []
        self._lock_lines = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        with self._lock_lines:
            self.lines.append(line)

    def text(self) -> str:
        with self._lock_lines:
            return "\n".join(self.lines)


class RunningOperator(OperatorThread):
    """The operator of a test, with its endpoints at hand."""

    @property
    def health_url(self) -> str:
        return f"http://{self.settings.bind_address}:{self.settings.health_port}/healthz"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.settings.bind_address}:{self.settings.metrics_port}/metrics"

    @property
    def ready_url(self) -> str:
        return f"http://{self.settings.bind_address}:{self.settings.metrics_port}/readyz"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        super().start(timeout)
        wait_until(
            lambda: http_status(self.ready_url) == 200 and http_status(self.health_url) == 200,
            timeout=timeout,
            what="the operator's readiness and liveness endpoints",
        )

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return str(response.read().decode())

    def health(self) -> dict[str, object]:
        with urllib.request.urlopen(self.health_url, timeout=5) as response:
            result: dict[str, object] = json.loads(response.read())
            return result


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None


@pytest.fixture
def operator_factory(
    testbed: TestBed, crds_installed: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., RunningOperator]]:
    """Start operators (scoped as asked) whose logs go to the test's report; all stop at the end."""
    kubeconfig = testbed.kubeconfig
    capture = LogCapture()
    request.node.stash[OPERATOR_LOG] = capture
    saved_levels = {}
    for name, level in CAPTURED_LOGGERS.items():
        logger = logging.getLogger(name)
        saved_levels[name] = logger.level
        logger.setLevel(min(level, logger.getEffectiveLevel()))
        logger.addHandler(capture)
    started: list[RunningOperator] = []

    def start(*namespaces: str, **overrides: Any) -> RunningOperator:
        values: dict[str, Any] = {
            "namespaces": namespaces,
            "all_namespaces": not namespaces,
            "kubeconfig": kubeconfig,
            "bind_address": "127.0.0.1",
            "health_port": free_port(),
            "metrics_port": free_port(),
            "resync_interval": 30.0,
        }
        settings = Settings(**(values | overrides))
        running = RunningOperator(settings, build_services(settings, environ={}))
        started.append(running)
        running.start()
        return running

    try:
        yield start
    finally:
        errors: list[BaseException] = []
        for running in started:
            try:
                running.stop(STOP_TIMEOUT)
            except (RuntimeError, TimeoutError) as error:
                errors.append(error)
        for name in CAPTURED_LOGGERS:
            logging.getLogger(name).removeHandler(capture)
            logging.getLogger(name).setLevel(saved_levels[name])
        if errors:
            raise errors[0]


@pytest.fixture
def operator_log(
    operator_factory: Callable[..., RunningOperator], request: pytest.FixtureRequest
) -> Callable[[], str]:
    """What the test's operators logged so far."""
    capture: LogCapture = request.node.stash[OPERATOR_LOG]
    return capture.text


@pytest.fixture
def operator(operator_factory: Callable[..., RunningOperator], namespace: str) -> RunningOperator:
    """The operator, watching only this test's namespace."""
    return operator_factory(namespace)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    capture = item.stash.get(OPERATOR_LOG, None)
    if capture is not None and report.failed:
        report.sections.append(("operator log", capture.text() or "(nothing logged)"))
    return report
