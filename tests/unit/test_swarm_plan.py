"""The Swarm reconcile, decided: validation, start order, gating, shutdown order, status."""

from __future__ import annotations

import datetime
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmops.api import AgentPool, RedisCluster, Swarm
from swarmops.api.swarm import SwarmPhase, SwarmPool, SwarmPoolPhase
from swarmops.core import swarm as core
from swarmops.core.agentenv import QUEUE_ANNOTATION, REDIS_SECRET_ANNOTATION, REDIS_URL_ANNOTATION

NS = "team"
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
SWARM_UID = "uid-swarm"


def pool_spec(
    replicas: int = 1, warm: int = 0, priority: int = 50, cpu: str = "1"
) -> dict[str, Any]:
    return {
        "replicas": replicas,
        "warmPool": {"size": warm},
        "priority": priority,
        "template": {
            "spec": {
                "containers": [
                    {"name": "agent", "image": "swarmops", "resources": {"requests": {"cpu": cpu}}}
                ]
            }
        },
    }


def make_swarm(
    pools: list[dict[str, Any]],
    *,
    redis: bool = False,
    status: dict[str, Any] | None = None,
    deleting: bool = False,
    suspend: bool = False,
    budget: dict[str, Any] | None = None,
    order: str = "ReverseDependencies",
) -> Swarm:
    spec: dict[str, Any] = {"pools": pools, "suspend": suspend, "shutdown": {"order": order}}
    if redis:
        spec["redis"] = {"spec": {"shards": 3}}
    if budget is not None:
        spec["budget"] = budget
    metadata: dict[str, Any] = {
        "name": "research",
        "namespace": NS,
        "uid": SWARM_UID,
        "generation": 1,
        "finalizers": [core.FINALIZER],
    }
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    body: dict[str, Any] = {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "Swarm",
        "metadata": metadata,
        "spec": spec,
    }
    if status is not None:
        body["status"] = status
    return Swarm.from_body(body)


def three_pools() -> list[dict[str, Any]]:
    return [
        {"name": "planner", "spec": pool_spec(1)},
        {"name": "workers", "dependsOn": ["planner"], "spec": pool_spec(4, warm=2)},
        {"name": "reviewer", "dependsOn": ["workers"], "spec": pool_spec(1)},
    ]


def observed(
    name: str,
    replicas: int,
    warm: int = 0,
    *,
    ready: bool = True,
    running: int | None = None,
    running_warm: int | None = None,
    generation: int = 2,
    caught_up: bool = True,
    owner: str = SWARM_UID,
) -> core.ObservedPool:
    running = replicas if running is None else running
    running_warm = warm if running_warm is None else running_warm
    body = {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "generation": generation,
            "ownerReferences": [
                {
                    "apiVersion": "swarmops.dev/v1alpha1",
                    "kind": "Swarm",
                    "name": "research",
                    "uid": owner,
                }
            ],
        },
        "spec": pool_spec(replicas, warm),
        "status": {
            "observedGeneration": generation if caught_up else generation - 1,
            "replicas": running,
            "readyReplicas": running if ready else 0,
            "warm": running_warm,
            "warmReady": running_warm,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "reason": "ReplicasReady" if ready else "ReplicasNotReady",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        },
    }
    return core.ObservedPool(AgentPool.from_body(body))


def redis_cluster(ready: bool) -> RedisCluster:
    return RedisCluster.from_body(
        {
            "apiVersion": "swarmops.dev/v1alpha1",
            "kind": "RedisCluster",
            "metadata": {
                "name": "research-redis",
                "namespace": NS,
                "uid": "uid-r",
                "generation": 1,
            },
            "spec": {"shards": 3},
            "status": {
                "observedGeneration": 1,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True" if ready else "False",
                        "reason": "ClusterOk",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
            },
        }
    )


def applied(plan: core.SwarmPlan) -> dict[str, tuple[int | None, int]]:
    """AgentPool name -> (replicas, warm) as the plan applies them."""
    return {
        a.body["metadata"]["name"]: (
            a.body["spec"].get("replicas"),
            a.body["spec"]["warmPool"]["size"],
        )
        for a in plan.pools
        if "spec" in a.body
    }


