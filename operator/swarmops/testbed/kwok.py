"""kwok, simulating the test bed's CPU and GPU nodes and their pods' lifecycle."""

from __future__ import annotations

import urllib.request
from importlib import resources
from pathlib import Path

import yaml

from swarmops.testbed.nodes import KWOK_ANNOTATION
from swarmops.testbed.processes import ManagedProcess, free_port, wait_until

# Pod IPs for simulated pods; a /16 so thousand-pod benchmarks do not run out.
POD_CIDR = "10.244.0.1/16"


def stages_yaml() -> str:
    return resources.files("swarmops.testbed").joinpath("kwok-stages.yaml").read_text()


def start_kwok(bin_dir: Path, kubeconfig: Path, state_dir: Path, log_dir: Path) -> ManagedProcess:
    server_port = free_port()
    configuration = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokConfiguration",
        "options": {
            "cidr": POD_CIDR,
            "nodeIP": "10.0.0.1",
            "manageAllNodes": False,
            "manageNodesWithAnnotationSelector": f"{KWOK_ANNOTATION}=fake",
            "serverAddress": f"127.0.0.1:{server_port}",
            "nodeLeaseDurationSeconds": 40,
            # Play pod stages with more workers than the default so a 1,000-pod
            # fill is not queued behind kwok.
            "podPlayStageParallelism": 16,
            "nodePlayStageParallelism": 4,
            # A configuration file skips kwok's defaulting, so these must be given.
            "nodeLeaseParallelism": 4,
            "podsOnNodeSyncParallelism": 2,
            "enablePodsOnNodeSyncListPager": True,
            "enablePodsOnNodeSyncStreamWatch": True,
        },
    }
    config_path = state_dir / "kwok.yaml"
    config_path.write_text(yaml.safe_dump(configuration) + "---\n" + stages_yaml())
    kwok = ManagedProcess(
        "kwok",
        [str(bin_dir / "kwok"), f"--kubeconfig={kubeconfig}", f"--config={config_path}"],
        log_dir,
    )
    kwok.start()
    wait_until(
        lambda: _healthy(server_port),
        timeout=60,
        what="kwok to be healthy",
        watched=[kwok],
    )
    return kwok


def _healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
        return bool(response.status == 200)
