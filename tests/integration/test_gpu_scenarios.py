"""The agent's NVML readings through the real pynvml bindings, against the fake
libnvidia-ml.so of the test bed (hack/fake-nvml), driven by scenario files.

No control plane: these run in this process. The fake is loaded by path once, and
pynvml's own CDLL("libnvidia-ml.so.1") then resolves to it; the scenario file is named
by an environment variable the library reads at each call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pynvml
import pytest

from swarmops.gpu.health import (
    CLOCKS_HW_THERMAL,
    AgentMemory,
    Check,
    Level,
    NodeHealth,
    NodeReading,
    Policy,
    Recovery,
    Unsupported,
    XidEvent,
    assess_node,
    record_event,
    record_poll,
)
from swarmops.gpu.nvml import EventThread, NvmlSession
from swarmops.testbed.fakenvml import (
    SCENARIO_ENV,
    FakeMig,
    ScenarioFile,
    ensure_library,
    healthy_node,
    load_in_process,
)

NOW = 1_800_000_000.0
POLICY = Policy()


@pytest.fixture(scope="session")
def fake_nvml() -> Path:
    folder = ensure_library()
    load_in_process(folder)
    return folder


@pytest.fixture
def scenario(fake_nvml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ScenarioFile:
    path = tmp_path / "scenario.json"
    monkeypatch.setenv(SCENARIO_ENV, str(path))
    return ScenarioFile(path)


class Agent:
    """The agent's pipeline without its Kubernetes side: session, events, memory, assess."""

    def __init__(self, expected: int | None = 8, policy: Policy = POLICY) -> None:
        self.session = NvmlSession()
        self.event_set, self.registered = self.session.register_events()
        self.memory = AgentMemory()
        self.reading = NodeReading()
        self.expected = expected
        self.policy = policy
        self.events: list[XidEvent] = []
        self._lock = threading.Lock()
        self._thread = EventThread(
            self.session, self.event_set, self._on_event, lambda _: None, timeout_ms=50
        )
        self._thread.start()

    def _on_event(self, event: XidEvent) -> None:
        with self._lock:
            self.events.append(event)

    def wait_for_events(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.events) >= count:
                    break
            time.sleep(0.01)
        with self._lock:
            assert len(self.events) >= count, f"only {len(self.events)} events arrived"
            for event in self.events:
                self.memory = record_event(self.memory, event)
            self.events.clear()

    def poll(self, now: float | None = None) -> NodeHealth:
        # Events carry the wall-clock time they arrived, so polls use it too.
        now = time.time() if now is None else now
        self.reading = self.session.read(dict(self.registered))
        self.memory = record_poll(self.memory, self.reading, self.policy, now)
        return assess_node(self.reading, self.memory, self.policy, now, self.expected)

    def close(self) -> None:
        self._thread.stop()
        self._thread.join(5)
        self.session.free_events(self.event_set)
        self.session.close()


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        agent.close()


def start(agents: list[Agent], **kwargs: object) -> Agent:
    agent = Agent(**kwargs)  # type: ignore[arg-type]
    agents.append(agent)
    return agent


def test_a_healthy_node_reads_ok_through_pynvml(
    scenario: ScenarioFile, agents: list[Agent]
) -> None:
    scenario.write(healthy_node(8))
    agent = start(agents)
    health = agent.poll()
    assert health.level is Level.OK, health.message
    assert health.message == "8 GPUs healthy"
    assert health.driver_version == "570.133.20"
    gpu = agent.reading.gpus[3]
    assert gpu.uuid.endswith("000000000003")
    assert gpu.temperature_c == 40
    assert gpu.nvlink_active == tuple((link, True) for link in range(18))
    assert agent.registered[gpu.uuid] == 0x8 | 0x2  # XID + double-bit ECC, as supported
    assert health.gpus[0].unmonitored == ()


def test_xid_79_and_a_lost_gpu_are_critical(scenario: ScenarioFile, agents: list[Agent]) -> None:
    node = healthy_node(8)
    scenario.write(node)
    agent = start(agents)
    assert agent.poll().level is Level.OK
    node.gpu(5).lost = True
    node.add_xid(gpu=5, xid=79)
    scenario.write(node)
    agent.wait_for_events(1)
    health = agent.poll()
    assert (health.level, health.reason) == (Level.CRITICAL, "GPUCritical")
    lost = health.gpus[5]
    assert {f.reason for f in lost.faults} == {"Xid79", "GPULost"}
    assert lost.uuid == agent.reading.gpus[5].uuid  # kept from init, though NVML lost it
    assert health.recovery is Recovery.REBOOT
    assert [g.level for g in health.gpus].count(Level.OK) == 7


