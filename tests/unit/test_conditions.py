"""metav1.Condition helpers."""

from __future__ import annotations

import datetime

from hypothesis import given
from hypothesis import strategies as st

from swarmops.api.common import Condition, ConditionStatus
from swarmops.core.conditions import find_condition, is_true, set_condition

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5, microseconds=123)
TRUE, FALSE = ConditionStatus.TRUE, ConditionStatus.FALSE


def test_a_new_condition_is_appended_with_the_current_time() -> None:
    conditions = set_condition([], "Ready", TRUE, "Up", "all good", now=T0, observed_generation=3)
    assert conditions == [
        Condition(
            type="Ready",
            status=TRUE,
            reason="Up",
            message="all good",
            observed_generation=3,
            last_transition_time=T0,
        )
    ]


def test_same_status_keeps_the_transition_time_but_updates_the_rest() -> None:
    first = set_condition([], "Ready", TRUE, "Up", "1/2", now=T0, observed_generation=1)
    second = set_condition(first, "Ready", TRUE, "StillUp", "2/2", now=T1, observed_generation=2)
    condition = find_condition(second, "Ready")
    assert condition is not None
    assert condition.last_transition_time == T0
    assert (condition.reason, condition.message, condition.observed_generation) == (
        "StillUp",
        "2/2",
        2,
    )


def test_a_status_change_moves_the_transition_time_to_whole_seconds() -> None:
    first = set_condition([], "Ready", TRUE, "Up", now=T0)
    second = set_condition(first, "Ready", FALSE, "Down", now=T1)
    condition = find_condition(second, "Ready")
    assert condition is not None
    # metav1.Time has second precision: the value must survive a round trip unchanged.
    assert condition.last_transition_time == T1.replace(microsecond=0)
    assert not is_true(second, "Ready")


def test_other_conditions_keep_their_order_and_the_input_is_not_changed() -> None:
    conditions = set_condition([], "Ready", TRUE, "Up", now=T0)
    conditions = set_condition(conditions, "Degraded", FALSE, "Fine", now=T0)
    before = list(conditions)
    updated = set_condition(conditions, "Ready", FALSE, "Down", now=T1)
    assert [c.type for c in updated] == ["Ready", "Degraded"]
    assert conditions == before
    assert find_condition(updated, "Degraded") == find_condition(conditions, "Degraded")


@given(st.lists(st.tuples(st.sampled_from(["A", "B", "C"]), st.booleans()), max_size=20))
def test_one_condition_per_type_and_transition_time_follows_status(
    updates: list[tuple[str, bool]],
) -> None:
    conditions: list[Condition] = []
    last_change: dict[str, tuple[bool, datetime.datetime]] = {}
    for step, (kind, status) in enumerate(updates):
        now = T0 + datetime.timedelta(seconds=step)
        conditions = set_condition(conditions, kind, TRUE if status else FALSE, "R", now=now)
        if kind not in last_change or last_change[kind][0] != status:
            last_change[kind] = (status, now)
    assert len({c.type for c in conditions}) == len(conditions)
    for kind, (status, changed_at) in last_change.items():
        condition = find_condition(conditions, kind)
        assert condition is not None
        assert is_true(conditions, kind) == status
        assert condition.last_transition_time == changed_at
