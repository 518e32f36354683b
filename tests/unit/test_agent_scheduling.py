"""The agent runtime's pure decisions: priority selection, reclaim, the drain state machine,
and the key layout that keeps a queue in one Redis Cluster slot."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from swarmops.agent.keys import QueueKeys, valid_queue_name
from swarmops.agent.scheduling import (
    AgentEvent,
    AgentState,
    InvalidTransition,
    Priority,
    delivered_too_often,
    is_idle,
    is_ready,
    most_urgent,
    priorities_to_poll,
    reclaim_due,
    reclaim_interval,
    renew_interval,
    takes_tasks,
    transition,
)

# --- priorities ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(Priority.P1, Priority.P1), (0, Priority.P0), ("3", Priority.P3), ("p2", Priority.P2)],
)
def test_priorities_parse(value: object, expected: Priority) -> None:
    assert Priority.parse(value) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [4, -1, "P4", "high", "", True, 1.0])
def test_bad_priorities_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        Priority.parse(value)  # type: ignore[arg-type]


def test_nothing_held_polls_every_priority_most_urgent_first() -> None:
    assert priorities_to_poll(None) == (Priority.P0, Priority.P1, Priority.P2, Priority.P3)


@given(st.sampled_from(Priority))
def test_holding_a_task_polls_only_more_urgent_ones(held: Priority) -> None:
    polled = priorities_to_poll(held)
    assert all(p < held for p in polled)
    assert list(polled) == sorted(polled)
    assert len(polled) == int(held)


@given(st.lists(st.sampled_from(Priority)), st.lists(st.sampled_from(Priority), min_size=1))
def test_strict_priority_serves_p0_before_any_p3_backlog(
    held: list[Priority], waiting: list[Priority]
) -> None:
    """Simulate selection: whatever is held, the chosen task is the most urgent of what is
    held and what waits in the polled streams; a waiting P0 always beats a P3 flood."""
    best_held = most_urgent(held)
    polled = priorities_to_poll(best_held)
    fresh = [p for p in sorted(waiting) if p in polled][:1]
    chosen = most_urgent([*held, *fresh])
    assert chosen == min([*held, *waiting])
    if Priority.P0 in waiting:
        assert chosen is Priority.P0


# --- reclaim ---------------------------------------------------------------------------------


@given(st.integers(1, 1000))
def test_a_task_runs_max_deliveries_times_then_is_dead_lettered(limit: int) -> None:
    attempts = itertools.count(1)
    runs = list(itertools.takewhile(lambda n: not delivered_too_often(n, limit), attempts))
    assert len(runs) == limit  # the first try and limit - 1 more
    assert delivered_too_often(limit + 1, limit)


def test_leases_are_renewed_before_others_may_reclaim() -> None:
    for visibility in (0.3, 1.0, 30.0, 600.0):
        # Two renewals can fail before the lease runs out.
        assert renew_interval(visibility) * 3 <= visibility + 1e-9
        assert reclaim_interval(visibility) < visibility


def test_reclaim_scans_are_spaced() -> None:
    assert reclaim_due(None, 100.0, 30.0)
    assert not reclaim_due(100.0, 100.0 + reclaim_interval(30.0) / 2, 30.0)
    assert reclaim_due(100.0, 100.0 + reclaim_interval(30.0), 30.0)


# --- the drain state machine -----------------------------------------------------------------

LEGAL = {
    (AgentState.STARTING, AgentEvent.WARMED): AgentState.IDLE,
    (AgentState.STARTING, AgentEvent.TERM): AgentState.STOPPED,
    (AgentState.STARTING, AgentEvent.DEADLINE): AgentState.STOPPED,
    (AgentState.IDLE, AgentEvent.TASK_STARTED): AgentState.BUSY,
    (AgentState.IDLE, AgentEvent.TERM): AgentState.STOPPED,
    (AgentState.IDLE, AgentEvent.DEADLINE): AgentState.STOPPED,
    (AgentState.BUSY, AgentEvent.TASK_FINISHED): AgentState.IDLE,
    (AgentState.BUSY, AgentEvent.TERM): AgentState.DRAINING,
    (AgentState.DRAINING, AgentEvent.TERM): AgentState.DRAINING,
    (AgentState.DRAINING, AgentEvent.TASK_FINISHED): AgentState.STOPPED,
    (AgentState.DRAINING, AgentEvent.DEADLINE): AgentState.STOPPED,
    (AgentState.STARTING, AgentEvent.DRAIN): AgentState.STOPPED,
    (AgentState.IDLE, AgentEvent.DRAIN): AgentState.STOPPED,
    (AgentState.BUSY, AgentEvent.DRAIN): AgentState.DRAINING,
    (AgentState.DRAINING, AgentEvent.DRAIN): AgentState.DRAINING,
}


@pytest.mark.parametrize(
    ("state", "event"), list(itertools.product(AgentState, AgentEvent)), ids=str
)
def test_every_state_and_event(state: AgentState, event: AgentEvent) -> None:
    if state is AgentState.STOPPED:
        assert transition(state, event) is AgentState.STOPPED
    elif (state, event) in LEGAL:
        assert transition(state, event) is LEGAL[(state, event)]
    else:
        with pytest.raises(InvalidTransition):
            transition(state, event)


def test_signals_each_state_reports() -> None:
    assert [s for s in AgentState if takes_tasks(s)] == [AgentState.IDLE]
    assert {s for s in AgentState if is_ready(s)} == {AgentState.IDLE, AgentState.BUSY}
    # Drain-aware rollouts may remove an idle agent: never one with work in hand.
    assert not is_idle(AgentState.BUSY) and not is_idle(AgentState.DRAINING)


@given(st.lists(st.sampled_from(AgentEvent), max_size=40))
def test_a_drained_agent_never_takes_work_again(events: list[AgentEvent]) -> None:
    """Run any event sequence the worker could produce (tasks start only when it takes
    tasks): after TERM or a drain request nothing starts, a running task finishes or
    hits the deadline, and the agent ends STOPPED once the task is done."""
    state = AgentState.STARTING
    termed = False
    drained = False
    for event in events:
        if event is AgentEvent.TASK_STARTED and not takes_tasks(state):
            continue  # the worker never starts a task unless it takes tasks
        if event is AgentEvent.TASK_FINISHED and state not in (
            AgentState.BUSY,
            AgentState.DRAINING,
        ):
            continue
        if event is AgentEvent.WARMED and state is not AgentState.STARTING:
            continue
        if event is AgentEvent.DEADLINE and not termed:
            continue
        state = transition(state, event)
        termed = termed or event is AgentEvent.TERM
        drained = drained or event in (AgentEvent.TERM, AgentEvent.DRAIN)
        if drained:
            assert not takes_tasks(state)
            assert state in (AgentState.DRAINING, AgentState.STOPPED)
    if drained:
        # Stopped exactly when no task is left running; draining while one is.
        running = state is AgentState.DRAINING
        assert (state is AgentState.STOPPED) == (not running)


# --- keys ------------------------------------------------------------------------------------


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,40}", fullmatch=True))
def test_every_key_of_a_queue_shares_one_cluster_slot(name: str) -> None:
    keys = QueueKeys(name)
    all_keys = [
        *keys.streams,
        keys.result("some-key"),
        keys.result("{other}"),
        keys.completions,
        keys.dead,
        keys.stats,
        keys.agents,
        keys.agent("pod-0"),
    ]
    assert len({key_slot(k.encode()) for k in all_keys}) == 1


@pytest.mark.parametrize("name", ["", "a{b}", "with space", "-lead", "x" * 201])
def test_queue_names_that_would_break_the_hash_tag_are_refused(name: str) -> None:
    assert not valid_queue_name(name)
    with pytest.raises(ValueError):
        QueueKeys(name)