def test_xid_48_follows_the_table(scenario: ScenarioFile, agents: list[Agent]) -> None:
    node = healthy_node(2)
    node.add_xid(gpu=1, xid=48)
    scenario.write(node)
    agent = start(agents, expected=2)
    agent.wait_for_events(1)
    health = agent.poll()
    assert health.level is Level.CRITICAL
    assert health.gpus[1].faults[0].reason == "Xid48"
    assert health.gpus[1].recovery is Recovery.RESET
    softer = Policy(xids={**POLICY.xids, 48: POLICY.xids[63]})
    agent.policy = softer
    assert agent.poll().level is Level.DEGRADED


def test_application_xids_are_counted_not_held_against_the_gpu(
    scenario: ScenarioFile, agents: list[Agent]
) -> None:
    node = healthy_node(1)
    for xid in (13, 31, 43, 45, 68):
        node.add_xid(gpu=0, xid=xid)
    scenario.write(node)
    agent = start(agents, expected=1)
    agent.wait_for_events(5)
    health = agent.poll()
    assert health.level is Level.OK
    assert sorted(record.xid for record in health.gpus[0].xids) == [13, 31, 43, 45, 68]


def test_a_row_remap_failure_is_critical(scenario: ScenarioFile, agents: list[Agent]) -> None:
    node = healthy_node(4)
    node.gpu(2).remapped_rows_uncorrected = 512
    node.gpu(2).remapped_rows_failure = 1
    node.gpu(3).remapped_rows_pending = 1
    scenario.write(node)
    health = start(agents, expected=4).poll()
    assert health.level is Level.CRITICAL
    assert [f.reason for f in health.gpus[2].faults] == ["RowRemapFailure"]
    assert (health.gpus[3].level, health.gpus[3].faults[0].reason) == (
        Level.DEGRADED,
        "RowRemapPending",
    )


def test_thermal_slowdown_warns_then_degrades(scenario: ScenarioFile, agents: list[Agent]) -> None:
    node = healthy_node(2)
    node.gpu(0).temperature = 84
    scenario.write(node)
    agent = start(agents, expected=2)
    assert agent.poll().level is Level.WARN  # within 5 C of the slowdown threshold (87)
    node.gpu(0).temperature = 89
    node.gpu(0).clocks_event_reasons = CLOCKS_HW_THERMAL
    scenario.write(node)
    levels = [agent.poll(time.time() + i).gpus[0].level for i in range(3)]
    assert levels == [Level.DEGRADED] * 3  # at the threshold: degraded at once
    node.gpu(0).temperature = 60  # cooled, but the clocks stay slowed down
    scenario.write(node)
    agent.memory = AgentMemory()  # a fresh streak
    slowed = [agent.poll(time.time() + i).gpus[0] for i in range(3)]
    assert [g.level for g in slowed] == [Level.WARN, Level.WARN, Level.DEGRADED]
    assert slowed[-1].faults[0].reason == "HardwareSlowdown"


@pytest.mark.parametrize("error", ["not_supported", "function_not_found"])
def test_not_supported_everywhere_is_unmonitored_not_unhealthy(
    scenario: ScenarioFile, agents: list[Agent], error: str
) -> None:
    node = healthy_node(4)
    node.errors = {"*": error}
    scenario.write(node)
    agent = start(agents, expected=4)
    health = agent.poll()
    assert (health.level, health.reason) == (Level.UNMONITORED, "GPUsUnmonitored")
    assert all(not gpu.faults for gpu in health.gpus)
    expected = "NotSupported" if error == "not_supported" else "FunctionNotFound"
    assert agent.registered[health.gpus[0].uuid] == Unsupported(expected)
    assert set(health.gpus[0].unmonitored) >= {Check.EVENTS, Check.TEMPERATURE, Check.ECC}


def test_a_missing_nvml_symbol_is_unsupported(scenario: ScenarioFile, agents: list[Agent]) -> None:
    # The fake has no nvmlDeviceGetCurrentClocksThrottleReasons (the pre-r535 name), so the
    # fallback fails in pynvml itself, as on an old driver: FunctionNotFound.
    node = healthy_node(1)
    node.gpu(0).errors = {"nvmlDeviceGetCurrentClocksEventReasons": "function_not_found"}
    scenario.write(node)
    agent = start(agents, expected=1)
    health = agent.poll()
    assert agent.reading.gpus[0].clock_event_reasons == Unsupported("FunctionNotFound")
    assert health.level is Level.OK
    assert Check.CLOCKS in health.gpus[0].unmonitored


def test_nvml_init_failure(scenario: ScenarioFile) -> None:
    node = healthy_node(8)
    node.init = "driver_not_loaded"
    scenario.write(node)
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
        NvmlSession()
    health = assess_node(NodeReading(nvml_error="DriverNotLoaded"), AgentMemory(), POLICY, NOW, 8)
    assert health.level is Level.UNKNOWN


