"""What the GPU agent publishes on its Node, as pure functions of a `NodeHealth`.

* The node condition `SwarmOpsGPUHealthy`: True for OK, WARN and UNMONITORED (nothing
  is known to be wrong), False for DEGRADED and CRITICAL, Unknown for UNKNOWN; the
  reason is the level's (`GPUCritical`, ...; a stable vocabulary), the message names the
  faults. Written through the nodes/status subresource.
* The annotation `swarmops.dev/gpu-health-report`: JSON with the level, a heartbeat,
  the node's BootID, the recovery the faults need and per-GPU detail (faults, checks
  that cannot run, MIG devices, XIDs still held). Bounded in size: every watcher of
  nodes (the scheduler, the operator) receives it with each node update.
* The XIDs in the annotation are also the agent's memory across restarts: a restarted
  agent on the same boot takes them back (`memory_from_report`), so a GPU that needs a
  reset does not look healthy because its agent was rescheduled.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from swarmops.gpu.health import (
    AgentMemory,
    Fault,
    GpuHealth,
    GpuMemory,
    Level,
    NodeHealth,
    XidRecord,
)

CONDITION_TYPE: Final = "SwarmOpsGPUHealthy"
REPORT_ANNOTATION: Final = "swarmops.dev/gpu-health-report"
REPORT_VERSION: Final = 1
#: The annotation's budget. Kubernetes allows 256 KiB for all annotations of an object;
#: ours travels with every node update to every node watcher, so it stays far smaller.
MAX_REPORT_BYTES: Final = 16 * 1024
#: How many faults per GPU the annotation lists in full.
MAX_FAULTS_PER_GPU: Final = 8


def condition_status(level: Level) -> str:
    if level in (Level.DEGRADED, Level.CRITICAL):
        return "False"
    if level is Level.UNKNOWN:
        return "Unknown"
    return "True"


def format_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def node_condition(
    health: NodeHealth, previous: Mapping[str, Any] | None, now: datetime.datetime
) -> dict[str, Any]:
    """The condition to write; its transition time moves only when its status does."""
    status = condition_status(health.level)
    transition = format_time(now)
    if previous is not None and previous.get("status") == status:
        transition = str(previous.get("lastTransitionTime") or transition)
    return {
        "type": CONDITION_TYPE,
        "status": status,
        "reason": health.reason,
        "message": health.message,
        "lastHeartbeatTime": format_time(now),
        "lastTransitionTime": transition,
    }


def condition_changed(new: Mapping[str, Any], previous: Mapping[str, Any] | None) -> bool:
    """Whether the condition says something new (its heartbeat time aside)."""
    if previous is None:
        return True
    return any(new.get(key) != previous.get(key) for key in ("status", "reason", "message"))


def find_condition(node: Mapping[str, Any]) -> dict[str, Any] | None:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == CONDITION_TYPE:
            return condition
    return None


# --- The annotation --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportContext:
    """What the report says beside the health itself."""

    boot_id: str
    agent_version: str
    poll_seconds: float
    heartbeat_seconds: float


def _fault(fault: Fault, *, brief: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "check": str(fault.check),
        "level": str(fault.level),
        "reason": fault.reason,
    }
    if fault.recovery.rank:
        entry["recovery"] = str(fault.recovery)
    if fault.mig_uuids:
        entry["mig"] = list(fault.mig_uuids)
    if not brief:
        entry["message"] = fault.message
    return entry


def _xid(record: XidRecord) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "xid": record.xid,
        "count": record.count,
        "first": format_time(datetime.datetime.fromtimestamp(record.first_at, datetime.UTC)),
        "last": format_time(datetime.datetime.fromtimestamp(record.last_at, datetime.UTC)),
    }
    if record.double_bit_ecc:
        entry["doubleBitEcc"] = True
    if record.gpu_instance_id != 0xFFFFFFFF:
        entry["gpuInstance"] = record.gpu_instance_id
    if record.compute_instance_id != 0xFFFFFFFF:
        entry["computeInstance"] = record.compute_instance_id
    return entry


def _gpu(gpu: GpuHealth, *, brief: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "index": gpu.index,
        "uuid": gpu.uuid,
        "level": str(gpu.level),
    }
    if gpu.name and not brief:
        entry["name"] = gpu.name
    if gpu.faults:
        entry["faults"] = [_fault(f, brief=brief) for f in gpu.faults[:MAX_FAULTS_PER_GPU]]
        if len(gpu.faults) > MAX_FAULTS_PER_GPU:
            entry["moreFaults"] = len(gpu.faults) - MAX_FAULTS_PER_GPU
    if gpu.unmonitored:
        entry["unmonitored"] = [str(check) for check in gpu.unmonitored]
    if gpu.mig:
        entry["mig"] = [
            {
                "uuid": m.uuid,
                "gpuInstance": m.gpu_instance_id,
                "computeInstance": m.compute_instance_id,
                "level": str(m.level),
            }
            for m in gpu.mig
        ]
    if gpu.xids:
        entry["xids"] = [_xid(record) for record in gpu.xids]
    return entry


def render_report(
    health: NodeHealth,
    context: ReportContext,
    now: datetime.datetime,
    *,
    limit: int = MAX_REPORT_BYTES,
) -> str:
    """The annotation's JSON, at most `limit` bytes.

    Too large (many GPUs, many MIG devices, many faults), it drops, in turn: messages;
    healthy GPUs without XIDs; then the least severe GPUs. The level, the node-wide
    faults and the GPUs with XIDs (the memory a restarted agent needs) go last.
    """
    head: dict[str, Any] = {
        "version": REPORT_VERSION,
        "level": str(health.level),
        "reason": health.reason,
        "heartbeat": format_time(now),
        "bootID": context.boot_id,
        "recovery": str(health.recovery),
        "foundGPUs": health.found_gpus,
        "pollSeconds": context.poll_seconds,
        "heartbeatSeconds": context.heartbeat_seconds,
        "agent": context.agent_version,
    }
    if health.expected_gpus is not None:
        head["expectedGPUs"] = health.expected_gpus
    if health.driver_version:
        head["driver"] = health.driver_version
    if health.faults:
        head["faults"] = [_fault(f, brief=False) for f in health.faults]

    def encode(gpus: list[dict[str, Any]], omitted: int) -> str:
        body = {**head, "gpus": gpus}
        if omitted:
            body["omittedGPUs"] = omitted
        return json.dumps(body, separators=(",", ":"), sort_keys=False)

    full = [_gpu(g, brief=False) for g in health.gpus]
    text = encode(full, 0)
    if len(text.encode()) <= limit:
        return text
    brief = [_gpu(g, brief=True) for g in health.gpus]
    text = encode(brief, 0)
    if len(text.encode()) <= limit:
        return text
    # Most important first: GPUs with XIDs, then by severity.
    ranked = sorted(
        zip(health.gpus, brief, strict=True),
        key=lambda pair: (not pair[0].xids, -pair[0].level.rank, pair[0].index),
    )
    kept = [entry for gpu, entry in ranked if gpu.xids or gpu.level is not Level.OK]
    while kept:
        text = encode(kept, len(health.gpus) - len(kept))
        if len(text.encode()) <= limit:
            return text
        kept.pop()
    return encode([], len(health.gpus))


def memory_from_report(text: str | None, boot_id: str) -> AgentMemory:
    """The XIDs a previous agent on this boot remembered; nothing after a reboot, or when
    the annotation is absent or unreadable."""
    fresh = AgentMemory(boot_id=boot_id)
    if not text:
        return fresh
    try:
        body = json.loads(text)
    except ValueError:
        return fresh
    if not isinstance(body, dict) or body.get("bootID") != boot_id:
        return fresh
    memory = fresh
    for gpu in body.get("gpus") or []:
        if not isinstance(gpu, dict) or not isinstance(gpu.get("uuid"), str):
            continue
        records: list[XidRecord] = []
        for entry in gpu.get("xids") or []:
            try:
                records.append(
                    XidRecord(
                        xid=int(entry["xid"]),
                        count=int(entry.get("count", 1)),
                        first_at=parse_time(str(entry["first"])).timestamp(),
                        last_at=parse_time(str(entry["last"])).timestamp(),
                        gpu_instance_id=int(entry.get("gpuInstance", 0xFFFFFFFF)),
                        compute_instance_id=int(entry.get("computeInstance", 0xFFFFFFFF)),
                        double_bit_ecc=bool(entry.get("doubleBitEcc", False)),
                    )
                )
            except (KeyError, TypeError, ValueError):
                continue
        if records:
            memory = memory.with_gpu(gpu["uuid"], replace(GpuMemory(), xids=tuple(records)))
    return memory


def report_level(text: str | None) -> Level | None:
    """The level an annotation states, or None when absent or unreadable."""
    if not text:
        return None
    try:
        body = json.loads(text)
        return Level(body["level"])
    except (ValueError, KeyError, TypeError):
        return None


def summary_key(health: NodeHealth) -> tuple[Any, ...]:
    """What makes a report worth writing now, heartbeat aside: a change in any of it
    is published at once; otherwise the report is refreshed every heartbeat."""
    return (
        health.level,
        health.reason,
        health.message,
        health.recovery,
        health.found_gpus,
        tuple(
            (g.uuid, g.level, tuple((f.reason, f.level) for f in g.faults), g.unmonitored)
            for g in health.gpus
        ),
        tuple((g.uuid, tuple((x.key, x.count) for x in g.xids)) for g in health.gpus),
    )
