"""Pod status from process state, as the kubelet reports it."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from swarmops.testbed.procnode.status import (
    ContainerState,
    ContainerView,
    PodView,
    Running,
    Terminated,
    Waiting,
    container_status_json,
    pod_phase,
    pod_status,
)

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"


def view(name: str = "c", state: ContainerState | None = None, **kw: Any) -> ContainerView:
    return ContainerView(name, "redis:7", "procnode://redis", state or Running(T0), **kw)


def pod(
    *containers: ContainerView,
    policy: Any = "Always",
    init: tuple[ContainerView, ...] = (),
    gates: tuple[str, ...] = (),
) -> PodView:
    return PodView("127.77.0.1", "127.77.0.5", T0, policy, containers, init, gates)


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_running_and_ready() -> None:
    status = pod_status(pod(view(ready=True, started=True)), [], T1)
    assert status["phase"] == "Running"
    assert status["podIP"] == "127.77.0.5" and status["podIPs"] == [{"ip": "127.77.0.5"}]
    assert status["hostIP"] == "127.77.0.1"
    cond = conditions(status)
    assert {k: v["status"] for k, v in cond.items()} == {
        "PodScheduled": "True",
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }
    (container,) = status["containerStatuses"]
    assert container["state"] == {"running": {"startedAt": T0}}
    assert container["ready"] is True and container["restartCount"] == 0


def test_running_but_unready_names_the_container() -> None:
    cond = conditions(pod_status(pod(view("db"), view("side", ready=True)), [], T1))
    assert cond["Ready"]["status"] == "False"
    assert cond["Ready"]["reason"] == "ContainersNotReady"
    assert cond["Ready"]["message"] == "containers with unready status: [db]"


def test_transition_time_is_kept_while_status_is_unchanged() -> None:
    first = pod_status(pod(view(ready=True)), [], T0)
    again = pod_status(pod(view(ready=True)), first["conditions"], T1)
    assert conditions(again)["Ready"]["lastTransitionTime"] == T0
    flipped = pod_status(pod(view(ready=False)), again["conditions"], T1)
    assert conditions(flipped)["Ready"]["lastTransitionTime"] == T1


def test_other_writers_conditions_are_kept() -> None:
    scheduled = {"type": "PodScheduled", "status": "True", "lastTransitionTime": "x"}
    disruption = {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
    status = pod_status(pod(view(ready=True)), [scheduled, disruption], T1)
    cond = conditions(status)
    assert cond["PodScheduled"] == scheduled
    assert cond["DisruptionTarget"] == disruption


def test_readiness_gates() -> None:
    missing = pod_status(pod(view(ready=True), gates=("example.com/lb",)), [], T1)
    assert conditions(missing)["Ready"]["reason"] == "ReadinessGatesNotReady"
    gate = {"type": "example.com/lb", "status": "True"}
    assert (
        conditions(pod_status(pod(view(ready=True), gates=("example.com/lb",)), [gate], T1))[
            "Ready"
        ]["status"]
        == "True"
    )


def test_image_not_runnable_keeps_the_pod_pending() -> None:
    state = Waiting("ImageNotRunnable", "cannot run busybox")
    status = pod_status(pod(view(state=state)), [], T1)
    assert status["phase"] == "Pending"
    assert status["containerStatuses"][0]["state"] == {
        "waiting": {"reason": "ImageNotRunnable", "message": "cannot run busybox"}
    }


def test_crash_loop_is_running_phase_with_last_state() -> None:
    crashed = Terminated(1, "Error", T1, started_at=T0, container_id="procnode://42")
    container = view(
        state=Waiting("CrashLoopBackOff", "back-off"), last_state=crashed, restart_count=3
    )
    status = pod_status(pod(container), [], T1)
    assert status["phase"] == "Running"
    json = status["containerStatuses"][0]
    assert json["restartCount"] == 3
    assert json["lastState"]["terminated"]["exitCode"] == 1
    assert json["lastState"]["terminated"]["containerID"] == "procnode://42"


def test_terminal_phases_by_restart_policy() -> None:
    ok = view(state=Terminated(0, "Completed", T1))
    failed = view("d", state=Terminated(137, "Error", T1, signal=9))
    assert pod_phase(pod(ok, policy="Never")) == "Succeeded"
    assert pod_phase(pod(ok, policy="OnFailure")) == "Succeeded"
    assert pod_phase(pod(ok, failed, policy="Never")) == "Failed"
    assert pod_phase(pod(ok, failed, policy="OnFailure")) == "Running"
    assert pod_phase(pod(ok, policy="Always")) == "Running"
    completed = pod_status(pod(ok, policy="Never"), [], T1)
    assert conditions(completed)["Ready"]["reason"] == "PodCompleted"


def test_init_containers_gate_the_pod() -> None:
    running_init = view("init", state=Running(T0))
    app = view("app", state=Waiting("PodInitializing"))
    status = pod_status(pod(app, init=(running_init,)), [], T1)
    assert status["phase"] == "Pending"
    assert (
        conditions(status)["Initialized"]["message"] == "containers with incomplete status: [init]"
    )
    assert [c["name"] for c in status["initContainerStatuses"]] == ["init"]
    done = view("init", state=Terminated(0, "Completed", T1))
    assert pod_phase(pod(view("app"), init=(done,))) == "Running"
    failed = view("init", state=Terminated(2, "Error", T1))
    assert pod_phase(pod(app, init=(failed,), policy="Never")) == "Failed"
    assert pod_phase(pod(app, init=(failed,), policy="Always")) == "Pending"


def test_sidecar_counts_as_initialised_once_started() -> None:
    sidecar = view("proxy", state=Running(T0), started=True, sidecar=True)
    assert pod_phase(pod(view("app"), init=(sidecar,))) == "Running"
    unstarted = view("proxy", state=Running(T0), started=False, sidecar=True)
    assert pod_phase(pod(view("app"), init=(unstarted,))) == "Pending"


def test_terminated_json_has_signal_and_message() -> None:
    json = container_status_json(
        view(state=Terminated(143, "Error", T1, started_at=T0, signal=15, message="bye"))
    )
    assert json["state"]["terminated"] == {
        "exitCode": 143,
        "reason": "Error",
        "finishedAt": T1,
        "startedAt": T0,
        "signal": 15,
        "message": "bye",
    }


STATES = st.one_of(
    st.builds(
        Waiting, st.sampled_from(["ContainerCreating", "CrashLoopBackOff", "ImageNotRunnable"])
    ),
    st.builds(Running, st.just(T0)),
    st.builds(
        Terminated, st.integers(0, 255), st.sampled_from(["Error", "Completed"]), st.just(T1)
    ),
)


@given(
    st.lists(st.tuples(STATES, st.booleans(), st.booleans()), min_size=1, max_size=4),
    st.sampled_from(["Always", "OnFailure", "Never"]),
)
def test_ready_only_when_every_container_is_ready_and_the_pod_is_not_terminal(
    specs: list[tuple[ContainerState, bool, bool]], policy: Any
) -> None:
    containers = tuple(
        view(
            f"c{i}",
            state,
            ready=ready and isinstance(state, Running),
            last_state=Terminated(1, "Error", T1) if crashed else None,
        )
        for i, (state, ready, crashed) in enumerate(specs)
    )
    status = pod_status(pod(*containers, policy=policy), [], T1)
    ready = conditions(status)["Ready"]["status"] == "True"
    assert ready == (
        all(c.ready for c in containers) and status["phase"] not in ("Succeeded", "Failed")
    )
    assert status["phase"] in ("Pending", "Running", "Succeeded", "Failed")
    if any(isinstance(c.state, Running) for c in containers) and not any(
        isinstance(c.state, Waiting) and c.last_state is None for c in containers
    ):
        assert status["phase"] == "Running"
