"""A swarm's budget: active replicas before warm pods, priority before weight, never over."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmops.api.agentpool import AgentPoolSpec
from swarmops.core.swarm import (
    Allowance,
    Budget,
    Demand,
    Resources,
    allocate,
    parse_quantity,
    pod_resources,
    usage,
)

SHAPES = [Resources(500, 2**28, 0), Resources(1000, 2**30, 0), Resources(250, 2**27, 1)]


@st.composite
def demands(draw: st.DrawFn) -> list[Demand]:
    count = draw(st.integers(1, 6))
    return [
        Demand(
            name=f"p{index}",
            priority=draw(st.sampled_from([10, 50, 90])),
            weight=draw(st.integers(1, 5)),
            per_pod=draw(st.sampled_from(SHAPES)),
            replicas=draw(st.integers(0, 12)),
            warm=draw(st.integers(0, 6)),
        )
        for index in range(count)
    ]


budgets = st.builds(
    Budget,
    cpu_milli=st.one_of(st.none(), st.integers(0, 20_000)),
    memory=st.one_of(st.none(), st.integers(0, 2**34)),
    gpus=st.one_of(st.none(), st.integers(0, 8)),
)


def fits_one_more(budget: Budget, used: Resources, demand: Demand) -> bool:
    return budget.fits(used + demand.per_pod)


@given(demands(), budgets)
@settings(max_examples=300)
def test_allocation_stays_within_budget_and_demand(wants: list[Demand], budget: Budget) -> None:
    allowed = allocate(wants, budget)
    assert budget.fits(usage(wants, allowed))
    for demand in wants:
        assert 0 <= allowed[demand.name].replicas <= demand.replicas
        assert 0 <= allowed[demand.name].warm <= demand.warm


@given(demands(), budgets)
@settings(max_examples=300)
def test_allocation_leaves_no_room_a_pool_could_use(wants: list[Demand], budget: Budget) -> None:
    allowed = allocate(wants, budget)
    used = usage(wants, allowed)
    for demand in wants:
        got = allowed[demand.name]
        if got.replicas < demand.replicas or got.warm < demand.warm:
            assert not fits_one_more(budget, used, demand), demand.name


@given(demands(), budgets)
@settings(max_examples=300)
def test_warm_pods_only_when_every_active_replica_that_could_fit_has(
    wants: list[Demand], budget: Budget
) -> None:
    allowed = allocate(wants, budget)
    if not any(allowed[d.name].warm for d in wants):
        return
    active_use = sum((d.per_pod.times(allowed[d.name].replicas) for d in wants), start=Resources())
    for demand in wants:
        if allowed[demand.name].replicas < demand.replicas:
            # Giving the warm pods back would not make room for one more active pod.
            assert not budget.fits(active_use + demand.per_pod)


@given(demands(), budgets)
@settings(max_examples=300)
def test_a_higher_priority_of_the_same_shape_is_served_first(
    wants: list[Demand], budget: Budget
) -> None:
    allowed = allocate(wants, budget)
    for high in wants:
        for low in wants:
            if high.priority <= low.priority or high.per_pod != low.per_pod:
                continue
            if allowed[low.name].replicas > 0:
                assert allowed[high.name].replicas == high.replicas
            if allowed[low.name].warm > 0:
                assert allowed[high.name].warm == high.warm


@given(demands(), budgets)
@settings(max_examples=300)
def test_within_a_priority_pods_go_by_weight(wants: list[Demand], budget: Budget) -> None:
    allowed = allocate(wants, budget)
    for kind in ("replicas", "warm"):
        for one in wants:
            for other in wants:
                if one is other or one.priority != other.priority or one.per_pod != other.per_pod:
                    continue
                mine = getattr(allowed[one.name], kind)
                theirs = getattr(allowed[other.name], kind)
                if theirs < getattr(other, kind) and mine > 0:
                    # `other` wanted more yet `one` got its last pod: `one` was not ahead.
                    assert Decimal(mine) / one.weight <= Decimal(theirs + 1) / other.weight


@given(demands())
def test_no_budget_gives_everything(wants: list[Demand]) -> None:
    allowed = allocate(wants, None)
    assert allowed == {d.name: Allowance(d.replicas, d.warm) for d in wants}
    unlimited = allocate(wants, Budget())
    assert unlimited == allowed


def test_warm_pools_shrink_first_then_low_priority_actives() -> None:
    cpu = Resources(1000, 0, 0)
    wants = [
        Demand("planner", 80, 1, cpu, replicas=1, warm=0),
        Demand("workers", 50, 3, cpu, replicas=4, warm=2),
        Demand("reviewer", 60, 1, cpu, replicas=1, warm=0),
    ]
    assert allocate(wants, Budget(cpu_milli=8000)) == {
        "planner": Allowance(1, 0),
        "workers": Allowance(4, 2),
        "reviewer": Allowance(1, 0),
    }
    assert allocate(wants, Budget(cpu_milli=6000))["workers"] == Allowance(4, 0)
    capped = allocate(wants, Budget(cpu_milli=4000))
    assert capped == {
        "planner": Allowance(1, 0),
        "workers": Allowance(2, 0),
        "reviewer": Allowance(1, 0),
    }


def test_weights_split_a_tier() -> None:
    cpu = Resources(1000, 0, 0)
    wants = [Demand("a", 50, 3, cpu, replicas=10, warm=0), Demand("b", 50, 1, cpu, 10, 0)]
    assert allocate(wants, Budget(cpu_milli=8000)) == {
        "a": Allowance(6, 0),
        "b": Allowance(2, 0),
    }


def test_fixed_use_comes_off_the_top() -> None:
    cpu = Resources(1000, 0, 0)
    wants = [Demand("a", 50, 1, cpu, replicas=4, warm=0)]
    assert allocate(wants, Budget(cpu_milli=4000), fixed=Resources(3000, 0, 0)) == {
        "a": Allowance(1, 0)
    }


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", Decimal("0.5")), ("2", Decimal(2)), ("1Gi", Decimal(2**30)), ("1k", Decimal(1000))],
)
def test_parse_quantity(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_parse_quantity_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity("lots")


def test_pod_resources_add_containers_and_fall_back_to_limits() -> None:
    spec = AgentPoolSpec.model_validate(
        {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "a",
                            "image": "x",
                            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}},
                        },
                        {
                            "name": "b",
                            "image": "x",
                            "resources": {"limits": {"cpu": "1", "nvidia.com/gpu": 1}},
                        },
                    ]
                }
            },
            "gpu": {"count": 2},
        }
    )
    assert pod_resources(spec) == Resources(1250, 256 * 2**20, 2)
