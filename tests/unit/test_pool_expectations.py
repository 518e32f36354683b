"""Expectations: a lagging cache plus the operator's memory never over-create.

A small simulated cluster stands in for the apiserver (pure data, no I/O): the
operator plans from a view that lags the cluster by any number of changes, as a
watch cache does, and hypothesis picks the interleaving of reconciles, cache
catch-up, pods turning Ready, pods being killed, claims taking warm pods, and
terminations finishing. Whatever the order, the cluster never holds more active
or warm pods than the pool asks for, and once the cache catches up it converges.
"""

from __future__ import annotations

import datetime
import itertools
from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from swarmops.core.expectations import ExpectationsStore, ExpectedPod, PoolExpectations
from swarmops.core.pods import REVISION_LABEL, STATE_LABEL, ObservedPod, PodState
from swarmops.core.pool import desired_template, plan_pool
from swarmops.core.revision import template_revision
from swarmops.core.testing import POOL_UID, T0, make_pool

ACTIVE, WARM, CLAIMED = PodState.ACTIVE, PodState.WARM, PodState.CLAIMED
NOW = T0 + datetime.timedelta(hours=1)
KEY = ("team", "agents")
# The revision of make_pool's template: the pods in this simulation are all current.
REVISION = template_revision(desired_template(make_pool()))


@dataclass
class Cluster:
    """The truth: pods by uid, and every state the watch will replay, in order."""

    pods: dict[str, ObservedPod] = field(default_factory=dict)
    history: list[tuple[tuple[ObservedPod, ...], frozenset[str]]] = field(
        default_factory=lambda: [((), frozenset())]
    )
    serial: itertools.count[int] = field(default_factory=itertools.count)
    version: itertools.count[int] = field(default_factory=lambda: itertools.count(2))

    def _commit(self, deleted: frozenset[str] = frozenset()) -> None:
        self.history.append((tuple(self.pods.values()), deleted))

    def _update(self, uid: str, **changes: Any) -> None:
        self.pods[uid] = replace(
            self.pods[uid], resource_version=str(next(self.version)), **changes
        )
        self._commit()

    def alive(self, state: PodState) -> int:
        return sum(p.state is state and p.alive for p in self.pods.values())

    # --- what the operator does (the apiserver's answers included) ---

    def create(self, state: PodState, owner: str, revision: str | None = None) -> ObservedPod:
        number = next(self.serial)
        pod = ObservedPod(
            name=f"agents-{number}",
            namespace="team",
            uid=f"uid-{number}",
            resource_version=str(next(self.version)),
            pool="agents",
            state=state,
            revision=revision if revision is not None else REVISION,
            controller_uid=owner,
            created=T0 + datetime.timedelta(seconds=number),
            terminating=False,
            phase="Pending",
            ready=False,
            node_name=None,
            unschedulable=None,
        )
        self.pods[pod.uid] = pod
        self._commit()
        return pod

    def relabel_if_warm(self, uid: str, state: PodState) -> bool:
        pod = self.pods.get(uid)
        if pod is None or pod.state is not WARM:
            return False  # the JSON-patch test op fails
        self._update(uid, state=state)
        return True

    def delete(self, uid: str, resource_version: str) -> bool:
        pod = self.pods.get(uid)
        if pod is None:
            return True  # NotFound: already gone
        if pod.resource_version != resource_version:
            return False  # Conflict: precondition failed
        if not pod.terminating:
            self._update(uid, terminating=True)
        return True

    # --- what the rest of the world does ---

    def pick(self, index: int, *, where: object = None) -> str | None:
        candidates = sorted(
            uid
            for uid, pod in self.pods.items()
            if where is None or where(pod)  # type: ignore[operator]
        )
        return candidates[index % len(candidates)] if candidates else None

    def become_ready(self, index: int) -> None:
        uid = self.pick(index, where=lambda p: not p.ready and not p.terminating)
        if uid is not None:
            self._update(uid, ready=True, phase="Running", node_name="node-a")

    def kill(self, index: int) -> None:
        uid = self.pick(index, where=lambda p: not p.terminating and p.state is not CLAIMED)
        if uid is not None:
            self._update(uid, terminating=True)

    def claim(self, index: int) -> None:
        uid = self.pick(index, where=lambda p: p.state is WARM and p.alive)
        if uid is not None:
            self._update(uid, state=CLAIMED, controller_uid="uid-claim")

    def finish(self, index: int) -> None:
        uid = self.pick(index, where=lambda p: p.terminating)
        if uid is not None:
            del self.pods[uid]
            self._commit(frozenset({uid}))


