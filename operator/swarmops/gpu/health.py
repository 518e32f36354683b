"""GPU health classification: typed NVML readings and XID events in, levels and faults out.

Pure: no NVML, no clock, no I/O. The agent (`swarmops.gpu.agent`) reads NVML through
`swarmops.gpu.nvml`, keeps an `AgentMemory` (what must be remembered between polls:
XIDs seen, throttling streaks, NVLinks once active), and asks `assess_node` what it
all means at a given time.

Levels, best to worst (see docs/gpu.md for the full tables and the reasons):

* OK: every check that can run passes.
* UNMONITORED: nothing is wrong, but the checks that matter cannot run here (XID events
  cannot be registered, or every polled check answers NotSupported/FunctionNotFound).
  Never treated as unhealthy: the device plugin once marked such GPUs unhealthy
  (k8s-device-plugin #33, fixed by #1562) and users lost whole nodes to it.
* WARN: worth an Event and a metric (an XID outside the table, software thermal
  slowdown, a temperature close to the slowdown threshold, a contained ECC error).
* UNKNOWN: NVML failed (did not initialise, a call hung, a check failed with an
  unexpected error): the agent cannot tell. The operator waits a grace period first.
* DEGRADED: the GPU works but should not get new work (sustained hardware slowdown, a
  pending row remap or page retirement, a PCIe link below its width).
* CRITICAL: the GPU is gone or broken (fallen off the bus, a critical XID, a row remap
  failure, fewer GPUs than the node should have, an NVLink that went down).

Some faults need a GPU reset or a reboot before the GPU may be trusted again
(`Recovery`): the operator clears its taint for those only after the node's BootID
changed (the GKE health checker's rule), and the agent forgets such XIDs only then.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, TypeAlias, TypeVar

# --- Vocabulary -------------------------------------------------------------------------------


class Level(enum.StrEnum):
    OK = "ok"
    UNMONITORED = "unmonitored"
    WARN = "warn"
    UNKNOWN = "unknown"
    DEGRADED = "degraded"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Severity: a node or GPU takes the level of its worst part."""
        return _LEVEL_RANK[self]


_LEVEL_RANK: Final = {
    Level.OK: 0,
    Level.UNMONITORED: 1,
    Level.WARN: 2,
    # Above WARN: the operator acts on UNKNOWN (NoSchedule after a grace period) and only
    # reports WARN. Below DEGRADED: a known fault says more than "cannot tell".
    Level.UNKNOWN: 3,
    Level.DEGRADED: 4,
    Level.CRITICAL: 5,
}


def worst(levels: Iterable[Level], default: Level = Level.OK) -> Level:
    return max(levels, key=lambda level: level.rank, default=default)


class Recovery(enum.StrEnum):
    """What a fault needs before the GPU can be trusted again."""

    NONE = "none"  # it clears by itself (the next clean polls say so)
    RESET = "gpu-reset"
    REBOOT = "reboot"

    @property
    def rank(self) -> int:
        return {Recovery.NONE: 0, Recovery.RESET: 1, Recovery.REBOOT: 2}[self]


class Check(enum.StrEnum):
    """The things the agent looks at, named in faults, the annotation and metrics."""

    NVML = "nvml"
    PRESENCE = "presence"  # GPU lost; fewer GPUs than expected
    EVENTS = "xid_events"  # registration for XID / double-bit ECC events
    XID = "xid"
    ECC = "ecc"
    REMAPPED_ROWS = "remapped_rows"
    RETIRED_PAGES = "retired_pages"
    CLOCKS = "clock_events"
    TEMPERATURE = "temperature"
    PCIE = "pcie_link"
    NVLINK = "nvlink"
    RECOVERY_ACTION = "recovery_action"


#: Checks whose results come from the poll loop (EVENTS comes from the event thread).
POLLED_CHECKS: Final = (
    Check.ECC,
    Check.REMAPPED_ROWS,
    Check.RETIRED_PAGES,
    Check.CLOCKS,
    Check.TEMPERATURE,
    Check.PCIE,
    Check.NVLINK,
    Check.RECOVERY_ACTION,
)

