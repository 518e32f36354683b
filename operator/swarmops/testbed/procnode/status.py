"""Pod status from the state of a pod's processes, as the kubelet would report it.

Pure: `pod_status` takes a `PodView` (what the supervisor knows) and the pod's
current conditions, and returns the ``status`` object to send.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from swarmops.testbed.procnode.model import RestartPolicy

# Conditions this node writes; any other type on the pod belongs to someone else
# (PodScheduled to the scheduler, DisruptionTarget, readiness gates) and is kept.
OWN_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with second precision, as metav1.Time serialises."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str | None = None


@dataclass(frozen=True)
class Running:
    started_at: str


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    finished_at: str
    started_at: str | None = None
    signal: int | None = None
    message: str | None = None
    container_id: str | None = None


ContainerState = Waiting | Running | Terminated


@dataclass(frozen=True)
class ContainerView:
    name: str
    image: str
    image_id: str
    state: ContainerState
    last_state: Terminated | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    container_id: str | None = None
    # Init containers only: a restartable (sidecar) init container.
    sidecar: bool = False


@dataclass(frozen=True)
class PodView:
    host_ip: str
    pod_ip: str | None
    start_time: str
    restart_policy: RestartPolicy
    containers: tuple[ContainerView, ...]
    init_containers: tuple[ContainerView, ...] = ()
    readiness_gates: tuple[str, ...] = ()


def exit_reason(exit_code: int) -> str:
    return "Completed" if exit_code == 0 else "Error"


def _state_json(state: ContainerState) -> dict[str, Any]:
    if isinstance(state, Waiting):
        waiting: dict[str, Any] = {"reason": state.reason}
        if state.message:
            waiting["message"] = state.message
        return {"waiting": waiting}
    if isinstance(state, Running):
        return {"running": {"startedAt": state.started_at}}
    terminated: dict[str, Any] = {
        "exitCode": state.exit_code,
        "reason": state.reason,
        "finishedAt": state.finished_at,
    }
    if state.started_at is not None:
        terminated["startedAt"] = state.started_at
    if state.signal is not None:
        terminated["signal"] = state.signal
    if state.message:
        terminated["message"] = state.message
    if state.container_id is not None:
        terminated["containerID"] = state.container_id
    return {"terminated": terminated}


def container_status_json(view: ContainerView) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": view.name,
        "image": view.image,
        "imageID": view.image_id,
        "ready": view.ready,
        "restartCount": view.restart_count,
        "started": view.started,
        "state": _state_json(view.state),
        "lastState": {} if view.last_state is None else _state_json(view.last_state),
    }
    if view.container_id is not None:
        status["containerID"] = view.container_id
    return status


def _init_done(view: ContainerView) -> bool:
    if view.sidecar:
        return view.started and isinstance(view.state, Running)
    return isinstance(view.state, Terminated) and view.state.exit_code == 0


def initialized(pod: PodView) -> bool:
    return all(_init_done(c) for c in pod.init_containers)


def pod_phase(pod: PodView) -> str:
    """The kubelet's getPhase: Pending until initialised and every container has
    started once; then Running while any runs or will restart; Succeeded or Failed
    when all stopped for good."""
    if not initialized(pod):
        failed_init = any(
            not c.sidecar and isinstance(c.state, Terminated) and c.state.exit_code != 0
            for c in pod.init_containers
        )
        if failed_init and pod.restart_policy == "Never":
            return "Failed"
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for container in pod.containers:
        state = container.state
        if isinstance(state, Running):
            running += 1
        elif isinstance(state, Terminated):
            stopped += 1
            succeeded += state.exit_code == 0
        elif container.last_state is not None:
            stopped += 1
            succeeded += container.last_state.exit_code == 0
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if not stopped:
        return "Pending"
    if pod.restart_policy == "Always":
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    if pod.restart_policy == "Never":
        return "Failed"
    return "Running"


def _condition(
    kind: str,
    ok: bool,
    previous: Mapping[str, Mapping[str, Any]],
    now: str,
    *,
    reason: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = previous.get(kind)
    transition = now
    if before is not None and before.get("status") == status and before.get("lastTransitionTime"):
        transition = str(before["lastTransitionTime"])
    condition: dict[str, Any] = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": transition,
    }
    if not ok and reason:
        condition["reason"] = reason
        if message:
            condition["message"] = message
    return condition


def _names(views: Sequence[ContainerView]) -> str:
    return "[" + " ".join(v.name for v in views) + "]"


def _readiness_gate_problem(
    gates: Sequence[str], previous: Mapping[str, Mapping[str, Any]]
) -> str | None:
    for gate in gates:
        condition = previous.get(gate)
        if condition is None:
            return f'corresponding condition of pod readiness gate "{gate}" does not exist.'
        if condition.get("status") != "True":
            return (
                f'the status of pod readiness gate "{gate}" is not "True", '
                f"but {condition.get('status')}"
            )
    return None


def pod_status(
    pod: PodView, current_conditions: Sequence[Mapping[str, Any]], now: str
) -> dict[str, Any]:
    """The pod's ``status`` object. Conditions owned by others are carried over."""
    previous = {str(c.get("type")): c for c in current_conditions}
    phase = pod_phase(pod)
    terminal = phase in ("Succeeded", "Failed")
    is_initialized = initialized(pod)
    not_initialized = [c for c in pod.init_containers if not _init_done(c)]
    sidecars = [c for c in pod.init_containers if c.sidecar]
    unready = [c for c in (*sidecars, *pod.containers) if not c.ready]

    conditions = [dict(c) for c in current_conditions if c.get("type") not in OWN_CONDITIONS]
    if "PodScheduled" not in previous:
        conditions.append(_condition("PodScheduled", True, previous, now))
    conditions.append(
        _condition("PodReadyToStartContainers", pod.pod_ip is not None, previous, now)
    )
    conditions.append(
        _condition(
            "Initialized",
            is_initialized,
            previous,
            now,
            reason="ContainersNotInitialized",
            message=f"containers with incomplete status: {_names(not_initialized)}",
        )
    )
    if terminal:
        containers_ready = _condition(
            "ContainersReady", False, previous, now, reason="PodCompleted"
        )
        ready = _condition("Ready", False, previous, now, reason="PodCompleted")
    else:
        unready_message = f"containers with unready status: {_names(unready)}"
        containers_ready = _condition(
            "ContainersReady",
            not unready,
            previous,
            now,
            reason="ContainersNotReady",
            message=unready_message,
        )
        gate_problem = _readiness_gate_problem(pod.readiness_gates, previous)
        if unready:
            ready = _condition(
                "Ready", False, previous, now, reason="ContainersNotReady", message=unready_message
            )
        elif gate_problem is not None:
            ready = _condition(
                "Ready",
                False,
                previous,
                now,
                reason="ReadinessGatesNotReady",
                message=gate_problem,
            )
        else:
            ready = _condition("Ready", True, previous, now)
    conditions += [containers_ready, ready]

    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": pod.host_ip,
        "hostIPs": [{"ip": pod.host_ip}],
        "startTime": pod.start_time,
        "containerStatuses": [container_status_json(c) for c in pod.containers],
    }
    if pod.pod_ip is not None:
        status["podIP"] = pod.pod_ip
        status["podIPs"] = [{"ip": pod.pod_ip}]
    if pod.init_containers:
        status["initContainerStatuses"] = [container_status_json(c) for c in pod.init_containers]
    return status