@dataclass
class Operator:
    """The handler's loop, minus I/O: view, expectations, plan, writes."""

    cluster: Cluster
    replicas: int
    warm: int
    expectations: PoolExpectations = field(
        default_factory=lambda: ExpectationsStore().for_pool(KEY)
    )
    seen: int = 0  # index into the cluster's history: how far the watch has got

    @property
    def view(self) -> tuple[ObservedPod, ...]:
        return self.cluster.history[self.seen][0]

    def catch_up(self, steps: int) -> None:
        target = min(len(self.cluster.history) - 1, self.seen + steps)
        for index in range(self.seen + 1, target + 1):
            for uid in self.cluster.history[index][1]:  # DELETED events
                self.expectations.forget(uid, 0.0)
        self.seen = target

    def reconcile(self) -> None:
        pool = make_pool(replicas=self.replicas, warm=self.warm)
        self.expectations.settle(self.view, 0.0)
        plan = plan_pool(pool, self.view, self.expectations.snapshot(), now=NOW)
        for create in plan.creates:
            labels = create.manifest["metadata"]["labels"]
            state = PodState(labels[STATE_LABEL])
            pod = self.cluster.create(state, POOL_UID, labels[REVISION_LABEL])
            self.expectations.expect_created(
                ExpectedPod(pod.name, pod.uid, state, pod.revision), 0.0
            )
        for relabel in plan.relabels:
            if self.cluster.relabel_if_warm(relabel.pod.uid, relabel.state):
                self.expectations.expect_relabelled(relabel.pod.uid, relabel.state, 0.0)
        for ref in plan.all_deletes:
            if self.cluster.delete(ref.uid, ref.resource_version):
                self.expectations.expect_deleted(ref.uid, 0.0)


def world_steps(external: bool) -> st.SearchStrategy[list[tuple[str, int]]]:
    others = ["ready", "finish"] + (["kill", "claim"] if external else [])
    return st.lists(
        st.one_of(
            st.just(("reconcile", 0)),
            st.tuples(st.just("catch_up"), st.integers(1, 8)),
            st.tuples(st.sampled_from(others), st.integers(0, 50)),
        ),
        max_size=50,
    )


def settle_world(cluster: Cluster, operator: Operator) -> None:
    """Terminations finish, pods start, the watch catches up; a few reconciles."""
    for _ in range(4):
        while any(p.terminating for p in cluster.pods.values()):
            cluster.finish(0)
        while any(not p.ready for p in cluster.pods.values()):
            cluster.become_ready(0)
        operator.catch_up(len(cluster.history))
        operator.reconcile()
        operator.catch_up(len(cluster.history))


def run(cluster: Cluster, operator: Operator, steps: list[tuple[str, int]], check: object) -> None:
    for action, argument in steps:
        if action == "reconcile":
            operator.reconcile()
        elif action == "catch_up":
            operator.catch_up(argument)
        elif action == "ready":
            cluster.become_ready(argument)
        elif action == "kill":
            cluster.kill(argument)
        elif action == "claim":
            cluster.claim(argument)
        else:
            cluster.finish(argument)
        check()  # type: ignore[operator]


def populated(active: int, warm: int) -> Cluster:
    cluster = Cluster()
    for state, count in ((ACTIVE, active), (WARM, warm)):
        for _ in range(count):
            cluster.create(state, POOL_UID)
    return cluster


@settings(max_examples=400, deadline=None)
@given(
    replicas=st.integers(0, 5),
    warm=st.integers(0, 5),
    initial=st.tuples(st.integers(0, 5), st.integers(0, 5)),
    steps=world_steps(external=True),
)
def test_no_interleaving_over_creates_and_the_pool_converges(
    replicas: int,
    warm: int,
    initial: tuple[int, int],
    steps: list[tuple[str, int]],
) -> None:
    cluster = populated(*initial)
    operator = Operator(cluster, replicas, warm)
    # A (re)started operator lists everything before its first reconcile (kopf's indices).
    operator.catch_up(len(cluster.history))
    most_active, most_warm = max(initial[0], replicas), max(initial[1], warm)

    def check() -> None:
        assert cluster.alive(ACTIVE) <= most_active, "more active pods than replicas"
        assert cluster.alive(WARM) <= most_warm, "more warm pods than the warm pool's size"

    run(cluster, operator, steps, check)
    claimed = cluster.alive(CLAIMED)
    settle_world(cluster, operator)
    assert cluster.alive(ACTIVE) == replicas
    assert cluster.alive(WARM) == warm
    assert cluster.alive(CLAIMED) == claimed  # claimed pods were never touched
    assert not operator.expectations.snapshot().pending