def phases(plan: core.SwarmPlan) -> dict[str, SwarmPoolPhase]:
    return {p.name: p.phase for p in plan.status.pools}


def condition(plan: core.SwarmPlan, kind: str) -> tuple[str, str, str]:
    found = plan.status.condition(kind)
    assert found is not None, kind
    return str(found.status), found.reason, found.message


def rerun(swarm: Swarm, plan: core.SwarmPlan) -> Swarm:
    """The swarm as the next reconcile sees it: with the status this plan wrote."""
    return swarm.model_copy(update={"status": plan.status})


# --- validation -------------------------------------------------------------------------------


def test_a_cycle_is_invalid_names_the_cycle_and_starts_nothing() -> None:
    swarm = make_swarm(
        [
            {"name": "a", "dependsOn": ["c"], "spec": pool_spec()},
            {"name": "b", "dependsOn": ["a"], "spec": pool_spec()},
            {"name": "c", "dependsOn": ["b"], "spec": pool_spec()},
        ]
    )
    plan = core.plan_swarm(swarm, {}, None, now=T0)
    assert plan.pools == [] and plan.redis is None and plan.priority_classes == []
    status, reason, message = condition(plan, "InvalidSpec")
    assert (status, reason) == ("True", "InvalidSpec")
    assert "a -> c -> b -> a" in message
    assert condition(plan, "Ready")[0] == "False"
    assert condition(plan, "Degraded")[0] == "True"
    assert plan.status.phase is SwarmPhase.DEGRADED
    assert [e.reason for e in plan.events] == ["InvalidSpec"]
    # Told once: the same problem on the next run posts no second Event.
    again = core.plan_swarm(rerun(swarm, plan), {}, None, now=T0)
    assert again.events == []


def test_a_missing_pool_ref_and_cluster_ref_are_invalid_by_name() -> None:
    body = make_swarm([{"name": "a", "poolRef": {"name": "elsewhere"}}]).model_dump(by_alias=True)
    body["spec"]["redis"] = {"clusterRef": {"name": "shared"}}
    swarm = Swarm.model_validate(body)
    plan = core.plan_swarm(swarm, {}, None, now=T0)
    message = condition(plan, "InvalidSpec")[2]
    assert "AgentPool elsewhere" in message and "RedisCluster shared" in message
    assert plan.pools == []


def test_an_inline_pool_whose_name_is_taken_by_a_foreign_pool_is_invalid() -> None:
    swarm = make_swarm([{"name": "planner", "spec": pool_spec()}])
    foreign = observed("research-planner", 1, owner="somebody-else")
    plan = core.plan_swarm(swarm, {"research-planner": foreign}, None, now=T0)
    assert "is not this swarm's" in condition(plan, "InvalidSpec")[2]
    assert plan.pools == []


def test_find_cycle_none_for_a_dag_and_levels_respect_dependencies() -> None:
    pools = [SwarmPool.model_validate(p) for p in three_pools()]
    assert core.find_cycle(pools) is None
    assert core.start_levels(pools) == [["planner"], ["workers"], ["reviewer"]]


@st.composite
def dags(draw: st.DrawFn) -> list[SwarmPool]:
    count = draw(st.integers(1, 8))
    names = [f"p{i}" for i in range(count)]
    pools = []
    for index, name in enumerate(names):
        deps = draw(st.lists(st.sampled_from(names[:index]), unique=True)) if index else []
        pools.append(
            SwarmPool.model_validate({"name": name, "dependsOn": deps, "spec": pool_spec()})
        )
    order = draw(st.permutations(pools))
    return list(order)


@given(dags())
@settings(max_examples=200)
def test_start_levels_put_every_pool_after_its_dependencies(pools: list[SwarmPool]) -> None:
    assert core.find_cycle(pools) is None
    levels = core.start_levels(pools)
    level_of = {name: i for i, level in enumerate(levels) for name in level}
    assert sorted(level_of) == sorted(p.name for p in pools)
    for pool in pools:
        for dependency in pool.depends_on:
            assert level_of[dependency] < level_of[pool.name]


