"""The fake NVML library of the test bed, and the scenario files that drive it.

`hack/build-fake-nvml.sh` builds `libnvidia-ml.so.1` from hack/fake-nvml/fake_nvml.c
(cached, like the control plane's binaries). The real pynvml bindings load it:

* in a child process, through `LD_LIBRARY_PATH` (`FakeNvml.env()`);
* in this process, by `load_in_process()`: once the library is loaded by its path, the
  dynamic loader answers pynvml's CDLL("libnvidia-ml.so.1") with it (a loaded object
  matches by soname). Nothing in pynvml is patched.

What each NVML call answers comes from the JSON scenario file named by
`SWARMOPS_FAKE_NVML_SCENARIO`, re-read whenever it changes; `ScenarioFile.write`
replaces it atomically, so an agent that is running sees the new scenario on its next
call. The fields are documented in docs/gpu.md ("The fake NVML").
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from swarmops.testbed.binaries import repository_root

SCENARIO_ENV = "SWARMOPS_FAKE_NVML_SCENARIO"
LIBRARY = "libnvidia-ml.so.1"

# Event types and clock reasons, as NVML numbers them (see swarmops.gpu.health).
XID_EVENT = 0x8
DOUBLE_BIT_ECC_EVENT = 0x2


def ensure_library() -> Path:
    """The folder holding the fake libnvidia-ml.so.1, built first if need be.

    SWARMOPS_FAKE_NVML_DIR points at a ready folder instead."""
    override = os.environ.get("SWARMOPS_FAKE_NVML_DIR")
    if override:
        folder = Path(override)
    else:
        script = repository_root() / "hack" / "build-fake-nvml.sh"
        result = subprocess.run(
            ["bash", str(script)], check=True, stdout=subprocess.PIPE, text=True
        )
        folder = Path(result.stdout.strip().splitlines()[-1])
    if not (folder / LIBRARY).is_file():
        raise RuntimeError(f"{LIBRARY} missing from {folder}")
    return folder


@dataclass
class FakeMig:
    uuid: str
    gpu_instance_id: int
    compute_instance_id: int = 0


@dataclass
class FakeGpu:
    """One GPU's answers; every field maps to the scenario key of the same name."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    temperature: int = 40
    slowdown_temperature: int = 87
    shutdown_temperature: int = 92
    ecc_uncorrected_volatile: int = 0
    remapped_rows_corrected: int = 0
    remapped_rows_uncorrected: int = 0
    remapped_rows_pending: int = 0
    remapped_rows_failure: int = 0
    retired_pages_pending: int = 0
    clocks_event_reasons: int = 0
    pcie_width: int = 16
    pcie_max_width: int = 16
    nvlinks: list[int] = field(default_factory=list)
    recovery_action: int = 0
    supported_events: int = XID_EVENT | DOUBLE_BIT_ECC_EVENT | 0x1
    lost: bool = False
    #: NVML function name (or "*": every health call) -> an error name or code.
    errors: dict[str, str | int] = field(default_factory=dict)
    mig: list[FakeMig] | None = None


@dataclass
class FakeEvent:
    id: int
    gpu: int
    data: int  # the XID
    type: int = XID_EVENT
    gpu_instance_id: int = 0xFFFFFFFF
    compute_instance_id: int = 0xFFFFFFFF


@dataclass
class Scenario:
    devices: list[FakeGpu] = field(default_factory=list)
    init: str | int = "ok"  # e.g. "driver_not_loaded": nvmlInit fails with it
    event_wait: str | int = "ok"  # an error every nvmlEventSetWait returns
    driver_version: str = "570.133.20"
    device_count: int = -1  # < 0: as many as devices; else fewer are visible
    errors: dict[str, str | int] = field(default_factory=dict)  # for every GPU
    events: list[FakeEvent] = field(default_factory=list)

    def to_json(self) -> str:
        body: dict[str, Any] = asdict(self)
        for device in body["devices"]:
            if device["mig"] is None:
                del device["mig"]
        return json.dumps(body, indent=1)

    def gpu(self, index: int) -> FakeGpu:
        return self.devices[index]

    def add_xid(self, gpu: int, xid: int, **extra: int) -> FakeEvent:
        event = FakeEvent(id=len(self.events) + 1, gpu=gpu, data=xid, **extra)
        self.events.append(event)
        return event


def healthy_node(count: int = 8, *, prefix: str = "GPU-5a1e0000-0000-4000-8000") -> Scenario:
    """A node of `count` healthy H100s with NVLink, UUIDs ending in their index."""
    return Scenario(
        devices=[FakeGpu(uuid=f"{prefix}-{i:012d}", nvlinks=[1] * 18) for i in range(count)]
    )


class ScenarioFile:
    """The scenario file a fake NVML reads; `write` swaps it atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, scenario: Scenario) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(scenario.to_json(), encoding="utf-8")
        os.replace(partial, self.path)


def env(library_dir: Path, scenario: Path) -> dict[str, str]:
    """The variables a child process needs to load the fake through pynvml."""
    existing = os.environ.get("LD_LIBRARY_PATH", "")
    return {
        "LD_LIBRARY_PATH": f"{library_dir}{os.pathsep}{existing}" if existing else str(library_dir),
        SCENARIO_ENV: str(scenario),
    }


_loaded: ctypes.CDLL | None = None


def load_in_process(library_dir: Path) -> None:
    """Load the fake into this process, so pynvml's CDLL("libnvidia-ml.so.1") gets it.

    Must run before pynvml first loads a library (it keeps the first one for good)."""
    global _loaded  # noqa: PLW0603 - one library per process, by the loader's own rules
    if _loaded is None:
        _loaded = ctypes.CDLL(str(library_dir / LIBRARY))
