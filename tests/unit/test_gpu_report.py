"""What the GPU agent publishes: the node condition, the bounded annotation, and the
memory a restarted agent takes back from it; and the agent's settings."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmops.cli import build_parser, main
from swarmops.gpu.command import settings_from_args
from swarmops.gpu.health import (
    AgentMemory,
    GpuReading,
    Level,
    NodeReading,
    Policy,
    RemappedRows,
    Unsupported,
    XidEvent,
    assess_node,
    record_event,
)
from swarmops.gpu.report import (
    CONDITION_TYPE,
    ReportContext,
    condition_changed,
    condition_status,
    find_condition,
    memory_from_report,
    node_condition,
    render_report,
    report_level,
    summary_key,
)
from swarmops.gpu.settings import load_agent_settings
from swarmops.settings import SettingsError

NOW = 1_800_000_000.0
MOMENT = datetime.datetime.fromtimestamp(NOW, datetime.UTC)
CONTEXT = ReportContext(
    boot_id="boot-1", agent_version="0.1.0", poll_seconds=10, heartbeat_seconds=30
)


def healthy(index: int) -> GpuReading:
    return GpuReading(
        index=index,
        uuid=f"GPU-{index:04d}",
        name="NVIDIA H100 80GB HBM3",
        temperature_c=40,
        slowdown_c=87,
        shutdown_c=92,
        ecc_uncorrected_volatile=0,
        remapped_rows=RemappedRows(0, 0, pending=False, failure=False),
        retired_pages_pending=Unsupported(),
        clock_event_reasons=0,
        pcie_width=16,
        pcie_max_width=16,
        nvlink_active=((0, True),),
        recovery_action=0,
        events=0xA,
    )


def node(count: int = 2, memory: AgentMemory | None = None, **kwargs: Any) -> Any:
    reading = NodeReading(driver_version="570", gpus=tuple(healthy(i) for i in range(count)))
    return assess_node(reading, memory or AgentMemory(), Policy(), NOW, **kwargs)


# --- the condition ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "status"),
    [
        (Level.OK, "True"),
        (Level.WARN, "True"),
        (Level.UNMONITORED, "True"),  # nothing known to be wrong: not unhealthy
        (Level.DEGRADED, "False"),
        (Level.CRITICAL, "False"),
        (Level.UNKNOWN, "Unknown"),
    ],
)
def test_condition_status(level: Level, status: str) -> None:
    assert condition_status(level) == status


def test_the_transition_time_moves_only_with_the_status() -> None:
    first = node_condition(node(), None, MOMENT)
    assert first["type"] == CONDITION_TYPE
    assert (first["status"], first["reason"]) == ("True", "GPUsHealthy")
    later = MOMENT + datetime.timedelta(minutes=5)
    same = node_condition(node(), first, later)
    assert same["lastTransitionTime"] == first["lastTransitionTime"]
    assert same["lastHeartbeatTime"] != first["lastHeartbeatTime"]
    assert not condition_changed(same, first)
    memory = record_event(AgentMemory(), XidEvent("GPU-0001", 79, at=NOW))
    flipped = node_condition(node(memory=memory), same, later)
    assert (flipped["status"], flipped["reason"]) == ("False", "GPUCritical")
    assert flipped["lastTransitionTime"] == "2027-01-15T08:05:00Z"
    assert condition_changed(flipped, same)
    assert find_condition({"status": {"conditions": [{"type": "Ready"}, flipped]}}) == flipped


# --- the annotation ----------------------------------------------------------------------------


def test_the_report_has_the_level_heartbeat_boot_and_gpus() -> None:
    memory = record_event(AgentMemory(), XidEvent("GPU-0001", 48, at=NOW))
    report = json.loads(render_report(node(memory=memory, expected_gpus=2), CONTEXT, MOMENT))
    assert report["level"] == "critical"
    assert report["heartbeat"] == "2027-01-15T08:00:00Z"
    assert report["bootID"] == "boot-1"
    assert report["recovery"] == "gpu-reset"
    assert (report["foundGPUs"], report["expectedGPUs"]) == (2, 2)
    gpu = report["gpus"][1]
    assert (gpu["uuid"], gpu["level"]) == ("GPU-0001", "critical")
    assert gpu["faults"][0]["reason"] == "Xid48"
    assert gpu["xids"][0]["xid"] == 48
    assert report_level(json.dumps(report)) is Level.CRITICAL
    assert report_level("not json") is None


def test_xids_survive_an_agent_restart_on_the_same_boot_only() -> None:
    memory = record_event(AgentMemory(), XidEvent("GPU-0001", 79, at=NOW, gpu_instance_id=3))
    memory = record_event(memory, XidEvent("GPU-0001", 79, at=NOW + 5, gpu_instance_id=3))
    text = render_report(node(memory=memory), CONTEXT, MOMENT)
    restored = memory_from_report(text, "boot-1")
    (record,) = restored.of("GPU-0001").xids
    assert (record.xid, record.count, record.gpu_instance_id) == (79, 2, 3)
    assert (record.first_at, record.last_at) == (NOW, NOW + 5)
    assert node(memory=restored).level is Level.CRITICAL
    assert memory_from_report(text, "boot-2") == AgentMemory(boot_id="boot-2")
    assert memory_from_report(None, "b") == AgentMemory(boot_id="b")
    assert memory_from_report("{broken", "b") == AgentMemory(boot_id="b")


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 200), st.lists(st.tuples(st.integers(0, 199), st.integers(1, 200)), max_size=60)
)
def test_the_report_stays_within_its_budget(count: int, xids: list[tuple[int, int]]) -> None:
    memory = AgentMemory()
    for gpu, xid in xids:
        if gpu < count:
            memory = record_event(memory, XidEvent(f"GPU-{gpu:04d}", xid, at=NOW))
    health = node(count, memory=memory)
    limit = 4096
    text = render_report(health, CONTEXT, MOMENT, limit=limit)
    assert len(text.encode()) <= limit
    report = json.loads(text)
    assert report["level"] == str(health.level)
    listed = {gpu["uuid"] for gpu in report["gpus"]}
    assert len(listed) + report.get("omittedGPUs", 0) == count
    # The worst GPUs are the last to go.
    if report.get("omittedGPUs"):
        kept_worst = max((Level(g["level"]).rank for g in report["gpus"]), default=-1)
        dropped = [g for g in health.gpus if g.uuid not in listed]
        assert all(g.level.rank <= kept_worst for g in dropped) or not report["gpus"]


def test_the_summary_ignores_time_but_not_new_faults() -> None:
    assert summary_key(node()) == summary_key(node())
    memory = record_event(AgentMemory(), XidEvent("GPU-0000", 94, at=NOW))
    assert summary_key(node(memory=memory)) != summary_key(node())


# --- settings -------------------------------------------------------------------------------------


def test_the_node_name_comes_from_the_downward_api() -> None:
    loaded = load_agent_settings({}, {"NODE_NAME": "gpu-7"})
    assert loaded.node_name == "gpu-7"
    assert (loaded.poll_interval, loaded.heartbeat_interval, loaded.metrics_port) == (10, 30, 9402)
    flagged = load_agent_settings({"node_name": "a"}, {"NODE_NAME": "b", "SWARMOPS_NODE_NAME": "c"})
    assert flagged.node_name == "a"
    assert load_agent_settings({}, {"NODE_NAME": "b", "SWARMOPS_NODE_NAME": "c"}).node_name == "c"


def test_the_xid_table_from_the_environment() -> None:
    loaded = load_agent_settings(
        {}, {"NODE_NAME": "n", "SWARMOPS_XID": "94=critical/reboot, 31=warn"}
    )
    policy = loaded.policy()
    assert policy.rule_for(94).level is Level.CRITICAL
    assert policy.rule_for(31).level is Level.WARN
    assert policy.rule_for(79).level is Level.CRITICAL  # the defaults stay


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({}, {}, "no node name"),
        ({"xid": ["48=fatal"]}, {"NODE_NAME": "n"}, "invalid --xid='48=fatal'"),
        ({}, {"NODE_NAME": "n", "SWARMOPS_POLL_INTERVAL": "0"}, "SWARMOPS_POLL_INTERVAL"),
        ({"poll_interval": "60"}, {"NODE_NAME": "n"}, "shorter than the poll interval"),
        ({"bind_address": "localhost"}, {"NODE_NAME": "n"}, "not an IP address"),
    ],
)
def test_bad_settings_are_one_line(
    flags: dict[str, Any], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message.replace("[", r"\[")) as caught:
        load_agent_settings(flags, env)
    assert "\n" not in str(caught.value)


# --- the command ----------------------------------------------------------------------------------


def test_gpu_agent_flags_map_onto_settings() -> None:
    args = build_parser().parse_args(
        [
            "gpu-agent",
            "--node-name",
            "n1",
            "--poll-interval",
            "5",
            "--xid",
            "94=warn",
            "--xid",
            "31=ignore",
        ]
    )
    loaded = settings_from_args(args, {})
    assert (loaded.node_name, loaded.poll_interval, loaded.xid) == (
        "n1",
        5.0,
        ("94=warn", "31=ignore"),
    )


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["gpu-agent"], {}, "no node name"),
        (["gpu-agent", "--xid", "13=sometimes"], {"NODE_NAME": "n"}, "invalid --xid"),
        (
            ["gpu-agent", "--kubeconfig", "/nonexistent"],
            {"NODE_NAME": "n"},
            "cannot read kubeconfig",
        ),
    ],
)
def test_gpu_agent_errors_exit_2_with_one_line(
    argv: list[str], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, env) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