@settings(max_examples=300, deadline=None)
@given(
    replicas=st.integers(0, 5),
    warm=st.integers(0, 5),
    initial=st.tuples(st.integers(0, 5), st.integers(0, 5)),
    steps=world_steps(external=False),
)
def test_no_interleaving_over_deletes(
    replicas: int, warm: int, initial: tuple[int, int], steps: list[tuple[str, int]]
) -> None:
    """With nobody else deleting, a scale-down stops exactly at the target."""
    cluster = populated(*initial)
    operator = Operator(cluster, replicas, warm)
    operator.catch_up(len(cluster.history))
    least_active, least_warm = min(initial[0], replicas), min(initial[1], warm)

    def check() -> None:
        assert cluster.alive(ACTIVE) >= least_active, "deleted below replicas"
        assert cluster.alive(WARM) >= least_warm, "deleted below the warm pool's size"

    run(cluster, operator, steps, check)


def test_a_promotion_is_not_repeated_while_the_cache_lags() -> None:
    cluster = populated(0, 3)
    operator = Operator(cluster, replicas=1, warm=3)
    operator.catch_up(len(cluster.history))
    operator.reconcile()  # promotes one warm pod and refills the warm pool
    operator.reconcile()  # the cache still shows the promoted pod as warm
    assert cluster.alive(ACTIVE) == 1
    assert cluster.alive(WARM) == 3


def test_a_promotion_is_remembered_when_a_better_candidate_shows_up() -> None:
    cluster = populated(0, 3)
    operator = Operator(cluster, replicas=1, warm=3)
    operator.catch_up(len(cluster.history))
    cluster.become_ready(1)  # the cache does not show this yet
    operator.reconcile()  # promotes the oldest warm pod
    operator.catch_up(1)  # now it shows the Ready pod, but not the promotion
    operator.reconcile()  # the Ready pod is a better candidate: must not promote it too
    assert cluster.alive(ACTIVE) == 1


def test_a_delete_is_not_repeated_while_the_cache_lags() -> None:
    cluster = populated(3, 0)
    operator = Operator(cluster, replicas=2, warm=0)
    operator.catch_up(len(cluster.history))
    operator.reconcile()
    operator.reconcile()  # the cache does not show the deletion yet
    assert cluster.alive(ACTIVE) == 2


def test_a_create_is_not_repeated_while_the_cache_lags() -> None:
    cluster = Cluster()
    operator = Operator(cluster, replicas=2, warm=1)
    for _ in range(5):
        operator.reconcile()
    assert (cluster.alive(ACTIVE), cluster.alive(WARM)) == (2, 1)


def test_without_expectations_a_lagging_cache_would_over_create() -> None:
    """The failure the expectations exist for (agent-sandbox #1215), shown to be real."""
    cluster = Cluster()
    pool = make_pool(replicas=3)
    stale_view: tuple[ObservedPod, ...] = ()
    for _ in range(5):  # five watch events arrive before the cache shows any create
        for create in plan_pool(
            pool, stale_view, ExpectationsStore().for_pool(KEY).snapshot(), now=NOW
        ).creates:
            cluster.create(PodState(create.manifest["metadata"]["labels"][STATE_LABEL]), POOL_UID)
    assert cluster.alive(ACTIVE) == 15


def test_expectations_expire_so_a_lost_event_cannot_stall_a_pool_forever() -> None:
    expectations = PoolExpectations(ttl=10.0)
    expectations.expect_created(ExpectedPod("a", "uid-a", ACTIVE, None), now=0.0)
    expectations.settle([], now=5.0)
    assert expectations.snapshot().pending
    assert expectations.next_deadline() == 10.0
    expectations.settle([], now=10.0)
    assert not expectations.snapshot().pending


def test_a_deleted_event_that_overtakes_the_create_response_is_remembered() -> None:
    expectations = PoolExpectations()
    expectations.forget("uid-a", now=0.0)  # DELETED arrives first
    expectations.expect_created(ExpectedPod("a", "uid-a", ACTIVE, None), now=0.0)
    assert not expectations.snapshot().pending


def test_a_delete_is_settled_once_the_pod_is_seen_terminating() -> None:
    pod = ObservedPod(
        "a",
        "team",
        "uid-a",
        "1",
        "agents",
        ACTIVE,
        None,
        POOL_UID,
        T0,
        False,
        "Running",
        True,
        "node-a",
        None,
    )
    expectations = PoolExpectations()
    expectations.expect_deleted("uid-a", now=0.0)
    expectations.settle([pod], now=1.0)
    assert expectations.snapshot().deletes == {"uid-a"}
    expectations.settle([replace(pod, terminating=True)], now=2.0)
    assert not expectations.snapshot().pending
