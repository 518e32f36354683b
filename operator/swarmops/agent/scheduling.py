"""The agent's decisions, as pure functions: which priority to serve next, when a task
has failed too often, when to renew and reclaim, and the drain state machine.

No I/O here: worker.py performs what these decide, and the unit tests run them
exhaustively (tests/unit/test_agent_scheduling.py).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class Priority(enum.IntEnum):
    """Task priorities; a lower number is more urgent."""

    P0 = 0
    P1 = 1
    P2 = 2
    P3 = 3

    @classmethod
    def parse(cls, value: Priority | int | str) -> Priority:
        """`Priority.P1`, 1, "1", "P1" or "p1"."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        if isinstance(value, str):
            text = value.strip().upper()
            if text.startswith("P"):
                text = text[1:]
            if text.isdigit():
                return cls(int(text))
        raise ValueError(f"priority {value!r}: one of P0, P1, P2, P3 (or 0-3)")


# --- priority selection ----------------------------------------------------------------------
#
# Strict priority: an agent looking for work asks the P0 stream first, then P1, P2, P3, and
# takes the first task it finds (one script, one round trip, see queue.py). So a P0 task
# waits at most for the tasks already running, however many P3 tasks are queued: its
# latency does not depend on the P3 load at all. Weighted polling (say 8:4:2:1) would
# serve a P3 task while a P0 task waits whenever the P3 stream's turn comes, making P0
# latency a function of the flood it is meant to be immune to. The price of strict
# priority is that a sustained P0 load starves P3; that is the meaning of the classes
# (interactive before batch), as with Kubernetes' PriorityClasses, and queue metrics show
# the backlog.


def priorities_to_poll(held: Priority | None) -> tuple[Priority, ...]:
    """Streams to ask for a fresh task, in order, when the agent already holds `held`
    (a task delivered to it but not started: a reclaimed one, or one its restart found
    pending): only priorities more urgent than that one are worth a look."""
    if held is None:
        return tuple(Priority)
    return tuple(p for p in Priority if p < held)


def most_urgent(priorities: Iterable[Priority]) -> Priority | None:
    return min(priorities, default=None)


# --- reclaim ---------------------------------------------------------------------------------


def delivered_too_often(attempt: int, max_deliveries: int) -> bool:
    """A task whose handler was started `max_deliveries` times without completing is
    killing the agents that run it (or exceeds every lease): rather than crash-loop the
    pool for ever, its next attempt does not run; it goes to the dead-letter stream with
    an error result. `attempt` counts handler starts only (TaskQueue.start), never a task
    an agent read and gave back unstarted."""
    return attempt > max_deliveries


def renew_interval(visibility_seconds: float) -> float:
    """How often a running task's lease is renewed: three times per visibility timeout,
    so two renewals may fail (a slow Redis, a GC pause) before another agent takes it."""
    return max(visibility_seconds / 3.0, 0.05)


def reclaim_interval(visibility_seconds: float) -> float:
    """How often an agent looks for tasks whose lease ran out: four times per visibility
    timeout, so an abandoned task waits at most 1.25 visibility timeouts."""
    return max(visibility_seconds / 4.0, 0.05)


def reclaim_due(last_scan: float | None, now: float, visibility_seconds: float) -> bool:
    return last_scan is None or now - last_scan >= reclaim_interval(visibility_seconds)


# --- idle, busy and drain --------------------------------------------------------------------


class AgentState(enum.StrEnum):
    """What /status reports, and what the heartbeat carries.

    `idle` is the signal drain-aware rollouts and shutdown wait for: the agent runs no
    task and will finish none it holds. `busy` runs a task. `draining` got SIGTERM while
    busy (or was asked to drain): it takes no new task and finishes the current one.
    `stopped` takes no task again: on its way out, or drained and waiting to be deleted.
    """

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DRAINING = "draining"
    STOPPED = "stopped"


class AgentEvent(enum.Enum):
    WARMED = "warmed"  # the warm-up hook returned
    TASK_STARTED = "task_started"
    TASK_FINISHED = "task_finished"  # completed, failed, or released
    TERM = "term"  # SIGTERM (or SIGINT)
    DRAIN = "drain"  # the operator's POST /v1/drain: as TERM, but the process stays up
    DEADLINE = "deadline"  # the drain's grace ran out


_TRANSITIONS: dict[tuple[AgentState, AgentEvent], AgentState] = {
    (AgentState.STARTING, AgentEvent.WARMED): AgentState.IDLE,
    (AgentState.STARTING, AgentEvent.TERM): AgentState.STOPPED,
    (AgentState.STARTING, AgentEvent.DEADLINE): AgentState.STOPPED,
    (AgentState.IDLE, AgentEvent.TASK_STARTED): AgentState.BUSY,
    (AgentState.IDLE, AgentEvent.TERM): AgentState.STOPPED,
    (AgentState.IDLE, AgentEvent.DEADLINE): AgentState.STOPPED,
    (AgentState.BUSY, AgentEvent.TASK_FINISHED): AgentState.IDLE,
    (AgentState.BUSY, AgentEvent.TERM): AgentState.DRAINING,
    (AgentState.DRAINING, AgentEvent.TASK_FINISHED): AgentState.STOPPED,
    (AgentState.DRAINING, AgentEvent.DEADLINE): AgentState.STOPPED,
    # A drain request leads where TERM does; only the worker differs (it keeps serving
    # HTTP so the operator can read `idle`, and waits for the pod's deletion to exit).
    (AgentState.STARTING, AgentEvent.DRAIN): AgentState.STOPPED,
    (AgentState.IDLE, AgentEvent.DRAIN): AgentState.STOPPED,
    (AgentState.BUSY, AgentEvent.DRAIN): AgentState.DRAINING,
}


class InvalidTransition(ValueError):
    pass


def transition(state: AgentState, event: AgentEvent) -> AgentState:
    """The drain state machine. A second TERM, or a WARMED twice, changes nothing; a
    task may not start unless idle (the worker asks `takes_tasks` first)."""
    if state is AgentState.STOPPED:
        return state  # absorbing: late events of a stopping agent are moot
    if event in (AgentEvent.TERM, AgentEvent.DRAIN) and state is AgentState.DRAINING:
        return state
    after = _TRANSITIONS.get((state, event))
    if after is None:
        raise InvalidTransition(f"{event.value} while {state.value}")
    return after


def takes_tasks(state: AgentState) -> bool:
    return state is AgentState.IDLE


def is_ready(state: AgentState) -> bool:
    """Readiness: warmed up and not leaving. A draining agent turns not-ready at once so
    Services and the operator stop sending it work while it finishes."""
    return state in (AgentState.IDLE, AgentState.BUSY)


def is_idle(state: AgentState) -> bool:
    """Safe to remove without losing work in progress."""
    return state in (AgentState.STARTING, AgentState.IDLE, AgentState.STOPPED)