@given(dags(), st.data())
@settings(max_examples=200)
def test_a_back_edge_makes_a_cycle_that_is_found_and_real(
    pools: list[SwarmPool], data: st.DataObject
) -> None:
    levels = core.start_levels(pools)
    flat = [name for level in levels for name in level]
    if len(flat) < 2:
        return
    # Make an early pool depend on a later one that (transitively) depends on it, or itself.
    late = data.draw(st.sampled_from(flat[1:]))
    chain = {late}
    by_name = {p.name: p for p in pools}
    frontier = [late]
    while frontier:
        for dep in by_name[frontier.pop()].depends_on:
            if dep not in chain:
                chain.add(dep)
                frontier.append(dep)
    early = data.draw(st.sampled_from(sorted(chain - {late}) or [late]))
    if early == late:
        return
    changed = [
        p.model_copy(update={"depends_on": [*p.depends_on, late]}) if p.name == early else p
        for p in pools
    ]
    cycle = core.find_cycle(changed)
    assert cycle is not None and cycle[0] == cycle[-1]
    edges = {p.name: set(p.depends_on) for p in changed}
    for source, target in itertools.pairwise(cycle):
        assert target in edges[source]
    with pytest.raises(ValueError, match="cycle"):
        core.start_levels(changed)


# --- start order ------------------------------------------------------------------------------


def test_pools_start_in_dependency_order_and_redis_gates_every_pool() -> None:
    swarm = make_swarm(three_pools(), redis=True)
    plan = core.plan_swarm(swarm, {}, None, now=T0)
    # Nothing exists: every pool is created gated, the RedisCluster is created.
    assert applied(plan) == {
        "research-planner": (0, 0),
        "research-workers": (0, 0),
        "research-reviewer": (0, 0),
    }
    assert plan.redis is not None and plan.redis["metadata"]["name"] == "research-redis"
    assert plan.redis["metadata"]["ownerReferences"][0]["uid"] == SWARM_UID
    assert "RedisCluster research-redis" in plan.status.pools[0].message
    assert set(phases(plan).values()) == {SwarmPoolPhase.WAITING}

    # Redis Ready: the planner starts, the others still wait.
    swarm = rerun(swarm, plan)
    pools = {
        "research-planner": observed("research-planner", 0),
        "research-workers": observed("research-workers", 0),
        "research-reviewer": observed("research-reviewer", 0),
    }
    plan = core.plan_swarm(swarm, pools, redis_cluster(True), now=T0)
    assert applied(plan) == {
        "research-planner": (1, 0),
        "research-workers": (0, 0),
        "research-reviewer": (0, 0),
    }
    assert phases(plan)["planner"] is SwarmPoolPhase.STARTING
    assert [e.reason for e in plan.events] == ["PoolStarting"]
    assert "planner" in plan.events[0].message

    # A planner that reports Ready for its old (gated) spec does not count.
    swarm = rerun(swarm, plan)
    pools["research-planner"] = observed("research-planner", 1, caught_up=False)
    plan = core.plan_swarm(swarm, pools, redis_cluster(True), now=T0)
    assert applied(plan)["research-workers"] == (0, 0)

    # Planner Ready: workers start; reviewer waits for workers.
    pools["research-planner"] = observed("research-planner", 1)
    plan = core.plan_swarm(swarm, pools, redis_cluster(True), now=T0)
    assert applied(plan) == {
        "research-planner": (1, 0),
        "research-workers": (4, 2),
        "research-reviewer": (0, 0),
    }
    assert phases(plan) == {
        "planner": SwarmPoolPhase.READY,
        "workers": SwarmPoolPhase.STARTING,
        "reviewer": SwarmPoolPhase.WAITING,
    }
    assert "waiting for workers" in plan.status.pools[2].message
    assert plan.status.ready_pools == 1 and plan.status.total_pools == 3

    swarm = rerun(swarm, plan)
    pools["research-workers"] = observed("research-workers", 4, 2)
    plan = core.plan_swarm(swarm, pools, redis_cluster(True), now=T0)
    swarm = rerun(swarm, plan)
    pools["research-reviewer"] = observed("research-reviewer", 1)
    plan = core.plan_swarm(swarm, pools, redis_cluster(True), now=T0)
    assert plan.status.phase is SwarmPhase.READY
    assert condition(plan, "Ready")[:2] == ("True", "AllPoolsReady")
    assert condition(plan, "Progressing")[0] == "False"
    assert "SwarmReady" in [e.reason for e in plan.events]
    started = {p.name: p.started_at for p in plan.status.pools}
    assert all(started.values())