# NVML constants, copied from nvml.h / pynvml so this module never imports pynvml.
CLOCKS_SW_POWER_CAP: Final = 0x4  # nvmlClocksEventReasonSwPowerCap
CLOCKS_HW_SLOWDOWN: Final = 0x8  # nvmlClocksEventReasonHwSlowdown
CLOCKS_SW_THERMAL: Final = 0x20  # nvmlClocksEventReasonSwThermalSlowdown
CLOCKS_HW_THERMAL: Final = 0x40  # nvmlClocksEventReasonHwThermalSlowdown
CLOCKS_HW_POWER_BRAKE: Final = 0x80  # nvmlClocksEventReasonHwPowerBrakeSlowdown
HW_SLOWDOWN_BITS: Final = CLOCKS_HW_SLOWDOWN | CLOCKS_HW_THERMAL | CLOCKS_HW_POWER_BRAKE
CLOCK_REASON_NAMES: Final = {
    CLOCKS_SW_POWER_CAP: "sw_power_cap",
    CLOCKS_HW_SLOWDOWN: "hw_slowdown",
    CLOCKS_SW_THERMAL: "sw_thermal_slowdown",
    CLOCKS_HW_THERMAL: "hw_thermal_slowdown",
    CLOCKS_HW_POWER_BRAKE: "hw_power_brake_slowdown",
}
EVENT_DOUBLE_BIT_ECC: Final = 0x2  # nvmlEventTypeDoubleBitEccError
EVENT_XID_CRITICAL: Final = 0x8  # nvmlEventTypeXidCriticalError
WATCHED_EVENTS: Final = EVENT_XID_CRITICAL | EVENT_DOUBLE_BIT_ECC
NO_INSTANCE: Final = 0xFFFFFFFF  # an event's GPU/compute instance id outside MIG

#: NVML_FI_DEV_GET_GPU_RECOVERY_ACTION values (r570+) and what each means here.
RECOVERY_ACTIONS: Final[Mapping[int, tuple[str, Level, Recovery]]] = {
    1: ("GPU_RESET", Level.CRITICAL, Recovery.RESET),
    2: ("NODE_REBOOT", Level.CRITICAL, Recovery.REBOOT),
    3: ("DRAIN_P2P", Level.DEGRADED, Recovery.NONE),
    4: ("DRAIN_AND_RESET", Level.DEGRADED, Recovery.RESET),
    5: ("RECOVER_IMEX_DOMAIN", Level.DEGRADED, Recovery.NONE),
    6: ("BUS_RESET", Level.CRITICAL, Recovery.RESET),
    7: ("SYSTEM_REBOOT", Level.CRITICAL, Recovery.REBOOT),
}


# --- Readings ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Unsupported:
    """The check cannot run on this GPU or driver (NotSupported, FunctionNotFound)."""

    error: str = "NotSupported"


@dataclass(frozen=True, slots=True)
class Failed:
    """The check failed for another reason; the agent cannot tell what the answer is."""

    error: str


T = TypeVar("T")
#: One reading: its value, or why there is none.
Reading: TypeAlias = T | Unsupported | Failed
#: The default of a field the reader did not fill: unknown, never healthy by omission.
NOT_READ: Final = Failed("not read")


@dataclass(frozen=True, slots=True)
class RemappedRows:
    corrected: int
    uncorrected: int
    pending: bool
    failure: bool


@dataclass(frozen=True, slots=True)
class MigReading:
    """A MIG device, found through nvmlDeviceGetMigDeviceHandleByIndex on its GPU's handle.

    The ids come from the MIG handle (nvmlDeviceGetGpuInstanceId/ComputeInstanceId),
    never from its UUID, whose format changed (driver 580 made MIG UUIDs opaque)."""

    index: int
    uuid: str
    gpu_instance_id: int
    compute_instance_id: int


