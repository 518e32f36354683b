"""WarmPods keeps each node's warm candidates sorted so a bind looks at a few list heads;
built at once or updated event by event, it must choose exactly what the plain definition
(a pass over every pod) chooses."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from swarmops.core.pods import ObservedPod, PodState
from swarmops.core.testing import POOL_UID, T0, make_pod
from swarmops.core.warmpods import WarmPods, choose_warm_pod


def reference(
    pods: list[ObservedPod],
    revision: str | None,
    reserved: Collection[str],
    skip: Collection[str],
) -> ObservedPod | None:
    load: Counter[str] = Counter()
    candidates = []
    for pod in pods:
        if pod.pool != "agents" or not pod.alive:
            continue
        if pod.state is PodState.CLAIMED or pod.uid in reserved:
            load[pod.node_name or ""] += 1
        elif (
            pod.state is PodState.WARM
            and pod.ready
            and pod.controller_uid == POOL_UID
            and pod.uid not in skip
            and (revision is None or pod.revision == revision)
        ):
            candidates.append(pod)
    if not candidates:
        return None
    return min(candidates, key=lambda p: (load[p.node_name or ""], p.created or T0, p.name))


pods = st.lists(
    st.builds(
        lambda i, state, ready, node, age, revision, owner, terminating, phase, pool: make_pod(
            f"p{i}",
            state,
            ready=ready,
            node=node,
            age=age,
            revision=revision,
            owner=owner,
            terminating=terminating,
            phase=phase,
            pool=pool,
        ),
        i=st.integers(0, 10_000),
        state=st.sampled_from([PodState.WARM, PodState.CLAIMED, PodState.ACTIVE, None]),
        ready=st.booleans(),
        node=st.sampled_from(["n1", "n2", "n3", None]),
        age=st.integers(0, 5),
        revision=st.sampled_from(["r1", "r2"]),
        owner=st.sampled_from([POOL_UID, "uid-claim", "uid-other"]),
        terminating=st.booleans(),
        phase=st.sampled_from([None, "Running", "Succeeded", "Failed"]),
        pool=st.sampled_from(["agents", "other"]),
    ),
    max_size=30,
    unique_by=lambda pod: pod.uid,
)


@given(
    pods,
    st.sampled_from([None, "r1"]),
    st.sets(st.sampled_from([f"uid-p{i}" for i in range(20)])),
    st.sets(st.sampled_from([f"uid-p{i}" for i in range(20)])),
)
def test_the_fast_choice_is_the_plain_definition(
    observed: list[ObservedPod], revision: str | None, reserved: set[str], skip: set[str]
) -> None:
    chosen = choose_warm_pod(
        observed,
        pool_name="agents",
        pool_uid=POOL_UID,
        revision=revision,
        reserved=reserved,
        skip=skip,
    )
    assert chosen == reference(observed, revision, reserved, skip)


# An event stream: a pod's new observation (any pool: the index must ignore other pools'
# pods only where the handler keeps them apart, so the stream stays in one pool), or its
# deletion.
events = st.lists(
    st.one_of(
        pods.flatmap(lambda found: st.sampled_from(found) if found else st.nothing()).map(
            lambda pod: ("update", pod)
        ),
        st.integers(0, 40).map(lambda i: ("delete", f"uid-p{i}")),
    ),
    max_size=60,
)


@given(
    events,
    st.sampled_from([None, "r1"]),
    st.sets(st.sampled_from([f"uid-p{i}" for i in range(40)])),
    st.sets(st.sampled_from([f"uid-p{i}" for i in range(40)])),
)
def test_an_index_kept_by_events_chooses_as_the_plain_definition_of_the_latest_pods(
    stream: list[tuple[str, object]], revision: str | None, reserved: set[str], skip: set[str]
) -> None:
    index = WarmPods()
    latest: dict[str, ObservedPod] = {}
    for kind, item in stream:
        if kind == "update":
            assert isinstance(item, ObservedPod)
            pod = item if item.pool == "agents" else replace(item, pool="agents")
            index.update(pod)
            latest[pod.uid] = pod
        else:
            assert isinstance(item, str)
            index.remove(item)
            latest.pop(item, None)
        assert len(index) == len(latest)
    chosen = index.choose(pool_uid=POOL_UID, revision=revision, reserved=reserved, skip=skip)
    assert chosen == reference(list(latest.values()), revision, reserved, skip)


def test_a_pod_that_stops_being_warm_and_ready_leaves_the_candidates() -> None:
    old = make_pod("p1", PodState.WARM, age=5, node="n1")
    young = make_pod("p2", PodState.WARM, age=1, node="n1")
    index = WarmPods.of([old, young])
    assert index.choose(pool_uid=POOL_UID) == old
    index.update(replace(old, state=PodState.CLAIMED, resource_version="2"))
    assert index.choose(pool_uid=POOL_UID) == young
    index.update(replace(young, ready=False, resource_version="2"))
    assert index.choose(pool_uid=POOL_UID) is None
    index.remove("uid-p1")
    index.remove("uid-p2")
    assert len(index) == 0
