"""Where the test bed's binaries come from: hack/build-testbed.sh builds them from
the pinned Go modules into a cache keyed by the pins; this finds (or builds) them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REQUIRED = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)


def repository_root() -> Path:
    # operator/swarmops/testbed/binaries.py -> the repository holding hack/.
    return Path(__file__).resolve().parents[3]


def ensure_binaries() -> Path:
    """The folder holding every binary in REQUIRED, built first if need be.

    SWARMOPS_TESTBED_BIN points at a ready folder instead (e.g. a prebuilt cache)."""
    override = os.environ.get("SWARMOPS_TESTBED_BIN")
    if override:
        bin_dir = Path(override)
    else:
        script = repository_root() / "hack" / "build-testbed.sh"
        if not script.is_file():
            raise RuntimeError(
                f"{script} not found: run from a checkout, or set SWARMOPS_TESTBED_BIN"
            )
        result = subprocess.run(
            ["bash", str(script)], check=True, stdout=subprocess.PIPE, text=True
        )
        bin_dir = Path(result.stdout.strip().splitlines()[-1])
    missing = [name for name in REQUIRED if not (bin_dir / name).is_file()]
    if missing:
        raise RuntimeError(f"test bed binaries missing from {bin_dir}: {', '.join(missing)}")
    return bin_dir