def test_a_started_pool_is_not_gated_again_when_a_dependency_blips() -> None:
    swarm = make_swarm(three_pools())
    pools = {
        "research-planner": observed("research-planner", 1),
        "research-workers": observed("research-workers", 4, 2),
        "research-reviewer": observed("research-reviewer", 1),
    }
    plan = core.plan_swarm(swarm, pools, None, now=T0)
    assert plan.status.phase is SwarmPhase.READY
    pools["research-planner"] = observed("research-planner", 1, ready=False)
    plan = core.plan_swarm(rerun(swarm, plan), pools, None, now=T0)
    assert applied(plan)["research-workers"] == (4, 2)
    assert applied(plan)["research-reviewer"] == (1, 0)


def test_waiting_past_the_timeout_degrades_and_backs_off() -> None:
    swarm = make_swarm(three_pools(), redis=True)
    plan = core.plan_swarm(swarm, {}, redis_cluster(False), now=T0)
    assert plan.recheck_after == core.WAIT_RECHECK_MIN
    later = T0 + datetime.timedelta(seconds=601)
    plan = core.plan_swarm(rerun(swarm, plan), {}, redis_cluster(False), now=later)
    status, reason, message = condition(plan, "Degraded")
    assert (status, reason) == ("True", "DependencyTimeout")
    assert "planner" in message and "RedisCluster research-redis" in message
    assert plan.status.phase is SwarmPhase.DEGRADED
    assert plan.recheck_after == core.WAIT_RECHECK_MAX
    assert any(e.reason == "DependencyTimeout" and e.warning for e in plan.events)
    # Still waiting: gated, not given up.
    assert applied(plan)["research-planner"] == (0, 0)


