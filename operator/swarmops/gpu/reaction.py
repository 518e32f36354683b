"""The operator's reaction to what GPU agents publish: pure decisions, per node and fleet.

For each GPU node the operator reads the agent's report (annotation, from
`swarmops.gpu.report`), the node's BootID and its own memory of the node (annotation
`swarmops.dev/gpu-quarantine`), and decides:

* CRITICAL: taint `swarmops.dev/gpu-unhealthy:NoSchedule`, label `critical`, and evict
  agent pods there through the Eviction API (PDBs respected) so pools replace them
  elsewhere.
* DEGRADED: taint `swarmops.dev/gpu-degraded:NoSchedule`, label `degraded`; running
  agents finish.
* WARN: label `warn` (new agents prefer other nodes) and an Event; no taint.
* UNKNOWN (NVML failing, or the agent's heartbeat stale) past a grace period: taint
  `swarmops.dev/gpu-unknown:NoSchedule`, label `unknown`; no eviction.
* Back to clean: the quarantine is lifted only after `clean_reports` consecutive clean
  reports (by heartbeat), and, when a fault needed a GPU reset or a reboot, only once the
  node's BootID differs from the one it had when the fault was seen (GKE's rule; a
  reset without a reboot is not visible, so it counts as not done).
* A circuit breaker: new quarantines stop once `max_quarantined_percent` of GPU nodes
  were quarantined within `window` (at least one node may always be), so a bad driver
  rollout or a broken agent cannot drain the fleet (NVSentinel's guard).
* Dry run: the same decisions, logged, counted and told in Events, but no taint, label
  or eviction is written.

Only SwarmOps' own taint keys are ever added or removed; nobody else's.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from swarmops.core.gpu import (
    DEGRADED_TAINT,
    GPU_HEALTH_LABEL,
    SWARMOPS_GPU_TAINTS,
    UNHEALTHY_TAINT,
    UNKNOWN_TAINT,
    GpuHealth,
)
from swarmops.gpu.health import Level, Recovery
from swarmops.gpu.report import REPORT_ANNOTATION, parse_time

MEMORY_ANNOTATION: Final = "swarmops.dev/gpu-quarantine"
TAINT_EFFECT: Final = "NoSchedule"

#: The taint for each quarantine level.
TAINT_OF: Final[Mapping[GpuHealth, str]] = {
    GpuHealth.CRITICAL: UNHEALTHY_TAINT,
    GpuHealth.DEGRADED: DEGRADED_TAINT,
    GpuHealth.UNKNOWN: UNKNOWN_TAINT,
}
#: Which quarantine wins when several apply (escalation is immediate).
_QUARANTINE_RANK: Final = {GpuHealth.UNKNOWN: 1, GpuHealth.DEGRADED: 2, GpuHealth.CRITICAL: 3}
CLEAN_LEVELS: Final = frozenset({Level.OK, Level.WARN, Level.UNMONITORED})
#: The label of an unquarantined node: what the scheduling side reads (core.gpu).
_LABEL_OF: Final = {
    Level.OK: GpuHealth.OK,
    Level.UNMONITORED: GpuHealth.UNMONITORED,  # not known to be unhealthy: schedulable
    Level.WARN: GpuHealth.WARN,
    # Only while the circuit breaker holds a quarantine back: avoided, not excluded (an
    # excluding label would quarantine the node through the back door).
    Level.DEGRADED: GpuHealth.WARN,
    Level.CRITICAL: GpuHealth.WARN,
}


class Mode(enum.StrEnum):
    ON = "on"
    DRY_RUN = "dry-run"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class ReactionPolicy:
    mode: Mode = Mode.ON
    #: Consecutive clean reports (distinct heartbeats) before a quarantine is lifted.
    clean_reports: int = 3
    #: How long UNKNOWN may last before the node is tainted.
    unknown_grace_s: float = 120.0
    #: A report older than this many of its heartbeat intervals is stale: UNKNOWN.
    stale_heartbeats: float = 3.0
    #: At most this share of GPU nodes may be newly quarantined within `window_s`.
    max_quarantined_percent: float = 50.0
    window_s: float = 300.0


# --- Inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentReport:
    """The parts of an agent's report the operator acts on."""

    level: Level
    reason: str
    heartbeat: float
    heartbeat_seconds: float
    boot_id: str
    recovery: Recovery

    @classmethod
    def parse(cls, text: str | None) -> AgentReport | None:
        """None when absent or unreadable: then there is no agent to believe."""
        if not text:
            return None
        try:
            body = json.loads(text)
            return cls(
                level=Level(body["level"]),
                reason=str(body.get("reason", "")),
                heartbeat=parse_time(str(body["heartbeat"])).timestamp(),
                heartbeat_seconds=float(body.get("heartbeatSeconds", 30)),
                boot_id=str(body.get("bootID", "")),
                recovery=Recovery(body.get("recovery", "none")),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True, slots=True)
