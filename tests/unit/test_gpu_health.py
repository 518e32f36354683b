"""GPU health classification: readings and XIDs in, levels and faults out (pure, no NVML)."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmops.gpu.health import (
    CLOCKS_HW_THERMAL,
    CLOCKS_SW_POWER_CAP,
    CLOCKS_SW_THERMAL,
    DEFAULT_XIDS,
    NO_INSTANCE,
    AgentMemory,
    Check,
    Failed,
    GpuMemory,
    GpuReading,
    Level,
    MigReading,
    NodeReading,
    Policy,
    Recovery,
    RemappedRows,
    Unsupported,
    XidEvent,
    XidRecord,
    XidRule,
    assess_gpu,
    assess_node,
    attribute_mig,
    forget_expired,
    on_boot,
    parse_xid_overrides,
    record_event,
    record_poll,
    worst,
)

POLICY = Policy()
NOW = 1_800_000_000.0
UUID = "GPU-0"


def healthy(index: int = 0, **overrides: Any) -> GpuReading:
    values: dict[str, Any] = {
        "index": index,
        "uuid": f"GPU-{index}",
        "name": "NVIDIA H100 80GB HBM3",
        "temperature_c": 40,
        "slowdown_c": 87,
        "shutdown_c": 92,
        "ecc_uncorrected_volatile": 0,
        "remapped_rows": RemappedRows(0, 0, pending=False, failure=False),
        "retired_pages_pending": Unsupported(),
        "clock_event_reasons": 0,
        "pcie_width": 16,
        "pcie_max_width": 16,
        "nvlink_active": tuple((link, True) for link in range(18)),
        "recovery_action": 0,
        "events": 0x8 | 0x2,
    }
    return GpuReading(**(values | overrides))


READING_FIELDS = [
    f.name for f in fields(GpuReading) if f.name not in ("index", "uuid", "name", "lost", "mig")
]


def gpu_level(reading: GpuReading, memory: GpuMemory | None = None, now: float = NOW) -> Level:
    return assess_gpu(reading, memory or GpuMemory(), POLICY, now).level


def with_xid(xid: int, at: float = NOW, **extra: Any) -> GpuMemory:
    memory = record_event(AgentMemory(), XidEvent(gpu_uuid=UUID, xid=xid, at=at, **extra))
    return memory.of(UUID)


# --- levels --------------------------------------------------------------------------------


def test_levels_order_by_what_the_operator_does_about_them() -> None:
    order = [Level.OK, Level.UNMONITORED, Level.WARN, Level.UNKNOWN, Level.DEGRADED]
    assert sorted(Level, key=lambda level: level.rank) == [*order, Level.CRITICAL]
    assert worst([]) is Level.OK
    assert worst([Level.WARN, Level.CRITICAL, Level.UNKNOWN]) is Level.CRITICAL


def test_a_healthy_gpu_is_ok() -> None:
    health = assess_gpu(healthy(), GpuMemory(), POLICY, NOW)
    assert health.level is Level.OK
    assert health.faults == ()
    # Page retirement is Unsupported on Ampere and later (row remapping replaced it).
    assert health.unmonitored == (Check.RETIRED_PAGES,)


# --- NotSupported is never unhealthy ----------------------------------------------------------


@given(
    st.sets(st.sampled_from(READING_FIELDS)), st.sampled_from(["NotSupported", "FunctionNotFound"])
)
def test_unsupported_checks_never_make_a_gpu_unhealthy(unsupported: set[str], error: str) -> None:
    reading = replace(healthy(), **{name: Unsupported(error) for name in unsupported})
    assert gpu_level(reading) in (Level.OK, Level.UNMONITORED)


def test_nothing_supported_is_unmonitored_not_unhealthy() -> None:
    reading = replace(healthy(), **{name: Unsupported("NotSupported") for name in READING_FIELDS})
    health = assess_gpu(reading, GpuMemory(), POLICY, NOW)
    assert health.level is Level.UNMONITORED
    assert health.faults == ()
    assert Check.EVENTS in health.unmonitored


def test_without_xid_events_a_gpu_is_unmonitored_even_when_polls_pass() -> None:
    assert gpu_level(healthy(events=Unsupported("NoXidEvents"))) is Level.UNMONITORED


def test_one_polled_check_unsupported_is_still_ok() -> None:
    assert gpu_level(healthy(nvlink_active=Unsupported())) is Level.OK


@given(
    st.sampled_from(READING_FIELDS),
    st.sampled_from(["NotSupported", "FunctionNotFound"]),
    st.integers(0, 0xFFFF),
    st.integers(20, 120),
)
def test_unsupported_never_makes_a_level_worse(
    name: str, error: str, reasons: int, temperature: int
) -> None:
    base = healthy(clock_event_reasons=reasons, temperature_c=temperature)
    before = gpu_level(base)
    after = gpu_level(replace(base, **{name: Unsupported(error)}))
    assert after.rank <= max(before.rank, Level.UNMONITORED.rank)


def test_a_check_that_fails_otherwise_is_unknown() -> None:
    health = assess_gpu(healthy(temperature_c=Failed("Unknown")), GpuMemory(), POLICY, NOW)
    assert health.level is Level.UNKNOWN
    assert [f.reason for f in health.faults] == ["CheckFailed"]


def test_a_field_left_unread_is_unknown_never_healthy() -> None:
    assert gpu_level(GpuReading(index=0, uuid=UUID)) is Level.UNKNOWN


# --- polled faults ------------------------------------------------------------------------------


def test_a_lost_gpu_is_critical_and_needs_a_reboot() -> None:
    health = assess_gpu(GpuReading(index=3, uuid=UUID, lost=True), GpuMemory(), POLICY, NOW)
    assert health.level is Level.CRITICAL
    assert health.recovery is Recovery.REBOOT
    assert [f.reason for f in health.faults] == ["GPULost"]


@pytest.mark.parametrize(
    ("rows", "level", "reason", "recovery"),
    [
        (
            RemappedRows(0, 2, pending=True, failure=False),
            Level.DEGRADED,
            "RowRemapPending",
            Recovery.RESET,
        ),
        (
            RemappedRows(0, 512, pending=False, failure=True),
            Level.CRITICAL,
            "RowRemapFailure",
            Recovery.REBOOT,
        ),
        (RemappedRows(3, 1, pending=False, failure=False), Level.OK, None, Recovery.NONE),
    ],
)
def test_remapped_rows(
    rows: RemappedRows, level: Level, reason: str | None, recovery: Recovery
) -> None:
    health = assess_gpu(healthy(remapped_rows=rows), GpuMemory(), POLICY, NOW)
    assert health.level is level
    assert [f.reason for f in health.faults] == ([reason] if reason else [])
    assert health.recovery is recovery


def test_uncorrected_ecc_is_critical_before_ampere_and_degraded_after() -> None:
    ampere = healthy(ecc_uncorrected_volatile=2)
    volta = healthy(
        ecc_uncorrected_volatile=2, remapped_rows=Unsupported(), retired_pages_pending=False
    )
    assert gpu_level(ampere) is Level.DEGRADED
    assert gpu_level(volta) is Level.CRITICAL
    assert assess_gpu(volta, GpuMemory(), POLICY, NOW).recovery is Recovery.RESET


def test_retired_pages_pending_is_degraded() -> None:
    reading = healthy(remapped_rows=Unsupported(), retired_pages_pending=True)
    health = assess_gpu(reading, GpuMemory(), POLICY, NOW)
    assert (health.level, health.recovery) == (Level.DEGRADED, Recovery.RESET)


@pytest.mark.parametrize(
    ("temperature", "level"),
    [
        (40, Level.OK),
        (81, Level.OK),
        (82, Level.WARN),
        (86, Level.WARN),
        (87, Level.DEGRADED),
        (92, Level.CRITICAL),
    ],
)
def test_temperature_against_the_slowdown_threshold(temperature: int, level: Level) -> None:
    assert gpu_level(healthy(temperature_c=temperature)) is level


@given(st.integers(0, 130), st.integers(0, 130))
def test_a_hotter_gpu_is_never_healthier(cooler: int, hotter: int) -> None:
    cooler, hotter = min(cooler, hotter), max(cooler, hotter)
    assert (
        gpu_level(healthy(temperature_c=cooler)).rank
        <= gpu_level(healthy(temperature_c=hotter)).rank
    )


def test_hardware_slowdown_is_a_warning_until_it_is_sustained() -> None:
    reading = NodeReading(gpus=(healthy(clock_event_reasons=CLOCKS_HW_THERMAL),))
    memory = AgentMemory()
    levels = []
    for poll in range(4):
        memory = record_poll(memory, reading, POLICY, NOW + poll)
        levels.append(assess_gpu(reading.gpus[0], memory.of(UUID), POLICY, NOW + poll).level)
    assert levels == [Level.WARN, Level.WARN, Level.DEGRADED, Level.DEGRADED]
    # One clean poll resets the streak.
    memory = record_poll(memory, NodeReading(gpus=(healthy(),)), POLICY, NOW + 5)
    assert memory.of(UUID).slowdown_streak == 0


def test_software_thermal_slowdown_warns_and_a_power_cap_is_normal() -> None:
    assert gpu_level(healthy(clock_event_reasons=CLOCKS_SW_THERMAL)) is Level.WARN
    assert gpu_level(healthy(clock_event_reasons=CLOCKS_SW_POWER_CAP)) is Level.OK


def test_a_narrow_pcie_link_is_degraded() -> None:
    assert gpu_level(healthy(pcie_width=8)) is Level.DEGRADED


def test_an_nvlink_that_goes_down_is_critical_one_never_up_is_not() -> None:
    up = healthy(nvlink_active=((0, True), (1, True), (2, False)))
    memory = record_poll(AgentMemory(), NodeReading(gpus=(up,)), POLICY, NOW)
    assert gpu_level(up, memory.of(UUID)) is Level.OK  # link 2 was never active
    down = healthy(nvlink_active=((0, True), (1, False), (2, False)))
    health = assess_gpu(down, memory.of(UUID), POLICY, NOW)
    assert health.level is Level.CRITICAL
    assert health.faults[0].reason == "NvlinkDown"
    assert "NVLink 1 " in health.faults[0].message


@pytest.mark.parametrize(
    ("action", "level", "recovery"),
    [
        (0, Level.OK, Recovery.NONE),
        (1, Level.CRITICAL, Recovery.RESET),
        (2, Level.CRITICAL, Recovery.REBOOT),
        (3, Level.DEGRADED, Recovery.NONE),
        (4, Level.DEGRADED, Recovery.RESET),
        (7, Level.CRITICAL, Recovery.REBOOT),
    ],
)
def test_the_drivers_recovery_action(action: int, level: Level, recovery: Recovery) -> None:
    health = assess_gpu(healthy(recovery_action=action), GpuMemory(), POLICY, NOW)
    assert (health.level, health.recovery) == (level, recovery)


# --- XIDs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("xid", [13, 31, 43, 45, 68])
def test_application_xids_are_ignored(xid: int) -> None:
    memory = with_xid(xid)
    health = assess_gpu(healthy(), memory, POLICY, NOW)
    assert health.level is Level.OK
    assert [record.xid for record in health.xids] == [xid]  # still reported


@pytest.mark.parametrize(
    ("xid", "level", "recovery"),
    [
        (48, Level.CRITICAL, Recovery.RESET),
        (63, Level.DEGRADED, Recovery.RESET),
        (64, Level.CRITICAL, Recovery.RESET),
        (74, Level.CRITICAL, Recovery.RESET),
        (79, Level.CRITICAL, Recovery.REBOOT),
        (92, Level.DEGRADED, Recovery.NONE),
        (94, Level.WARN, Recovery.NONE),
        (95, Level.CRITICAL, Recovery.RESET),
        (119, Level.CRITICAL, Recovery.RESET),
        (120, Level.CRITICAL, Recovery.RESET),
        (999, Level.WARN, Recovery.NONE),  # not in the table
    ],
)
def test_the_default_xid_table(xid: int, level: Level, recovery: Recovery) -> None:
    health = assess_gpu(healthy(), with_xid(xid), POLICY, NOW)
    assert (health.level, health.recovery) == (level, recovery)
    assert health.faults[0].reason == f"Xid{xid}"


def test_a_double_bit_ecc_event_is_critical() -> None:
    health = assess_gpu(healthy(), with_xid(0, double_bit_ecc=True), POLICY, NOW)
    assert (health.level, health.faults[0].reason) == (Level.CRITICAL, "DoubleBitEccError")


def test_the_table_is_configurable() -> None:
    overrides = parse_xid_overrides(["48=degraded", "31=critical/gpu-reset", "94=ignore", " "])
    policy = Policy(xids={**DEFAULT_XIDS, **overrides})
    assert assess_gpu(healthy(), with_xid(48), policy, NOW).level is Level.DEGRADED
    assert assess_gpu(healthy(), with_xid(31), policy, NOW).recovery is Recovery.RESET
    assert assess_gpu(healthy(), with_xid(94), policy, NOW).level is Level.OK
    assert overrides[48].description == DEFAULT_XIDS[48].description


@pytest.mark.parametrize("entry", ["48", "x=warn", "48=fatal", "48=warn/soon", "48=unknown"])
def test_bad_xid_entries_are_refused_with_the_entry(entry: str) -> None:
    with pytest.raises(ValueError, match=entry.partition("=")[0]):
        parse_xid_overrides([entry])


def test_an_xid_without_recovery_expires_after_its_hold_time() -> None:
    memory = record_event(AgentMemory(), XidEvent(UUID, 94, at=NOW))
    later = NOW + POLICY.xid_hold_seconds + 1
    assert gpu_level(healthy(), memory.of(UUID), NOW + 10) is Level.WARN
    assert gpu_level(healthy(), memory.of(UUID), later) is Level.OK
    assert forget_expired(memory, POLICY, later).of(UUID).xids == ()


def test_an_xid_that_needs_a_reset_stays_until_the_boot_changes() -> None:
    memory = record_event(AgentMemory(boot_id="boot-1"), XidEvent(UUID, 48, at=NOW))
    years_later = NOW + 10 * 365 * 86400
    memory = forget_expired(memory, POLICY, years_later)
    assert gpu_level(healthy(), memory.of(UUID), years_later) is Level.CRITICAL
    assert on_boot(memory, "boot-1") == memory  # an agent restart remembers
    assert on_boot(memory, "boot-2") == AgentMemory(boot_id="boot-2")  # a reboot forgets


def test_repeated_events_are_counted_once_each() -> None:
    memory = AgentMemory()
    for second in range(3):
        memory = record_event(memory, XidEvent(UUID, 79, at=NOW + second))
    (record,) = memory.of(UUID).xids
    assert (record.count, record.first_at, record.last_at) == (3, NOW, NOW + 2)


# --- MIG ----------------------------------------------------------------------------------

MIGS = (
    MigReading(0, "MIG-opaque-a", gpu_instance_id=1, compute_instance_id=0),
    MigReading(1, "MIG-opaque-b", gpu_instance_id=2, compute_instance_id=0),
    MigReading(2, "MIG-opaque-c", gpu_instance_id=2, compute_instance_id=1),
)


def test_mig_devices_are_found_by_instance_ids() -> None:
    assert attribute_mig(MIGS, NO_INSTANCE, NO_INSTANCE) == ()
    assert [m.uuid for m in attribute_mig(MIGS, 1, NO_INSTANCE)] == ["MIG-opaque-a"]
    assert [m.uuid for m in attribute_mig(MIGS, 2, NO_INSTANCE)] == ["MIG-opaque-b", "MIG-opaque-c"]
    assert [m.uuid for m in attribute_mig(MIGS, 2, 1)] == ["MIG-opaque-c"]
    assert attribute_mig(MIGS, 7, 0) == ()


def test_an_xid_in_one_mig_instance_marks_that_instance() -> None:
    memory = with_xid(48, gpu_instance_id=2, compute_instance_id=1)
    health = assess_gpu(healthy(mig=MIGS), memory, POLICY, NOW)
    assert health.level is Level.CRITICAL
    assert health.faults[0].mig_uuids == ("MIG-opaque-c",)
    assert {m.uuid: m.level for m in health.mig} == {
        "MIG-opaque-a": Level.OK,
        "MIG-opaque-b": Level.OK,
        "MIG-opaque-c": Level.CRITICAL,
    }


# --- the node ---------------------------------------------------------------------------


def test_a_node_is_as_bad_as_its_worst_gpu() -> None:
    reading = NodeReading(gpus=(healthy(0), healthy(1, temperature_c=88), healthy(2)))
    health = assess_node(reading, AgentMemory(), POLICY, NOW, expected_gpus=3)
    assert (health.level, health.reason) == (Level.DEGRADED, "GPUDegraded")
    assert health.message.startswith("GPUDegraded: GPU 1 (GPU-1): temperature 88 C")


def test_missing_gpus_are_critical() -> None:
    reading = NodeReading(gpus=(healthy(0),))
    health = assess_node(reading, AgentMemory(), POLICY, NOW, expected_gpus=2)
    assert health.level is Level.CRITICAL
    assert health.faults[0].reason == "GPUsMissing"
    assert health.recovery is Recovery.REBOOT
    assert assess_node(reading, AgentMemory(), POLICY, NOW, expected_gpus=None).level is Level.OK


def test_nvml_that_fails_is_unknown() -> None:
    health = assess_node(NodeReading(nvml_error="DriverNotLoaded"), AgentMemory(), POLICY, NOW, 8)
    assert (health.level, health.reason) == (Level.UNKNOWN, "NVMLUnavailable")
    assert "DriverNotLoaded" in health.message


def test_no_gpus_and_no_expectation_is_unmonitored() -> None:
    health = assess_node(NodeReading(), AgentMemory(), POLICY, NOW)
    assert (health.level, health.message) == (Level.UNMONITORED, "no GPUs found")


def test_the_node_message_is_bounded() -> None:
    memory = AgentMemory()
    for index in range(64):
        for xid in (48, 74, 79, 95, 119, 120):
            memory = record_event(memory, XidEvent(f"GPU-{index}", xid, at=NOW))
    reading = NodeReading(gpus=tuple(healthy(i) for i in range(64)))
    assert len(assess_node(reading, memory, POLICY, NOW).message) <= 1024


def test_custom_rules_keep_their_description() -> None:
    rule = XidRule(Level.CRITICAL, Recovery.REBOOT, "custom")
    policy = Policy(xids={500: rule})
    health = assess_gpu(healthy(), with_xid(500), policy, NOW)
    assert "custom" in health.faults[0].message
    assert XidRecord(1, 1, NOW, NOW).key == (1, False, NO_INSTANCE, NO_INSTANCE)
