"""Probes: when each is due and what its results mean (`ProbeTracker`, pure), and
how one is carried out against a local process (`run_probe`, I/O).

Timing follows the probe's spec (initialDelaySeconds, periodSeconds,
timeoutSeconds, success/failureThreshold), with one deliberate difference: until
a readiness or startup probe has first succeeded, and for at most
`FAST_WINDOW_SECONDS` after its first run, it is retried every `FAST_INTERVAL`
seconds rather than every periodSeconds, so a pod turns Ready within a fraction
of a second of its process listening (the window keeps a probe that stays red,
say a Redis node waiting to join its cluster, from forking ten exec probes a
second forever). Failures in fast mode change nothing for readiness (the
container is not ready yet either way); a startup probe still counts them
against failureThreshold once per period.

A container without a readiness probe gets an implicit one: a TCP connect to its
first declared TCP port, or none at all (ready while running) when it declares
no port. A real kubelet would call it ready as soon as it runs; the check lets
tests wait for Ready and know the server is accepting connections.
"""

from __future__ import annotations

import enum
import http.client
import socket
import ssl
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from swarmops.testbed.procnode.model import (
    Container,
    ExecAction,
    GRPCAction,
    HTTPGetAction,
    Probe,
    ProbeAction,
    TCPSocketAction,
)

FAST_INTERVAL = 0.1
FAST_WINDOW_SECONDS = 5.0
IMPLICIT_PERIOD_SECONDS = 2
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", ""})
_MESSAGE_LIMIT = 1024


class ProbeKind(enum.Enum):
    STARTUP = "Startup"
    READINESS = "Readiness"
    LIVENESS = "Liveness"


def implicit_readiness_probe(container: Container) -> Probe | None:
    if container.readiness_probe is not None:
        return container.readiness_probe
    tcp_ports = [p for p in container.ports if p.protocol.upper() == "TCP" and p.container_port]
    if not tcp_ports:
        return None
    return Probe(
        TCPSocketAction(tcp_ports[0].container_port),
        period_seconds=IMPLICIT_PERIOD_SECONDS,
        failure_threshold=3,
    )


class ProbeTracker:
    """Thresholds and schedule of one probe of one container run (pure state)."""

    def __init__(self, probe: Probe, kind: ProbeKind, armed_at: float) -> None:
        self.probe = probe
        self.kind = kind
        # Liveness starts "alive"; readiness and startup start "not yet".
        self.result = kind is ProbeKind.LIVENESS
        self.ever_succeeded = False
        self.successes = 0
        self.failures = 0
        self.next_due = armed_at + probe.initial_delay_seconds
        self._fast_until = self.next_due + FAST_WINDOW_SECONDS
        self.last_message = ""
        self._last_counted: float | None = None

    def due(self, now: float) -> bool:
        return now >= self.next_due

    def _fast(self, now: float) -> bool:
        return (
            self.kind is not ProbeKind.LIVENESS
            and not self.ever_succeeded
            and now < self._fast_until
        )

    def record(self, ok: bool, now: float, message: str = "") -> bool:
        """Count one outcome; True when the probe's verdict changed."""
        before = self.result
        self.last_message = message
        if ok:
            self.successes += 1
            self.failures = 0
            threshold = 1 if self.kind is ProbeKind.STARTUP else self.probe.success_threshold
            if self.successes >= threshold:
                self.result = True
                self.ever_succeeded = True
        else:
            self.successes = 0
            if self._counts_failure(now):
                self.failures += 1
                if self.failures >= self.probe.failure_threshold and self.kind is not (
                    ProbeKind.STARTUP
                ):
                    self.result = False
        period = float(self.probe.period_seconds)
        self.next_due = now + (min(period, FAST_INTERVAL) if self._fast(now) else period)
        return self.result != before

    def _counts_failure(self, now: float) -> bool:
        if not self._fast(now):
            return True
        if self.kind is ProbeKind.READINESS:
            # Not ready before the first success either way: nothing to count.
            return False
        # A startup probe retried fast still fails at most once per period.
        if self._last_counted is None or now - self._last_counted >= self.probe.period_seconds:
            self._last_counted = now
            return True
        return False

    @property
    def exhausted(self) -> bool:
        """A liveness or startup probe that failed failureThreshold times in a row:
        the container must be restarted."""
        if self.kind is ProbeKind.LIVENESS:
            return not self.result
        if self.kind is ProbeKind.STARTUP:
            return not self.ever_succeeded and self.failures >= self.probe.failure_threshold
        return False


@dataclass(frozen=True)
class ProbeOutcome:
    ok: bool
    message: str = ""


def _target_host(host: str | None, pod_ip: str) -> str:
    # Loopback inside a pod is the pod's own network namespace: here, its IP.
    return pod_ip if host is None or host in LOOPBACK_HOSTS else host


def _tcp(
    action: TCPSocketAction, container: Container, pod_ip: str, timeout: float
) -> ProbeOutcome:
    port = container.port_number(action.port)
    if port is None:
        return ProbeOutcome(False, f"unknown port {action.port!r}")
    host = _target_host(action.host, pod_ip)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return ProbeOutcome(True)
    except OSError as error:
        return ProbeOutcome(False, f"dial tcp {host}:{port}: {error}")


def _http(action: HTTPGetAction, container: Container, pod_ip: str, timeout: float) -> ProbeOutcome:
    port = container.port_number(action.port)
    if port is None:
        return ProbeOutcome(False, f"unknown port {action.port!r}")
    host = _target_host(action.host, pod_ip)
    connection: http.client.HTTPConnection
    if action.scheme == "HTTPS":
        # The kubelet does not verify a probe's certificate either.
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=insecure)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"User-Agent": "kube-probe/procnode", "Accept": "*/*", **dict(action.headers)}
        connection.request("GET", action.path, headers=headers)
        response = connection.getresponse()
        response.read(_MESSAGE_LIMIT)
        if 200 <= response.status < 400:
            return ProbeOutcome(True)
        return ProbeOutcome(False, f"HTTP probe failed with statuscode: {response.status}")
    except (OSError, http.client.HTTPException) as error:
        return ProbeOutcome(
            False, f'Get "{action.scheme.lower()}://{host}:{port}{action.path}": {error}'
        )
    finally:
        connection.close()


def run_exec(
    argv: tuple[str, ...], env: Mapping[str, str], cwd: str, timeout: float
) -> ProbeOutcome:
    try:
        completed = subprocess.run(
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ProbeOutcome(False, f"command timed out after {timeout:g}s")
    except OSError as error:
        return ProbeOutcome(False, str(error))
    output = (completed.stdout + completed.stderr).decode(errors="replace")[:_MESSAGE_LIMIT]
    return ProbeOutcome(completed.returncode == 0, output.strip())


def run_network_probe(
    action: ProbeAction, container: Container, pod_ip: str, timeout: float
) -> ProbeOutcome:
    """A tcpSocket or httpGet probe; exec probes go through `run_exec` with their
    command already planned (see `launch.plan_exec_probe`)."""
    if isinstance(action, TCPSocketAction):
        return _tcp(action, container, pod_ip, timeout)
    if isinstance(action, HTTPGetAction):
        return _http(action, container, pod_ip, timeout)
    if isinstance(action, GRPCAction):
        return ProbeOutcome(False, "grpc probes are not supported on the process node")
    assert isinstance(action, ExecAction)
    raise TypeError("exec probes run through run_exec")
