"""metav1.Condition helpers: set a condition the way Kubernetes' meta.SetStatusCondition does."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from swarmops.api.common import Condition, ConditionStatus


def find_condition(conditions: Sequence[Condition], condition_type: str) -> Condition | None:
    return next((c for c in conditions if c.type == condition_type), None)


def set_condition(
    conditions: Sequence[Condition],
    condition_type: str,
    status: ConditionStatus,
    reason: str,
    message: str = "",
    *,
    now: datetime.datetime,
    observed_generation: int | None = None,
) -> list[Condition]:
    """Return `conditions` with one condition set; the input is not changed.

    `lastTransitionTime` moves only when the status changes, so it says since when
    the condition has held; reason, message and observedGeneration always follow
    the latest evaluation. A new type is appended; the others keep their order.
    """
    previous = find_condition(conditions, condition_type)
    transition_time = (
        previous.last_transition_time
        if previous is not None and previous.status == status
        else now.replace(microsecond=0)
    )
    updated = Condition(
        type=condition_type,
        status=status,
        reason=reason,
        message=message,
        observed_generation=observed_generation,
        last_transition_time=transition_time,
    )
    if previous is None:
        return [*conditions, updated]
    return [updated if c.type == condition_type else c for c in conditions]


def is_true(conditions: Sequence[Condition], condition_type: str) -> bool:
    condition = find_condition(conditions, condition_type)
    return condition is not None and condition.status == ConditionStatus.TRUE