@dataclass(frozen=True, slots=True)
class GpuReading:
    index: int
    uuid: str
    name: str = ""
    lost: bool = False  # some call answered NVML_ERROR_GPU_IS_LOST
    temperature_c: Reading[int] = NOT_READ
    slowdown_c: Reading[int] = NOT_READ
    shutdown_c: Reading[int] = NOT_READ
    ecc_uncorrected_volatile: Reading[int] = NOT_READ
    remapped_rows: Reading[RemappedRows] = NOT_READ
    retired_pages_pending: Reading[bool] = NOT_READ
    clock_event_reasons: Reading[int] = NOT_READ
    pcie_width: Reading[int] = NOT_READ
    pcie_max_width: Reading[int] = NOT_READ
    #: Active or not, per link that exists (links answering NotSupported are left out);
    #: Unsupported when the GPU has no NVLink at all.
    nvlink_active: Reading[tuple[tuple[int, bool], ...]] = NOT_READ
    recovery_action: Reading[int] = NOT_READ
    #: The event types registered for this GPU (from the event thread).
    events: Reading[int] = NOT_READ
    mig: tuple[MigReading, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeReading:
    """One poll of the whole node."""

    nvml_error: str | None = None  # NVML did not initialise, or hung: nothing else is known
    driver_version: str = ""
    gpus: tuple[GpuReading, ...] = ()

    @property
    def device_count(self) -> int:
        return len(self.gpus)


@dataclass(frozen=True, slots=True)
class XidEvent:
    """One event from nvmlEventSetWait, its GPU resolved by handle to a UUID."""

    gpu_uuid: str
    xid: int  # eventData; for a double-bit ECC event the XID table is not consulted
    at: float  # seconds since the epoch
    gpu_instance_id: int = NO_INSTANCE
    compute_instance_id: int = NO_INSTANCE
    double_bit_ecc: bool = False


# --- Policy -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class XidRule:
    level: Level  # OK: ignored (counted in metrics, no fault)
    recovery: Recovery
    description: str


#: The default XID table. Sources: the XID catalog
#: (docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html), k8s-device-plugin's
#: skip list, GKE's critical list; see /docs/gpu.md for why each level.
DEFAULT_XIDS: Final[Mapping[int, XidRule]] = {
    # Application errors: the GPU is fine; the application that caused them failed.
    13: XidRule(Level.OK, Recovery.NONE, "graphics engine exception (application error)"),
    31: XidRule(Level.OK, Recovery.NONE, "GPU memory page fault (application error)"),
    43: XidRule(Level.OK, Recovery.NONE, "GPU stopped processing (application error)"),
    45: XidRule(Level.OK, Recovery.NONE, "preemptive cleanup after a previous error"),
    68: XidRule(Level.OK, Recovery.NONE, "video processor exception (application error)"),
    48: XidRule(Level.CRITICAL, Recovery.RESET, "double-bit ECC error"),
    63: XidRule(Level.DEGRADED, Recovery.RESET, "row remapping / page retirement recorded"),
    64: XidRule(Level.CRITICAL, Recovery.RESET, "row remapping / page retirement failed"),
    74: XidRule(Level.CRITICAL, Recovery.RESET, "NVLink error"),
    79: XidRule(Level.CRITICAL, Recovery.REBOOT, "GPU has fallen off the bus"),
    92: XidRule(Level.DEGRADED, Recovery.NONE, "high single-bit ECC error rate"),
    94: XidRule(Level.WARN, Recovery.NONE, "contained ECC error (only its application hit)"),
    95: XidRule(Level.CRITICAL, Recovery.RESET, "uncontained ECC error"),
    109: XidRule(Level.DEGRADED, Recovery.RESET, "context switch timeout"),
    119: XidRule(Level.CRITICAL, Recovery.RESET, "GSP RPC timeout"),
    120: XidRule(Level.CRITICAL, Recovery.RESET, "GSP error"),
    123: XidRule(Level.CRITICAL, Recovery.RESET, "SPI PMU RPC write failure"),
    140: XidRule(Level.CRITICAL, Recovery.RESET, "unrecovered ECC error"),
}
#: An XID outside the table: a person should look, a fleet should not be quarantined.
UNKNOWN_XID: Final = XidRule(Level.WARN, Recovery.NONE, "XID not in the table")
DOUBLE_BIT_ECC: Final = XidRule(Level.CRITICAL, Recovery.RESET, "double-bit ECC error event")


@dataclass(frozen=True, slots=True)
class Policy:
    xids: Mapping[int, XidRule] = field(default_factory=lambda: dict(DEFAULT_XIDS))
    unknown_xid: XidRule = UNKNOWN_XID
    double_bit_ecc: XidRule = DOUBLE_BIT_ECC
    #: WARN from this many degrees below the slowdown threshold.
    temperature_margin_c: int = 5
    #: Consecutive polls with a hardware slowdown bit before it is DEGRADED (WARN before).
    sustained_polls: int = 3
    #: How long an XID that needs no reset keeps its level after it was last seen.
    xid_hold_seconds: float = 600.0

    def rule_for(self, xid: int) -> XidRule:
        return self.xids.get(xid, self.unknown_xid)

    def rule_of(self, record: XidRecord) -> XidRule:
        return self.double_bit_ecc if record.double_bit_ecc else self.rule_for(record.xid)


def parse_xid_overrides(entries: Sequence[str]) -> dict[int, XidRule]:
    """XID table entries from settings: `CODE=LEVEL[/RECOVERY]`, e.g. `94=warn`,
    `48=critical/gpu-reset`, `31=ignore`. Raises ValueError with the bad entry."""
    result: dict[int, XidRule] = {}
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        code, sep, verdict = entry.partition("=")
        if not sep or not code.strip().isdigit():
            raise ValueError(f"{entry!r}: expected CODE=LEVEL[/RECOVERY], e.g. 94=warn")
        level_name, _, recovery_name = verdict.strip().lower().partition("/")
        level_name = "ok" if level_name == "ignore" else level_name
        try:
            level = Level(level_name)
            recovery = Recovery(recovery_name or "none")
        except ValueError:
            raise ValueError(
                f"{entry!r}: level is one of ignore, warn, degraded, critical and recovery "
                "one of none, gpu-reset, reboot"
            ) from None
        if level in (Level.UNKNOWN, Level.UNMONITORED):
            raise ValueError(f"{entry!r}: an XID is ignore, warn, degraded or critical")
        xid = int(code)
        default = DEFAULT_XIDS.get(xid)
        description = default.description if default else "set by configuration"
        result[xid] = XidRule(level, recovery, description)
    return result


# --- Memory: what the agent remembers between polls --------------------------------------------


@dataclass(frozen=True, slots=True)
class XidRecord:
    """Occurrences of one XID (or double-bit ECC event) on one GPU / MIG instance."""

    xid: int
    count: int
    first_at: float
    last_at: float
    gpu_instance_id: int = NO_INSTANCE
    compute_instance_id: int = NO_INSTANCE
    double_bit_ecc: bool = False

    @property
    def key(self) -> tuple[int, bool, int, int]:
        return (self.xid, self.double_bit_ecc, self.gpu_instance_id, self.compute_instance_id)


@dataclass(frozen=True, slots=True)
class GpuMemory:
    xids: tuple[XidRecord, ...] = ()
    slowdown_streak: int = 0  # consecutive polls with a hardware slowdown bit set
    nvlinks_seen_active: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class AgentMemory:
    """Per GPU (by UUID), and the boot it belongs to: XIDs needing a reset or reboot are
    forgotten when the node's BootID changes, and only then."""

    boot_id: str = ""
    gpus: Mapping[str, GpuMemory] = field(default_factory=dict)

    def of(self, uuid: str) -> GpuMemory:
        return self.gpus.get(uuid, GpuMemory())

    def with_gpu(self, uuid: str, memory: GpuMemory) -> AgentMemory:
        return replace(self, gpus={**self.gpus, uuid: memory})


def attribute_mig(
    migs: Sequence[MigReading], gpu_instance_id: int, compute_instance_id: int
) -> tuple[MigReading, ...]:
    """The MIG devices an event's instance ids name (by the ids NVML gave for each MIG
    handle, never by UUID): those of its GPU instance, narrowed to its compute instance
    when the event names one. Empty for an event about the whole GPU."""
    if gpu_instance_id == NO_INSTANCE:
        return ()
    return tuple(
        m
        for m in migs
        if m.gpu_instance_id == gpu_instance_id
        and compute_instance_id in (NO_INSTANCE, m.compute_instance_id)
    )


def record_event(memory: AgentMemory, event: XidEvent) -> AgentMemory:
    """Remember one event. Its MIG device is found when it is assessed, from the
    instance ids and the MIG devices NVML lists then."""
    record = XidRecord(
        xid=event.xid,
        count=1,
        first_at=event.at,
        last_at=event.at,
        gpu_instance_id=event.gpu_instance_id,
        compute_instance_id=event.compute_instance_id,
        double_bit_ecc=event.double_bit_ecc,
    )
    gpu_memory = memory.of(event.gpu_uuid)
    records = list(gpu_memory.xids)
    for i, seen in enumerate(records):
        if seen.key == record.key:
            records[i] = replace(
                seen,
                count=seen.count + 1,
                first_at=min(seen.first_at, event.at),
                last_at=max(seen.last_at, event.at),
            )
            break
    else:
        records.append(record)
    return memory.with_gpu(event.gpu_uuid, replace(gpu_memory, xids=tuple(records)))


def record_poll(
    memory: AgentMemory, reading: NodeReading, policy: Policy, now: float
) -> AgentMemory:
    """Fold one poll into memory: slowdown streaks, NVLinks seen active, expired XIDs."""
    result = forget_expired(memory, policy, now)
    for gpu in reading.gpus:
        gpu_memory = result.of(gpu.uuid)
        reasons = gpu.clock_event_reasons
        slowed = isinstance(reasons, int) and bool(reasons & HW_SLOWDOWN_BITS)
        active = gpu.nvlink_active
        seen = gpu_memory.nvlinks_seen_active
        if isinstance(active, tuple):
            seen = seen | {link for link, is_active in active if is_active}
        result = result.with_gpu(
            gpu.uuid,
            replace(
                gpu_memory,
                slowdown_streak=gpu_memory.slowdown_streak + 1 if slowed else 0,
                nvlinks_seen_active=seen,
            ),
        )
    return result


def forget_expired(memory: AgentMemory, policy: Policy, now: float) -> AgentMemory:
    """Drop XIDs that need no recovery once their hold time is over; keep the rest."""
    gpus: dict[str, GpuMemory] = {}
    for uuid, gpu_memory in memory.gpus.items():
        kept = tuple(
            record
            for record in gpu_memory.xids
            if _xid_is_sticky(record, policy) or now - record.last_at < policy.xid_hold_seconds
        )
        gpus[uuid] = replace(gpu_memory, xids=kept)
    return replace(memory, gpus=gpus)


def on_boot(memory: AgentMemory, boot_id: str) -> AgentMemory:
    """The memory to keep on (re)start with the node's current BootID: all of it for the
    same boot (an agent restart must not forget a GPU that needs a reset), none of it
    after a reboot (which was the recovery those faults waited for)."""
    if memory.boot_id == boot_id:
        return memory
    return AgentMemory(boot_id=boot_id)


def _xid_is_sticky(record: XidRecord, policy: Policy) -> bool:
    rule = policy.rule_of(record)
    return rule.level is not Level.OK and rule.recovery is not Recovery.NONE


# --- Assessment -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    check: Check
    level: Level
    reason: str  # CamelCase, machine-readable
    message: str  # for a person
    recovery: Recovery = Recovery.NONE
    mig_uuids: tuple[str, ...] = ()  # the MIG devices it concerns; empty: the whole GPU


@dataclass(frozen=True, slots=True)
class MigHealth:
    uuid: str
    gpu_instance_id: int
    compute_instance_id: int
    level: Level


@dataclass(frozen=True, slots=True)
class GpuHealth:
    index: int
    uuid: str
    name: str
    level: Level
    faults: tuple[Fault, ...] = ()
    unmonitored: tuple[Check, ...] = ()
    mig: tuple[MigHealth, ...] = ()
    xids: tuple[XidRecord, ...] = ()

    @property
    def recovery(self) -> Recovery:
        return max((f.recovery for f in self.faults), key=lambda r: r.rank, default=Recovery.NONE)


@dataclass(frozen=True, slots=True)
class NodeHealth:
    level: Level
    reason: str
    message: str
    gpus: tuple[GpuHealth, ...] = ()
    faults: tuple[Fault, ...] = ()  # node-wide: NVML unavailable, GPUs missing
    expected_gpus: int | None = None
    found_gpus: int = 0
    driver_version: str = ""

    @property
    def recovery(self) -> Recovery:
        faults = [*self.faults, *(f for gpu in self.gpus for f in gpu.faults)]
        return max((f.recovery for f in faults), key=lambda r: r.rank, default=Recovery.NONE)

    def all_faults(self) -> list[tuple[GpuHealth | None, Fault]]:
        pairs: list[tuple[GpuHealth | None, Fault]] = [(None, f) for f in self.faults]
        pairs += [(gpu, f) for gpu in self.gpus for f in gpu.faults]
        return sorted(pairs, key=lambda pair: -pair[1].level.rank)


#: The condition reason for each node level (a stable vocabulary the operator reads).
LEVEL_REASONS: Final = {
    Level.OK: "GPUsHealthy",
    Level.UNMONITORED: "GPUsUnmonitored",
    Level.WARN: "GPUWarning",
    Level.UNKNOWN: "GPUStateUnknown",
    Level.DEGRADED: "GPUDegraded",
    Level.CRITICAL: "GPUCritical",
}
NVML_UNAVAILABLE: Final = "NVMLUnavailable"
MAX_MESSAGE: Final = 1024


def _timestamp(at: float) -> str:
    return (
        datetime.datetime.fromtimestamp(at, datetime.UTC)
        .replace(microsecond=0)
        .isoformat()
        .replace("+00:00", "Z")
    )


def _xid_faults(
    records: Sequence[XidRecord], migs: Sequence[MigReading], policy: Policy, now: float
) -> tuple[list[Fault], list[XidRecord]]:
    faults: list[Fault] = []
    live: list[XidRecord] = []
    for record in records:
        rule = policy.rule_of(record)
        held = rule.recovery is not Recovery.NONE or now - record.last_at < policy.xid_hold_seconds
        if not held:
            continue
        live.append(record)
        if rule.level is Level.OK:
            continue
        what = "double-bit ECC event" if record.double_bit_ecc else f"XID {record.xid}"
        mig_uuids = tuple(
            m.uuid for m in attribute_mig(migs, record.gpu_instance_id, record.compute_instance_id)
        )
        where = f" on MIG {', '.join(mig_uuids)}" if mig_uuids else ""
        needs = "" if rule.recovery is Recovery.NONE else f"; needs {rule.recovery}"
        faults.append(
            Fault(
                check=Check.XID,
                level=rule.level,
                reason="DoubleBitEccError" if record.double_bit_ecc else f"Xid{record.xid}",
                message=(
                    f"{what} ({rule.description}){where}, {record.count}x, "
                    f"last {_timestamp(record.last_at)}{needs}"
                ),
                recovery=rule.recovery,
                mig_uuids=mig_uuids,
            )
        )
    return faults, live


def assess_gpu(gpu: GpuReading, memory: GpuMemory, policy: Policy, now: float) -> GpuHealth:
    faults, live_xids = _xid_faults(memory.xids, gpu.mig, policy, now)
    unmonitored: list[Check] = []
    monitored: set[Check] = set()
    failed: list[tuple[Check, str]] = []

    def value(check: Check, reading: Reading[T]) -> T | None:
        if isinstance(reading, Unsupported):
            if check not in unmonitored:
                unmonitored.append(check)
            return None
        if isinstance(reading, Failed):
            failed.append((check, reading.error))
            return None
        monitored.add(check)
        return reading

    if gpu.lost:
        faults.append(
            Fault(
                Check.PRESENCE,
                Level.CRITICAL,
                "GPULost",
                "NVML reports the GPU lost (fallen off the bus)",
                Recovery.REBOOT,
            )
        )
        return _gpu_health(gpu, faults, (), live_xids, unmonitored=False)

    value(Check.EVENTS, gpu.events)

    # Memory errors: row remapping on Ampere and later, page retirement before.
    remapped = value(Check.REMAPPED_ROWS, gpu.remapped_rows)
    if remapped is not None and remapped.failure:
        faults.append(
            Fault(
                Check.REMAPPED_ROWS,
                Level.CRITICAL,
                "RowRemapFailure",
                f"row remapping failed ({remapped.uncorrected} rows remapped for uncorrectable "
                "errors): the GPU needs service (RMA policy)",
                Recovery.REBOOT,
            )
        )
    elif remapped is not None and remapped.pending:
        faults.append(
            Fault(
                Check.REMAPPED_ROWS,
                Level.DEGRADED,
                "RowRemapPending",
                "a row remap is pending: it takes effect at the next GPU reset",
                Recovery.RESET,
            )
        )
    retired = value(Check.RETIRED_PAGES, gpu.retired_pages_pending)
    if retired:
        faults.append(
            Fault(
                Check.RETIRED_PAGES,
                Level.DEGRADED,
                "PageRetirementPending",
                "a page retirement is pending: it takes effect at the next GPU reset",
                Recovery.RESET,
            )
        )
    uncorrected = value(Check.ECC, gpu.ecc_uncorrected_volatile)
    if uncorrected:
        # Ampere and later (row remapping present) contain and remap such errors; before
        # them an uncorrected error leaves the memory suspect until a reset.
        remaps = remapped is not None
        faults.append(
            Fault(
                Check.ECC,
                Level.DEGRADED if remaps else Level.CRITICAL,
                "UncorrectableEccErrors",
                f"{uncorrected} uncorrectable ECC errors since the driver loaded",
                Recovery.RESET,
            )
        )

    reasons = value(Check.CLOCKS, gpu.clock_event_reasons)
    if reasons is not None:
        hardware = reasons & HW_SLOWDOWN_BITS
        names = ", ".join(name for bit, name in CLOCK_REASON_NAMES.items() if reasons & bit)
        if hardware:
            sustained = memory.slowdown_streak >= policy.sustained_polls
            faults.append(
                Fault(
                    Check.CLOCKS,
                    Level.DEGRADED if sustained else Level.WARN,
                    "HardwareSlowdown",
                    f"clocks slowed by {names}"
                    + (f" for {memory.slowdown_streak} polls" if sustained else ""),
                )
            )
        elif reasons & CLOCKS_SW_THERMAL:
            faults.append(Fault(Check.CLOCKS, Level.WARN, "ThermalSlowdown", f"clocks: {names}"))
        # SwPowerCap alone is normal boost behaviour under a power limit: no fault.

    temperature = value(Check.TEMPERATURE, gpu.temperature_c)
    slowdown = value(Check.TEMPERATURE, gpu.slowdown_c)
    shutdown = gpu.shutdown_c if isinstance(gpu.shutdown_c, int) else None
    if temperature is not None and slowdown is not None:
        if shutdown is not None and temperature >= shutdown:
            level, reason = Level.CRITICAL, "TemperatureAtShutdown"
            detail = f"{temperature} C, shutdown threshold {shutdown} C"
        elif temperature >= slowdown:
            level, reason = Level.DEGRADED, "TemperatureAtSlowdown"
            detail = f"{temperature} C, slowdown threshold {slowdown} C"
        elif temperature >= slowdown - policy.temperature_margin_c:
            level, reason = Level.WARN, "TemperatureNearSlowdown"
            detail = f"{temperature} C, slowdown threshold {slowdown} C"
        else:
            level, reason, detail = Level.OK, "", ""
        if level is not Level.OK:
            faults.append(Fault(Check.TEMPERATURE, level, reason, f"temperature {detail}"))

    width = value(Check.PCIE, gpu.pcie_width)
    max_width = value(Check.PCIE, gpu.pcie_max_width)
    if width is not None and max_width is not None and 0 < width < max_width:
        faults.append(
            Fault(
                Check.PCIE,
                Level.DEGRADED,
                "PcieLinkDegraded",
                f"PCIe link x{width}, below its maximum x{max_width}",
            )
        )

    links = value(Check.NVLINK, gpu.nvlink_active)
    if links is not None:
        down = sorted(
            link for link, active in links if not active and link in memory.nvlinks_seen_active
        )
        if down:
            faults.append(
                Fault(
                    Check.NVLINK,
                    Level.CRITICAL,
                    "NvlinkDown",
                    f"NVLink {', '.join(map(str, down))} went inactive after being active",
                    Recovery.RESET,
                )
            )

    action = value(Check.RECOVERY_ACTION, gpu.recovery_action)
    if action and action in RECOVERY_ACTIONS:
        name, level, recovery = RECOVERY_ACTIONS[action]
        faults.append(
            Fault(
                Check.RECOVERY_ACTION,
                level,
                "RecoveryActionRequired",
                f"the driver asks for recovery action {name}",
                recovery,
            )
        )

    for check, error in failed:
        faults.append(
            Fault(check, Level.UNKNOWN, "CheckFailed", f"{check} could not be read: {error}")
        )
    # Nothing wrong seen, yet the XID events (the one signal for most critical faults)
    # cannot be watched, or not one polled check gave an answer: say so, not "ok".
    blind = Check.EVENTS in unmonitored or not monitored.intersection(POLLED_CHECKS)
    return _gpu_health(gpu, faults, tuple(unmonitored), live_xids, unmonitored=blind)


def _gpu_health(
    gpu: GpuReading,
    faults: list[Fault],
    unmonitored_checks: tuple[Check, ...],
    xids: list[XidRecord],
    *,
    unmonitored: bool,
) -> GpuHealth:
    level = worst(f.level for f in faults)
    if level is Level.OK and unmonitored:
        level = Level.UNMONITORED
    mig = tuple(
        MigHealth(
            uuid=m.uuid,
            gpu_instance_id=m.gpu_instance_id,
            compute_instance_id=m.compute_instance_id,
            level=worst(f.level for f in faults if m.uuid in f.mig_uuids),
        )
        for m in gpu.mig
    )
    return GpuHealth(
        index=gpu.index,
        uuid=gpu.uuid,
        name=gpu.name,
        level=level,
        faults=tuple(sorted(faults, key=lambda f: -f.level.rank)),
        unmonitored=unmonitored_checks,
        mig=mig,
        xids=tuple(xids),
    )


def assess_node(
    reading: NodeReading,
    memory: AgentMemory,
    policy: Policy,
    now: float,
    expected_gpus: int | None = None,
) -> NodeHealth:
    """The node's health: its worst GPU, NVML failures and missing GPUs."""
    if reading.nvml_error is not None:
        fault = Fault(Check.NVML, Level.UNKNOWN, NVML_UNAVAILABLE, f"NVML: {reading.nvml_error}")
        return NodeHealth(
            level=Level.UNKNOWN,
            reason=NVML_UNAVAILABLE,
            message=_clip(f"GPU health unknown: {fault.message}"),
            faults=(fault,),
            expected_gpus=expected_gpus,
        )
    gpus = tuple(assess_gpu(gpu, memory.of(gpu.uuid), policy, now) for gpu in reading.gpus)
    faults: list[Fault] = []
    if expected_gpus is not None and reading.device_count < expected_gpus:
        faults.append(
            Fault(
                Check.PRESENCE,
                Level.CRITICAL,
                "GPUsMissing",
                f"NVML sees {reading.device_count} GPUs, the node should have {expected_gpus}",
                Recovery.REBOOT,
            )
        )
    level = worst([*(gpu.level for gpu in gpus), *(f.level for f in faults)])
    if not gpus and not faults:
        level = Level.UNMONITORED
    health = NodeHealth(
        level=level,
        reason=LEVEL_REASONS[level],
        message="",
        gpus=gpus,
        faults=tuple(faults),
        expected_gpus=expected_gpus,
        found_gpus=reading.device_count,
        driver_version=reading.driver_version,
    )
    return replace(health, message=_node_message(health))


def _node_message(health: NodeHealth) -> str:
    count = len(health.gpus)
    if health.level is Level.OK:
        return f"{count} GPUs healthy"
    if health.level is Level.UNMONITORED:
        if not health.gpus:
            return "no GPUs found"
        unmonitored = [gpu for gpu in health.gpus if gpu.level is Level.UNMONITORED]
        checks = sorted({str(c) for gpu in unmonitored for c in gpu.unmonitored})
        return (
            f"{len(unmonitored)} of {count} GPUs cannot be monitored (not supported: "
            f"{', '.join(checks)}); nothing wrong seen"
        )
    parts = []
    for gpu, fault in health.all_faults():
        if fault.level.rank < Level.WARN.rank:
            continue
        where = f"GPU {gpu.index} ({gpu.uuid}): " if gpu else ""
        parts.append(f"{where}{fault.message}")
    return _clip(f"{LEVEL_REASONS[health.level]}: " + "; ".join(parts))


def _clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"