def test_gpus_missing_from_nvml(scenario: ScenarioFile, agents: list[Agent]) -> None:
    node = healthy_node(8)
    node.device_count = 7
    scenario.write(node)
    health = start(agents, expected=8).poll()
    assert (health.level, health.faults[0].reason) == (Level.CRITICAL, "GPUsMissing")
    assert health.found_gpus == 7


def test_mig_devices_are_attributed_through_their_handles(
    scenario: ScenarioFile, agents: list[Agent]
) -> None:
    node = healthy_node(2)
    # Opaque UUIDs (driver 580): nothing in them says which instance they are.
    node.gpu(1).mig = [
        FakeMig("MIG-7f3a9c1e-0b52-5d8e-9a41-2c6b0e7d4f18", gpu_instance_id=1),
        FakeMig("MIG-c4d2e8f0-6a17-5b3c-8e95-0f1a2b3c4d5e", gpu_instance_id=2),
        FakeMig(
            "MIG-0a1b2c3d-4e5f-5a6b-9c8d-7e6f5a4b3c2d", gpu_instance_id=2, compute_instance_id=1
        ),
    ]
    node.add_xid(gpu=1, xid=95, gpu_instance_id=2, compute_instance_id=1)
    scenario.write(node)
    agent = start(agents, expected=2)
    agent.wait_for_events(1)
    health = agent.poll()
    migs = {m.uuid: m for m in agent.reading.gpus[1].mig}
    assert [(m.gpu_instance_id, m.compute_instance_id) for m in migs.values()] == [
        (1, 0),
        (2, 0),
        (2, 1),
    ]
    gpu = health.gpus[1]
    assert gpu.level is Level.CRITICAL
    assert gpu.faults[0].mig_uuids == ("MIG-0a1b2c3d-4e5f-5a6b-9c8d-7e6f5a4b3c2d",)
    assert [m.level for m in gpu.mig] == [Level.OK, Level.OK, Level.CRITICAL]
    assert health.gpus[0].level is Level.OK


def test_events_that_cannot_be_registered_leave_the_gpu_unmonitored(
    scenario: ScenarioFile, agents: list[Agent]
) -> None:
    node = healthy_node(2)
    node.gpu(0).supported_events = 0x4  # only P-state changes: no XID, no ECC
    scenario.write(node)
    agent = start(agents, expected=2)
    health = agent.poll()
    assert agent.registered[health.gpus[0].uuid] == Unsupported("NoXidEvents")
    assert health.gpus[0].level is Level.UNMONITORED
    assert health.level is Level.UNMONITORED
    assert health.gpus[1].level is Level.OK


def test_an_nvlink_going_down(scenario: ScenarioFile, agents: list[Agent]) -> None:
    node = healthy_node(1)
    scenario.write(node)
    agent = start(agents, expected=1)
    assert agent.poll().level is Level.OK
    node.gpu(0).nvlinks[3] = 0
    scenario.write(node)
    health = agent.poll()
    assert (health.level, health.gpus[0].faults[0].reason) == (Level.CRITICAL, "NvlinkDown")


def test_the_drivers_recovery_action_field(scenario: ScenarioFile, agents: list[Agent]) -> None:
    node = healthy_node(1)
    node.gpu(0).recovery_action = 2  # NODE_REBOOT
    scenario.write(node)
    health = start(agents, expected=1).poll()
    assert (health.level, health.recovery) == (Level.CRITICAL, Recovery.REBOOT)


def test_a_failing_event_wait_is_reported_not_fatal(scenario: ScenarioFile) -> None:
    node = healthy_node(1)
    node.event_wait = "unknown"
    scenario.write(node)
    session = NvmlSession()
    event_set, _ = session.register_events()
    errors: list[str] = []
    thread = EventThread(
        session, event_set, lambda _: None, errors.append, timeout_ms=20, retry_s=0.01
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not errors and time.monotonic() < deadline:
            time.sleep(0.01)
        assert errors and "Unknown" in errors[0]
        assert thread.is_alive()
    finally:
        thread.stop()
        thread.join(5)
        session.free_events(event_set)
        session.close()


def test_unexpected_errors_are_unknown(scenario: ScenarioFile, agents: list[Agent]) -> None:
    node = healthy_node(1)
    node.gpu(0).errors = {"nvmlDeviceGetTemperature": "unknown"}
    scenario.write(node)
    health = start(agents, expected=1).poll()
    assert agent_reading_error(health) == "temperature could not be read: Unknown"
    assert health.gpus[0].level is Level.UNKNOWN


def agent_reading_error(health: NodeHealth) -> str:
    return health.gpus[0].faults[0].message