class NodeMemory:
    """What the operator remembers of a node, kept on the node itself (annotation), so a
    restarted operator picks up where it was: progress lives in the cluster."""

    quarantine: GpuHealth | None = None  # the level whose taint is on (or would be: dry run)
    since: float = 0.0  # when the quarantine began
    fault_boot_id: str = ""  # the node's BootID when the fault was seen
    recovery: Recovery = Recovery.NONE  # the worst recovery its faults asked for
    clean: int = 0  # consecutive clean reports since the fault
    last_heartbeat: float = 0.0  # the last report counted (a report counts once)
    unknown_since: float | None = None
    level: Level | None = None  # the level last seen, so an Event says each change once

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "quarantine": str(self.quarantine) if self.quarantine else None,
            "since": self.since,
            "faultBootID": self.fault_boot_id,
            "recovery": str(self.recovery),
            "clean": self.clean,
            "lastHeartbeat": self.last_heartbeat,
            "unknownSince": self.unknown_since,
            "level": str(self.level) if self.level else None,
        }
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str | None) -> NodeMemory:
        if not text:
            return cls()
        try:
            body = json.loads(text)
            quarantine = body.get("quarantine")
            unknown_since = body.get("unknownSince")
            level = body.get("level")
            return cls(
                quarantine=GpuHealth(quarantine) if quarantine else None,
                since=float(body.get("since", 0)),
                fault_boot_id=str(body.get("faultBootID", "")),
                recovery=Recovery(body.get("recovery", "none")),
                clean=int(body.get("clean", 0)),
                last_heartbeat=float(body.get("lastHeartbeat", 0)),
                unknown_since=float(unknown_since) if unknown_since is not None else None,
                level=Level(level) if level else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return cls()


@dataclass(frozen=True, slots=True)
class GpuNodeState:
    """One GPU node as the reaction sees it."""

    name: str
    uid: str = ""
    boot_id: str = ""
    label: str | None = None  # the current swarmops.dev/gpu-health label
    taints: frozenset[str] = frozenset()  # SwarmOps taint keys on the node
    report: AgentReport | None = None
    memory: NodeMemory = field(default_factory=NodeMemory)
    # For the write: the version it was read at, and what a JSON patch must know.
    resource_version: str = ""
    all_taints: tuple[Mapping[str, Any], ...] = ()
    has_labels: bool = False
    has_annotations: bool = False


def observe_node(body: Mapping[str, Any]) -> GpuNodeState:
    metadata = body.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    taints = (body.get("spec") or {}).get("taints") or []
    return GpuNodeState(
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        boot_id=str(((body.get("status") or {}).get("nodeInfo") or {}).get("bootID") or ""),
        label=(metadata.get("labels") or {}).get(GPU_HEALTH_LABEL),
        taints=frozenset(
            str(t.get("key"))
            for t in taints
            if isinstance(t, Mapping) and t.get("key") in SWARMOPS_GPU_TAINTS
        ),
        report=AgentReport.parse(annotations.get(REPORT_ANNOTATION)),
        memory=NodeMemory.parse(annotations.get(MEMORY_ANNOTATION)),
        resource_version=str(metadata.get("resourceVersion", "")),
        all_taints=tuple(dict(t) for t in taints if isinstance(t, Mapping)),
        has_labels=metadata.get("labels") is not None,
        has_annotations=metadata.get("annotations") is not None,
    )


# --- Decisions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeEvent:
    warning: bool
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class NodePlan:
    """What the node should carry. `label` None: leave the label as it is."""

    name: str
    level: Level | None  # what the agent says (UNKNOWN when its heartbeat is stale)
    label: str | None
    taints: frozenset[str]
    evict: bool
    memory: NodeMemory
    events: tuple[NodeEvent, ...] = ()
    blocked: bool = False  # the circuit breaker held back a quarantine

    def changes(self, node: GpuNodeState) -> bool:
        return (
            (self.label is not None and self.label != node.label)
            or self.taints != node.taints
            or self.memory != node.memory
        )


def observed_level(report: AgentReport | None, now: float, policy: ReactionPolicy) -> Level | None:
    """What the agent says, UNKNOWN once its heartbeat is stale; None without an agent."""
    if report is None:
        return None
    if now - report.heartbeat > policy.stale_heartbeats * report.heartbeat_seconds:
        return Level.UNKNOWN
    return report.level


def _quarantine_for(level: Level, unknown_for: float, policy: ReactionPolicy) -> GpuHealth | None:
    if level is Level.CRITICAL:
        return GpuHealth.CRITICAL
    if level is Level.DEGRADED:
        return GpuHealth.DEGRADED
    if level is Level.UNKNOWN and unknown_for >= policy.unknown_grace_s:
        return GpuHealth.UNKNOWN
    return None


def recent_quarantines(nodes: Iterable[GpuNodeState], now: float, policy: ReactionPolicy) -> int:
    """Nodes whose quarantine began within the breaker's window."""
    return sum(
        1
        for node in nodes
        if node.memory.quarantine is not None and now - node.memory.since < policy.window_s
    )


def breaker_allows(started_recently: int, gpu_nodes: int, policy: ReactionPolicy) -> bool:
    """Whether one more quarantine stays within the breaker's budget (at least one node)."""
    budget = max(1, math.floor(gpu_nodes * policy.max_quarantined_percent / 100))
    return started_recently < budget


def decide(
    node: GpuNodeState,
    now: float,
    policy: ReactionPolicy,
    *,
    breaker_open: bool = False,
) -> NodePlan:
    """The plan for one node. `breaker_open`: no new quarantine may begin now."""
    level = observed_level(node.report, now, policy)
    memory = node.memory
    if level is None:
        # No agent report: nothing to believe, nothing to change (an uninstalled agent
        # must not lift a quarantine it never saw recover).
        return NodePlan(node.name, None, None, node.taints, False, memory)

    unknown_since = (memory.unknown_since or now) if level is Level.UNKNOWN else None
    wanted = _quarantine_for(level, now - (unknown_since or now), policy)
    events: list[NodeEvent] = []
    report = node.report
    assert report is not None
    blocked = False
    current = memory.quarantine

    if current is None:
        if wanted is not None and breaker_open:
            blocked = True
            events.append(
                NodeEvent(
                    True,
                    "GPUQuarantineHeld",
                    f"GPU health {level}: not quarantined, the circuit breaker is open "
                    f"(more than {policy.max_quarantined_percent:g}% of GPU nodes quarantined "
                    f"within {policy.window_s:g}s)",
                )
            )
            wanted = None
        if wanted is None:
            memory = replace(memory, unknown_since=unknown_since, clean=0)
        else:
            memory = NodeMemory(
                quarantine=wanted,
                since=now,
                fault_boot_id=node.boot_id,
                recovery=report.recovery,
                clean=0,
                last_heartbeat=report.heartbeat,
                unknown_since=unknown_since,
            )
            events.append(
                NodeEvent(
                    True,
                    "GPUQuarantined",
                    f"GPU health {level} ({report.reason}): tainted {TAINT_OF[wanted]}"
                    + (", evicting agent pods" if wanted is GpuHealth.CRITICAL else ""),
                )
            )
    else:
        memory = _while_quarantined(
            memory,
            node,
            level=level,
            wanted=wanted,
            unknown_since=unknown_since,
            report=report,
            policy=policy,
        )
        if memory.quarantine is None:
            events.append(
                NodeEvent(
                    False,
                    "GPUQuarantineLifted",
                    f"GPU health {level} for {policy.clean_reports} reports"
                    + (
                        f" and the node rebooted (boot {node.boot_id})"
                        if node.memory.recovery is not Recovery.NONE
                        else ""
                    )
                    + f": removed {TAINT_OF[current]}",
                )
            )
        elif memory.quarantine is not current:
            events.append(
                NodeEvent(
                    True,
                    "GPUQuarantined",
                    f"GPU health {level} ({report.reason}): tainted {TAINT_OF[memory.quarantine]}",
                )
            )

    quarantine = memory.quarantine
    # Only a taint this operator put on (its memory says so) is ever taken off: one a
    # person set by hand, with our key, stays.
    taints = node.taints - ({TAINT_OF[current]} if current is not None else set())
    label: str | None
    if quarantine is not None:
        label = str(quarantine)
        taints |= {TAINT_OF[quarantine]}
    else:
        # UNKNOWN within its grace period leaves the label as it was.
        label = None if level is Level.UNKNOWN else str(_LABEL_OF[level])
        if level is Level.WARN and node.memory.level is not Level.WARN:
            events.append(
                NodeEvent(True, "GPUWarning", f"GPU health warn ({report.reason}): no taint")
            )
    memory = replace(memory, level=level)
    return NodePlan(
        name=node.name,
        level=level,
        label=label,
        taints=taints,
        evict=quarantine is GpuHealth.CRITICAL,
        memory=memory,
        events=tuple(events),
        blocked=blocked,
    )


def _while_quarantined(
    memory: NodeMemory,
    node: GpuNodeState,
    *,
    level: Level,
    wanted: GpuHealth | None,
    unknown_since: float | None,
    report: AgentReport,
    policy: ReactionPolicy,
) -> NodeMemory:
    assert memory.quarantine is not None
    if level not in CLEAN_LEVELS:
        # Still (or again) faulty: escalate at once, never de-escalate without recovering.
        quarantine = memory.quarantine
        if wanted is not None and _QUARANTINE_RANK[wanted] > _QUARANTINE_RANK[quarantine]:
            quarantine = wanted
        recovery = max(memory.recovery, report.recovery, key=lambda r: r.rank)
        return replace(
            memory,
            quarantine=quarantine,
            recovery=recovery,
            clean=0,
            last_heartbeat=report.heartbeat,
            unknown_since=unknown_since,
        )
    rebooted = bool(node.boot_id) and node.boot_id != memory.fault_boot_id
    recovered = memory.recovery is Recovery.NONE or rebooted
    clean = memory.clean
    if not recovered:
        clean = 0  # clean reports count only once the reset or reboot happened
    elif report.heartbeat > memory.last_heartbeat:
        clean += 1  # each report counts once, however often the operator looks
    if clean >= policy.clean_reports:
        return NodeMemory()
    return replace(memory, clean=clean, last_heartbeat=report.heartbeat, unknown_since=None)


def plan_fleet(nodes: Iterable[GpuNodeState], now: float, policy: ReactionPolicy) -> list[NodePlan]:
    """Plans for every GPU node, the circuit breaker applied across them: new quarantines
    are granted in order of severity (critical first) while the budget lasts."""
    states = list(nodes)
    started = recent_quarantines(states, now, policy)
    plans: dict[str, NodePlan] = {}
    # Nodes already quarantined (or not asking to be) need no budget.
    candidates: list[tuple[int, GpuNodeState]] = []
    for node in states:
        plan = decide(node, now, policy)
        if node.memory.quarantine is None and plan.memory.quarantine is not None:
            candidates.append((_QUARANTINE_RANK[plan.memory.quarantine], node))
        else:
            plans[node.name] = plan
    for _, node in sorted(candidates, key=lambda item: (-item[0], item[1].name)):
        allowed = breaker_allows(started, len(states), policy)
        plans[node.name] = decide(node, now, policy, breaker_open=not allowed)
        if allowed:
            started += 1
    return [plans[node.name] for node in states]


# --- Writes -----------------------------------------------------------------------------------


def taints_after(
    existing: Iterable[Mapping[str, Any]], ours: frozenset[str]
) -> list[dict[str, Any]]:
    """The node's taints with ours set to `ours`: every other taint kept as it was."""
    kept = [dict(t) for t in existing if t.get("key") not in SWARMOPS_GPU_TAINTS]
    present = {str(t.get("key")): dict(t) for t in existing if t.get("key") in SWARMOPS_GPU_TAINTS}
    for key in sorted(ours):
        kept.append(present.get(key) or {"key": key, "value": "true", "effect": TAINT_EFFECT})
    return kept


def node_patch(node: GpuNodeState, plan: NodePlan) -> list[dict[str, Any]]:
    """A JSON patch that writes `plan` onto the node as it was read: it fails (and is
    retried from a fresh read) if the node changed meanwhile, so nobody's taint is lost."""
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": node.resource_version}
    ]
    if not node.has_annotations:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    ops.append(
        {
            "op": "add",
            "path": "/metadata/annotations/" + _pointer(MEMORY_ANNOTATION),
            "value": plan.memory.to_json(),
        }
    )
    if plan.label is not None and plan.label != node.label:
        if not node.has_labels:
            ops.append({"op": "add", "path": "/metadata/labels", "value": {}})
        label_path = "/metadata/labels/" + _pointer(GPU_HEALTH_LABEL)
        ops.append({"op": "add", "path": label_path, "value": plan.label})
    if plan.taints != node.taints:
        taints = taints_after(node.all_taints, plan.taints)
        ops.append({"op": "add", "path": "/spec/taints", "value": taints})
    return ops


def _pointer(key: str) -> str:
    """A map key as a JSON pointer segment (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")
