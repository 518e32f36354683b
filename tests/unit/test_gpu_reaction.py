"""The operator's reaction to GPU reports: taints, labels, evictions, clearing, the breaker."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from swarmops.core.gpu import DEGRADED_TAINT, UNHEALTHY_TAINT, UNKNOWN_TAINT, GpuHealth
from swarmops.gpu.health import Level, Recovery
from swarmops.gpu.reaction import (
    MEMORY_ANNOTATION,
    AgentReport,
    GpuNodeState,
    NodeMemory,
    NodePlan,
    ReactionPolicy,
    breaker_allows,
    decide,
    observe_node,
    plan_fleet,
    taints_after,
)
from swarmops.gpu.report import REPORT_ANNOTATION

POLICY = ReactionPolicy(clean_reports=3, unknown_grace_s=120, max_quarantined_percent=50)
NOW = 1_800_000_000.0


def report(level: Level, heartbeat: float = NOW, recovery: Recovery = Recovery.NONE) -> AgentReport:
    return AgentReport(
        level=level,
        reason=f"GPU{level}",
        heartbeat=heartbeat,
        heartbeat_seconds=30,
        boot_id="boot-1",
        recovery=recovery,
    )


def node(level: Level | None, name: str = "gpu-0", **kwargs: Any) -> GpuNodeState:
    values: dict[str, Any] = {"name": name, "boot_id": "boot-1"}
    if level is not None:
        values["report"] = report(level)
    return GpuNodeState(**(values | kwargs))


def apply(state: GpuNodeState, plan: NodePlan) -> GpuNodeState:
    """The node after the plan was written (as the handler would)."""
    return replace(state, label=plan.label or state.label, taints=plan.taints, memory=plan.memory)


def test_without_a_report_nothing_changes() -> None:
    quarantined = node(None, taints=frozenset({UNHEALTHY_TAINT}), label="critical")
    plan = decide(quarantined, NOW, POLICY)
    assert (plan.label, plan.taints, plan.evict) == (None, quarantined.taints, False)
    assert not plan.changes(quarantined)


def test_a_taint_set_by_hand_is_never_lifted() -> None:
    by_hand = node(Level.OK, taints=frozenset({UNHEALTHY_TAINT}))
    plan = decide(by_hand, NOW, POLICY)
    assert plan.taints == {UNHEALTHY_TAINT}
    assert not plan.evict


def test_critical_taints_labels_and_evicts() -> None:
    plan = decide(node(Level.CRITICAL), NOW, POLICY)
    assert plan.taints == {UNHEALTHY_TAINT}
    assert (plan.label, plan.evict) == ("critical", True)
    assert (plan.memory.quarantine, plan.memory.fault_boot_id) == (GpuHealth.CRITICAL, "boot-1")
    assert [e.reason for e in plan.events] == ["GPUQuarantined"]


def test_degraded_taints_without_eviction() -> None:
    plan = decide(node(Level.DEGRADED), NOW, POLICY)
    assert (plan.taints, plan.label, plan.evict) == ({DEGRADED_TAINT}, "degraded", False)


def test_warn_is_a_label_and_one_event() -> None:
    first = decide(node(Level.WARN), NOW, POLICY)
    assert (first.taints, first.label, first.evict) == (frozenset(), "warn", False)
    assert [e.reason for e in first.events] == ["GPUWarning"]
    again = decide(apply(node(Level.WARN), first), NOW + 30, POLICY)
    assert again.events == ()


def test_healthy_and_unmonitored_nodes_stay_schedulable() -> None:
    for level, label in ((Level.OK, "ok"), (Level.UNMONITORED, "unmonitored")):
        plan = decide(node(level), NOW, POLICY)
        assert (plan.label, plan.taints, plan.events) == (label, frozenset(), ())


def test_unknown_waits_for_its_grace_period_then_taints_without_eviction() -> None:
    state = node(Level.UNKNOWN, label="ok")
    plan = decide(state, NOW, POLICY)
    assert (plan.taints, plan.label) == (frozenset(), None)  # label left as it was
    state = apply(state, plan)
    state = replace(state, report=report(Level.UNKNOWN, heartbeat=NOW + 119))
    assert decide(state, NOW + 119, POLICY).taints == frozenset()
    state = replace(state, report=report(Level.UNKNOWN, heartbeat=NOW + 120))
    late = decide(state, NOW + 120, POLICY)
    assert (late.taints, late.label, late.evict) == ({UNKNOWN_TAINT}, "unknown", False)


def test_a_stale_heartbeat_is_unknown() -> None:
    stale = node(None, report=report(Level.OK, heartbeat=NOW - 91))
    assert decide(stale, NOW, POLICY).level is Level.UNKNOWN
    assert decide(stale, NOW - 1, POLICY).level is Level.OK


def clean_reports(
    state: GpuNodeState, count: int, start: float, boot: str = "boot-1"
) -> GpuNodeState:
    for i in range(count):
        at = start + 30 * i
        state = replace(state, boot_id=boot, report=report(Level.OK, heartbeat=at))
        state = apply(state, decide(state, at, POLICY))
    return state


def test_a_fault_without_recovery_clears_after_n_clean_reports() -> None:
    state = apply(node(Level.DEGRADED), decide(node(Level.DEGRADED), NOW, POLICY))
    after_two = clean_reports(state, 2, NOW + 30)
    assert after_two.taints == {DEGRADED_TAINT}
    assert after_two.memory.clean == 2
    after_three = clean_reports(after_two, 1, NOW + 90)
    assert (after_three.taints, after_three.label) == (frozenset(), "ok")
    assert after_three.memory.quarantine is None


def test_a_report_counts_once_however_often_it_is_read() -> None:
    state = apply(node(Level.DEGRADED), decide(node(Level.DEGRADED), NOW, POLICY))
    state = replace(state, report=report(Level.OK, heartbeat=NOW + 30))
    for moment in (NOW + 31, NOW + 32, NOW + 33, NOW + 34):
        state = apply(state, decide(state, moment, POLICY))
    assert state.memory.clean == 1
    assert state.taints == {DEGRADED_TAINT}


def test_a_fault_that_needs_a_reboot_clears_only_after_the_boot_id_changes() -> None:
    faulty = node(None, report=report(Level.CRITICAL, recovery=Recovery.REBOOT))
    state = apply(faulty, decide(faulty, NOW, POLICY))
    same_boot = clean_reports(state, 10, NOW + 30)
    assert same_boot.taints == {UNHEALTHY_TAINT}  # clean, but not rebooted
    assert same_boot.memory.clean == 0  # and none of it counts
    after_two = clean_reports(same_boot, 2, NOW + 600, boot="boot-2")
    assert after_two.taints == {UNHEALTHY_TAINT}
    lifted = decide(replace(after_two, report=report(Level.OK, NOW + 660)), NOW + 660, POLICY)
    assert lifted.taints == frozenset()
    assert [e.reason for e in lifted.events] == ["GPUQuarantineLifted"]
    assert "rebooted" in lifted.events[0].message


def test_a_fault_during_recovery_starts_the_count_again() -> None:
    state = apply(node(Level.DEGRADED), decide(node(Level.DEGRADED), NOW, POLICY))
    state = clean_reports(state, 2, NOW + 30)
    state = replace(state, report=report(Level.DEGRADED, heartbeat=NOW + 100))
    state = apply(state, decide(state, NOW + 100, POLICY))
    assert state.memory.clean == 0
    assert clean_reports(state, 2, NOW + 130).taints == {DEGRADED_TAINT}


def test_escalation_is_immediate_and_there_is_no_silent_de_escalation() -> None:
    state = apply(node(Level.DEGRADED), decide(node(Level.DEGRADED), NOW, POLICY))
    state = replace(state, report=report(Level.CRITICAL, heartbeat=NOW + 30))
    state = apply(state, decide(state, NOW + 30, POLICY, breaker_open=True))  # no budget needed
    assert state.taints == {UNHEALTHY_TAINT}
    state = replace(state, report=report(Level.DEGRADED, heartbeat=NOW + 60))
    assert decide(state, NOW + 60, POLICY).taints == {UNHEALTHY_TAINT}


def test_the_breaker_holds_new_quarantines_back_and_keeps_the_label_soft() -> None:
    plan = decide(node(Level.CRITICAL), NOW, POLICY, breaker_open=True)
    assert (plan.taints, plan.evict, plan.blocked) == (frozenset(), False, True)
    assert plan.label == "warn"  # an excluding label would be a quarantine by another name
    assert [e.reason for e in plan.events] == ["GPUQuarantineHeld"]


def test_the_fleet_budget_goes_to_the_worst_nodes_first() -> None:
    nodes = [node(Level.DEGRADED, name=f"d{i}") for i in range(3)]
    nodes += [node(Level.CRITICAL, name=f"c{i}") for i in range(3)]
    nodes += [node(Level.OK, name=f"ok{i}") for i in range(4)]
    plans = {p.name: p for p in plan_fleet(nodes, NOW, POLICY)}  # 10 nodes: budget 5
    quarantined = sorted(name for name, p in plans.items() if p.taints)
    assert quarantined == ["c0", "c1", "c2", "d0", "d1"]
    assert plans["d2"].blocked


@given(
    st.lists(st.sampled_from(list(Level)), min_size=1, max_size=40),
    st.integers(0, 100),
    st.integers(0, 40),
)
def test_the_breaker_never_exceeds_its_budget(
    levels: list[Level], percent: int, recent: int
) -> None:
    policy = replace(POLICY, max_quarantined_percent=percent)
    already = [
        node(Level.CRITICAL, name=f"q{i}", memory=NodeMemory(GpuHealth.CRITICAL, since=NOW - 10))
        for i in range(min(recent, len(levels)))
    ]
    fresh = [node(level, name=f"n{i}") for i, level in enumerate(levels)]
    plans = plan_fleet([*already, *fresh], NOW, policy)
    new = sum(1 for p in plans if p.name.startswith("n") and p.memory.quarantine is not None)
    budget = max(1, (len(already) + len(fresh)) * percent // 100)
    assert new <= max(0, budget - len(already))
    assert all(p.taints == {UNHEALTHY_TAINT} for p in plans if p.name.startswith("q"))


def test_the_breaker_window() -> None:
    assert breaker_allows(0, 1, POLICY)  # one node can always be quarantined
    assert breaker_allows(4, 10, POLICY)
    assert not breaker_allows(5, 10, POLICY)


taint_keys = st.sampled_from(["a.example/x", "node.kubernetes.io/unreachable", "nvidia.com/gpu"])
our_keys = st.sampled_from([UNHEALTHY_TAINT, DEGRADED_TAINT, UNKNOWN_TAINT])


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "key": st.one_of(taint_keys, our_keys),
                "effect": st.sampled_from(["NoSchedule", "NoExecute"]),
            }
        ),
        max_size=6,
    ),
    st.frozensets(our_keys),
)
def test_only_our_taints_change(existing: list[dict[str, Any]], ours: frozenset[str]) -> None:
    result = taints_after(existing, ours)
    foreign = [
        t for t in existing if t["key"] not in {UNHEALTHY_TAINT, DEGRADED_TAINT, UNKNOWN_TAINT}
    ]
    assert [t for t in result if t in foreign] == foreign
    assert {t["key"] for t in result} - {t["key"] for t in foreign} == ours


@given(
    st.builds(
        NodeMemory,
        quarantine=st.one_of(st.none(), st.sampled_from([GpuHealth.CRITICAL, GpuHealth.DEGRADED])),
        since=st.floats(0, 2e9),
        fault_boot_id=st.text(max_size=20),
        recovery=st.sampled_from(list(Recovery)),
        clean=st.integers(0, 100),
        last_heartbeat=st.floats(0, 2e9),
        unknown_since=st.one_of(st.none(), st.floats(0, 2e9)),
        level=st.one_of(st.none(), st.sampled_from(list(Level))),
    )
)
def test_the_memory_round_trips_through_its_annotation(memory: NodeMemory) -> None:
    assert NodeMemory.parse(memory.to_json()) == memory


def test_a_node_is_read_from_its_body() -> None:
    body = {
        "metadata": {
            "name": "gpu-0",
            "uid": "u-1",
            "labels": {"swarmops.dev/gpu-health": "critical"},
            "annotations": {
                REPORT_ANNOTATION: json.dumps(
                    {"level": "critical", "heartbeat": "2027-01-15T08:00:00Z", "recovery": "reboot"}
                ),
                MEMORY_ANNOTATION: NodeMemory(GpuHealth.CRITICAL, since=NOW).to_json(),
            },
        },
        "spec": {"taints": [{"key": UNHEALTHY_TAINT}, {"key": "nvidia.com/gpu"}]},
        "status": {"nodeInfo": {"bootID": "boot-9"}},
    }
    state = observe_node(body)
    assert (state.name, state.uid, state.boot_id, state.label) == (
        "gpu-0",
        "u-1",
        "boot-9",
        "critical",
    )
    assert state.taints == {UNHEALTHY_TAINT}
    assert state.report is not None
    assert (state.report.level, state.report.heartbeat, state.report.recovery) == (
        Level.CRITICAL,
        NOW,
        Recovery.REBOOT,
    )
    assert state.memory.quarantine is GpuHealth.CRITICAL
    assert observe_node({"metadata": {"annotations": {REPORT_ANNOTATION: "{"}}}).report is None
