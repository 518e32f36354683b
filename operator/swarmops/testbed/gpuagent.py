"""`swarmops gpu-agent` as a real process on the test bed: one per simulated GPU node,
each with the fake NVML library and a scenario file of its own (for the end-to-end tests
and bench/gpu.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from swarmops.gpu.report import CONDITION_TYPE, REPORT_ANNOTATION
from swarmops.testbed import fakenvml
from swarmops.testbed.processes import free_port


class AgentProcess:
    """One agent for `node`, reading the scenario in `state_dir/scenario.json`."""

    def __init__(
        self,
        kubeconfig: Path,
        node: str,
        state_dir: Path,
        scenario: fakenvml.Scenario | None,
        *,
        library_dir: Path | None,
        poll_interval: float = 1.0,
        heartbeat_interval: float = 2.0,
        extra_args: tuple[str, ...] = (),
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.node = node
        state_dir.mkdir(parents=True, exist_ok=True)
        self.scenario = fakenvml.ScenarioFile(state_dir / "scenario.json")
        if scenario is not None:
            self.scenario.write(scenario)
        self.log_path = state_dir / "agent.log"
        self.metrics_port = free_port()
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("LD_LIBRARY_PATH", fakenvml.SCENARIO_ENV)
        }
        if library_dir is not None:  # None: no NVML library at all, as on a node without a driver
            env.update(fakenvml.env(library_dir, self.scenario.path))
        env.update(
            {
                "NODE_NAME": node,
                "SWARMOPS_POLL_INTERVAL": str(poll_interval),
                "SWARMOPS_HEARTBEAT_INTERVAL": str(heartbeat_interval),
                "SWARMOPS_METRICS_PORT": str(self.metrics_port),
                **(extra_env or {}),
            }
        )
        argv = [sys.executable, "-m", "swarmops", "gpu-agent", f"--kubeconfig={kubeconfig}"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*argv, *extra_args], env=env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return int(self.process.returncode)


def read_node(core: Any, node: str) -> dict[str, Any]:
    """The node as plain JSON (the kubernetes client's models, serialised)."""
    body: dict[str, Any] = core.api_client.sanitize_for_serialization(core.read_node(node))
    return body


def published(node: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The agent's condition and parsed report on `node`, or None for each that is absent."""
    condition = next(
        (
            c
            for c in (node.get("status") or {}).get("conditions") or []
            if c.get("type") == CONDITION_TYPE
        ),
        None,
    )
    raw = ((node.get("metadata") or {}).get("annotations") or {}).get(REPORT_ANNOTATION)
    report = None
    if raw:
        with contextlib.suppress(ValueError):
            report = json.loads(raw)
    return condition, report


def clear_node(core: Any, node: str) -> None:
    """Remove what an agent published on `node` (its condition and annotation)."""
    core.patch_node(
        node,
        {"metadata": {"annotations": {REPORT_ANNOTATION: None}}},
        _content_type="application/merge-patch+json",
    )
    core.patch_node_status(
        node,
        {"status": {"conditions": [{"type": CONDITION_TYPE, "$patch": "delete"}]}},
        _content_type="application/strategic-merge-patch+json",
    )