@given(st.floats(0, 1e6), st.floats(0, 1e6))
def test_wait_recheck_grows_with_the_wait_and_stays_bounded(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert core.WAIT_RECHECK_MIN <= core.wait_recheck(low) <= core.wait_recheck(high)
    assert core.wait_recheck(high) <= core.WAIT_RECHECK_MAX


# --- shutdown ---------------------------------------------------------------------------------


def running_pools() -> dict[str, core.ObservedPool]:
    return {
        "research-planner": observed("research-planner", 1),
        "research-workers": observed("research-workers", 4, 2),
        "research-reviewer": observed("research-reviewer", 1),
    }


@pytest.mark.parametrize("deleting", [False, True])
def test_shutdown_stops_pools_in_reverse_order_redis_last(deleting: bool) -> None:
    swarm = make_swarm(three_pools(), redis=True)
    pools = running_pools()
    redis = redis_cluster(True)
    plan = core.plan_swarm(swarm, pools, redis, now=T0)
    swarm = make_swarm(
        three_pools(),
        redis=True,
        status=plan.status.to_wire(),
        deleting=deleting,
        suspend=not deleting,
    )
    plan = core.plan_swarm(swarm, pools, redis, now=T0)
    # Only the reviewer (nothing depends on it) is scaled down; the others keep running.
    assert applied(plan) == {"research-reviewer": (0, 0)}
    assert phases(plan)["reviewer"] is SwarmPoolPhase.STOPPING
    assert "reviewer" in phases(plan) and "stops after" in plan.status.pools[1].message
    assert plan.delete_redis is None and not plan.finished
    assert [(e.reason, "reviewer" in e.message) for e in plan.events] == [("PoolStopping", True)]

    # Reviewer still draining (an active pod left): nothing else moves.
    swarm = rerun(swarm, plan)
    pools["research-reviewer"] = observed("research-reviewer", 0, running=1)
    plan = core.plan_swarm(swarm, pools, redis, now=T0)
    assert applied(plan) == {"research-reviewer": (0, 0)}

    pools["research-reviewer"] = observed("research-reviewer", 0)
    plan = core.plan_swarm(swarm, pools, redis, now=T0)
    assert applied(plan)["research-workers"] == (0, 0)
    assert "research-planner" not in applied(plan)
    swarm = rerun(swarm, plan)
    pools["research-workers"] = observed("research-workers", 0)
    plan = core.plan_swarm(swarm, pools, redis, now=T0)
    assert applied(plan)["research-planner"] == (0, 0)
    assert plan.delete_redis is None
    swarm = rerun(swarm, plan)
    pools["research-planner"] = observed("research-planner", 0)
    plan = core.plan_swarm(swarm, pools, redis, now=T0)
    assert set(phases(plan).values()) == {SwarmPoolPhase.STOPPED}
    if deleting:
        assert plan.delete_redis == "research-redis" and not plan.finished
        assert plan.redis is None
        assert plan.status.phase is SwarmPhase.TERMINATING
        gone = core.plan_swarm(rerun(swarm, plan), pools, None, now=T0)
        assert gone.finished
    else:
        assert plan.delete_redis is None and not plan.finished
        assert plan.redis is not None  # suspended: Redis keeps the queues
        assert plan.status.phase is SwarmPhase.SUSPENDED
        assert condition(plan, "Ready")[:2] == ("False", "Suspended")


def test_parallel_shutdown_stops_every_pool_at_once() -> None:
    swarm = make_swarm(three_pools(), suspend=True, order="Parallel")
    plan = core.plan_swarm(swarm, running_pools(), None, now=T0)
    assert applied(plan) == {
        "research-planner": (0, 0),
        "research-workers": (0, 0),
        "research-reviewer": (0, 0),
    }


def test_deleting_never_creates_a_pool() -> None:
    swarm = make_swarm(three_pools(), deleting=True)
    plan = core.plan_swarm(swarm, {}, None, now=T0)
    assert plan.pools == [] and plan.finished


def test_resume_starts_again_in_order() -> None:
    swarm = make_swarm(three_pools(), suspend=True)
    stopped = {
        "research-planner": observed("research-planner", 0),
        "research-workers": observed("research-workers", 0),
        "research-reviewer": observed("research-reviewer", 0),
    }
    plan = core.plan_swarm(swarm, stopped, None, now=T0)
    assert plan.status.phase is SwarmPhase.SUSPENDED
    resumed = make_swarm(three_pools(), status=plan.status.to_wire())
    plan = core.plan_swarm(resumed, stopped, None, now=T0)
    assert applied(plan) == {
        "research-planner": (1, 0),
        "research-workers": (0, 0),
        "research-reviewer": (0, 0),
    }


# --- children ---------------------------------------------------------------------------------


def test_children_are_owned_labelled_and_carry_the_redis_contract() -> None:
    swarm = make_swarm(three_pools(), redis=True)
    plan = core.plan_swarm(swarm, {}, redis_cluster(True), now=T0, priority_classes=True)
    body = next(a.body for a in plan.pools if a.body["metadata"]["name"] == "research-workers")
    metadata = body["metadata"]
    assert metadata["ownerReferences"][0]["uid"] == SWARM_UID
    assert metadata["labels"] == {core.SWARM_LABEL: "research", core.SWARM_POOL_LABEL: "workers"}
    notes = metadata["annotations"]
    assert notes[REDIS_URL_ANNOTATION] == "redis://research-redis.team.svc:6379"
    assert notes[REDIS_SECRET_ANNOTATION] == "research-redis-auth"
    assert notes[QUEUE_ANNOTATION] == "research.workers"
    assert body["spec"]["template"]["spec"]["priorityClassName"] == "swarmops-priority-50"
    assert [c["metadata"]["name"] for c in plan.priority_classes] == ["swarmops-priority-50"]
    assert plan.priority_classes[0]["value"] == 50
    assert plan.redis is not None and plan.redis["metadata"]["labels"] == {
        core.SWARM_LABEL: "research"
    }


def test_replicas_held_by_another_manager_are_left_to_it_unless_the_swarm_must_hold_them() -> None:
    swarm = make_swarm(three_pools())
    pools = running_pools()
    hpa = core.ObservedPool(observed("research-workers", 7, 2).pool, replicas_held_elsewhere=True)
    pools["research-workers"] = hpa
    plan = core.plan_swarm(swarm, pools, None, now=T0)
    assert applied(plan)["research-workers"] == (None, 2)
    assert phases(plan)["workers"] is SwarmPoolPhase.READY
    stopping = make_swarm(three_pools(), suspend=True, status=plan.status.to_wire())
    pools["research-reviewer"] = observed("research-reviewer", 0)
    plan = core.plan_swarm(stopping, pools, None, now=T0)
    assert applied(plan)["research-workers"] == (0, 0)


def test_referenced_pools_are_labelled_not_scaled_and_released_at_the_end() -> None:
    pools_spec = [
        {"name": "planner", "poolRef": {"name": "shared-planner"}},
        {"name": "workers", "dependsOn": ["planner"], "spec": pool_spec(2)},
    ]
    swarm = make_swarm(pools_spec)
    shared = observed("shared-planner", 3, owner="someone")
    plan = core.plan_swarm(swarm, {"shared-planner": shared}, None, now=T0)
    ref = next(a for a in plan.pools if a.body["metadata"]["name"] == "shared-planner")
    assert "spec" not in ref.body and ref.field_manager == "swarmops-swarm-research"
    assert ref.body["metadata"]["labels"][core.SWARM_LABEL] == "research"
    assert applied(plan)["research-workers"] == (2, 0)
    gone = make_swarm(pools_spec, deleting=True, status=plan.status.to_wire())
    plan = core.plan_swarm(gone, {"shared-planner": shared}, None, now=T0)
    assert plan.finished and plan.release == ["shared-planner"]
    assert all(a.body["metadata"]["name"] != "shared-planner" for a in plan.pools)


def test_a_pool_with_pods_still_draining_has_not_stopped() -> None:
    swarm = make_swarm(three_pools(), suspend=True)
    pools = running_pools()
    draining = observed("research-reviewer", 0)
    pools["research-reviewer"] = core.ObservedPool(draining.pool, pods_left=1)
    plan = core.plan_swarm(swarm, pools, None, now=T0)
    assert phases(plan)["reviewer"] is SwarmPoolPhase.STOPPING
    assert "research-workers" not in applied(plan)
    pools["research-reviewer"] = draining
    plan = core.plan_swarm(swarm, pools, None, now=T0)
    assert applied(plan)["research-workers"] == (0, 0)


def test_the_shutdown_grace_becomes_the_pools_drain_timeout_unless_it_sets_one() -> None:
    pools = three_pools()
    pools[0]["spec"]["rollout"] = {"drainTimeoutSeconds": 42}
    swarm = make_swarm(pools)
    plan = core.plan_swarm(swarm, {}, None, now=T0)
    drains = {
        a.body["metadata"]["name"]: a.body["spec"]["rollout"]["drainTimeoutSeconds"]
        for a in plan.pools
    }
    assert drains == {"research-planner": 42, "research-workers": 300, "research-reviewer": 300}


def test_deleting_never_touches_a_pool_that_is_not_the_swarms() -> None:
    swarm = make_swarm([{"name": "planner", "spec": pool_spec()}], deleting=True)
    foreign = observed("research-planner", 1, owner="somebody-else")
    plan = core.plan_swarm(swarm, {"research-planner": foreign}, None, now=T0)
    assert plan.pools == [] and plan.finished
