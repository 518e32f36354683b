"""The pool's PodDisruptionBudget: what it covers and the number it carries."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmops.api import AgentPool
from swarmops.core.disruption import (
    BudgetWrite,
    ObservedBudget,
    budget_manifest,
    budget_spec,
    min_available,
    observe_budget,
    plan_budget,
)
from swarmops.core.pods import POOL_LABEL, STATE_LABEL
from swarmops.core.testing import POOL_UID, make_pool
from swarmops.handlers.pools import BUDGETS_INDEX
from swarmops.runtime import build_registry


def pool_with(replicas: int, max_unavailable: int | str = 1) -> AgentPool:
    body = make_pool(replicas=replicas, warm=5).to_wire()
    body["spec"]["disruption"] = {"maxUnavailable": max_unavailable}
    return AgentPool.from_body(body)


@pytest.mark.parametrize(
    ("max_unavailable", "expected", "wanted"),
    [
        (1, 10, 9),
        (0, 10, 10),
        (3, 2, 0),  # never below zero
        ("25%", 10, 7),  # 2.5 pods may go: rounded up to 3, as Kubernetes does
        ("100%", 10, 0),
        ("0%", 10, 10),
        ("50%", 0, 0),
        ("10%", 1, 0),
    ],
)
def test_min_available_is_what_the_disruption_controller_would_derive(
    max_unavailable: int | str, expected: int, wanted: int
) -> None:
    assert min_available(max_unavailable, expected) == wanted


@given(st.integers(0, 100), st.integers(0, 10_000))
def test_a_percentage_never_allows_fewer_disruptions_than_it_says(
    percent: int, expected: int
) -> None:
    floor = min_available(f"{percent}%", expected)
    assert 0 <= floor <= expected
    assert expected - floor == min(expected, math.ceil(percent * expected / 100))


def test_the_budget_covers_active_and_claimed_pods_and_counts_both() -> None:
    pool = pool_with(replicas=4, max_unavailable=1)
    manifest = budget_manifest(pool, claimed=3)
    assert manifest["apiVersion"] == "policy/v1" and manifest["kind"] == "PodDisruptionBudget"
    assert manifest["metadata"]["name"] == "agents"
    assert manifest["metadata"]["labels"] == {POOL_LABEL: "agents"}
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == POOL_UID
    assert manifest["metadata"]["ownerReferences"][0]["controller"] is True
    assert manifest["spec"] == {
        "minAvailable": 6,  # 4 active + 3 claimed, one may go
        "selector": {
            "matchLabels": {POOL_LABEL: "agents"},
            "matchExpressions": [
                {"key": STATE_LABEL, "operator": "In", "values": ["active", "claimed"]}
            ],
        },
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }


def observed(pool: AgentPool, claimed: int, **changes: Any) -> ObservedBudget:
    body = budget_manifest(pool, claimed)
    body["metadata"]["uid"] = "uid-budget"
    body["spec"].update(changes)
    return observe_budget(body)


def test_a_missing_budget_is_created() -> None:
    pool = pool_with(replicas=2)
    write = plan_budget(pool, 0, None)
    assert write == BudgetWrite("agents", manifest=budget_manifest(pool, 0))


def test_a_budget_as_it_should_be_is_left_alone() -> None:
    pool = pool_with(replicas=2)
    assert plan_budget(pool, 1, observed(pool, 1)) is None


def test_a_changed_count_replaces_the_spec_of_that_very_budget() -> None:
    pool = pool_with(replicas=2)
    write = plan_budget(pool, 5, observed(pool, 1))
    assert write is not None and write.manifest is None
    assert write.patch == [
        {"op": "test", "path": "/metadata/uid", "value": "uid-budget"},
        {"op": "replace", "path": "/spec", "value": budget_spec(pool, 5)},
    ]


def test_a_hand_edited_budget_is_put_back() -> None:
    pool = pool_with(replicas=2)
    edited = observed(pool, 0, maxUnavailable=3)
    write = plan_budget(pool, 0, edited)
    assert write is not None and write.patch is not None
    assert write.patch[1]["value"] == budget_spec(pool, 0)


def test_a_budget_of_an_earlier_pool_or_on_its_way_out_is_left_to_the_garbage_collector() -> None:
    pool = pool_with(replicas=2)
    body = budget_manifest(pool, 0)
    body["metadata"]["ownerReferences"][0]["uid"] = "uid-earlier-pool"
    assert plan_budget(pool, 7, observe_budget(body)) is None
    body = budget_manifest(pool, 0)
    body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert plan_budget(pool, 7, observe_budget(body)) is None


def test_without_access_to_budgets_the_operator_neither_watches_nor_indexes_them() -> None:
    """A refused watch never lists, and kopf holds every handler back until each index
    has listed: an install without the access must not register the budget index."""

    def index_ids(disruption_budgets: bool) -> set[str]:
        registry = build_registry(disruption_budgets=disruption_budgets)
        # kopf has no public way to list handlers by kind; its registry keeps them here.
        return {str(h.id) for h in registry._indexing.get_all_handlers()}

    assert BUDGETS_INDEX in index_ids(True)
    assert BUDGETS_INDEX not in index_ids(False)
