"""`swarmops run` as a real process: endpoints up, JSON logs, clean exit on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from swarmops.testbed.cluster import TestBed
from swarmops.testbed.processes import free_port, wait_until


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False


@pytest.mark.e2e
def test_swarmops_run_serves_probes_and_metrics_and_stops_on_sigterm(
    testbed: TestBed, crds_installed: Path, namespace: str, tmp_path: Path
) -> None:
    health, metrics = free_port(), free_port()
    log_path = tmp_path / "operator.log"
    env = {
        **os.environ,
        "SWARMOPS_NAMESPACE": namespace,
        "SWARMOPS_LOG_FORMAT": "json",
        "SWARMOPS_HEALTH_PORT": str(health),
        "KUBECONFIG": "/nonexistent",  # the flag must win over the environment
    }
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "swarmops.cli",
                "run",
                "--kubeconfig",
                str(testbed.kubeconfig),
                "--metrics-port",
                str(metrics),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: (
                http_ok(f"http://127.0.0.1:{health}/healthz")
                and http_ok(f"http://127.0.0.1:{metrics}/readyz")
            ),
            timeout=60,
            what="the operator's probes",
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as response:
            assert b"swarmops_workqueue_depth" in response.read()
    finally:
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=60)
    lines = log_path.read_text().splitlines()
    assert exit_code == 0, "\n".join(lines[-30:])
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = [entry["message"] for entry in entries]
    assert "SwarmOps 0.1.0 started." in messages
    assert "SwarmOps stopped." in messages
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    errors = [entry for entry in entries if entry["level"] in ("ERROR", "CRITICAL")]
    assert errors == []
