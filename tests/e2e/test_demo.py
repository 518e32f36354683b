"""The README's main job, `swarmops demo`, end to end: its own test bed, the CRDs,
the operator as a real process, the examples applied and reconciled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.e2e
def test_demo_brings_up_the_examples_and_tears_down(tmp_path: Path) -> None:
    state_dir = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "swarmops",
            "demo",
            "--once",
            "--settle-seconds=8",
            f"--state-dir={state_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "agentpool.swarmops.dev/coder created" in output
    # The `kubectl get swarmops -A` row: NAMESPACE NAME DESIRED READY WARM ...
    pool_line = next(
        line
        for line in output.splitlines()
        if line.startswith("swarmops-demo") and "agentpool.swarmops.dev/coder" in line
    )
    desired, ready = pool_line.split()[2:4]
    assert desired == ready == "2", pool_line
    # The example swarm came up around its own Redis (real redis-server processes on the
    # process node) with its three pools; their order is test_swarm.py's to prove.
    assert "swarm/research Ready after" in output, output
    swarm_line = next(
        line
        for line in output.splitlines()
        if line.startswith("swarmops-demo") and "swarm.swarmops.dev/research" in line
    )
    ready_pools, total_pools, phase = swarm_line.split()[2:5]
    assert (ready_pools, total_pools, phase) == ("3", "3", "Ready"), swarm_line
    for pool in ("planner", "workers", "reviewer"):
        assert any(
            "PoolStarting" in line and f"pool {pool} (" in line for line in output.splitlines()
        ), output
    assert "tearing down" in output
    # Nothing the demo started outlives it.
    leftovers = [pid.name for pid in (state_dir / "logs").glob("*.pid")]
    assert leftovers == []
