"""choose_warm_pod is written for speed (one pass, the oldest candidate per node); it must
choose exactly what the plain definition chooses."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

from hypothesis import given
from hypothesis import strategies as st

from swarmops.core.claims import choose_warm_pod
from swarmops.core.pods import ObservedPod, PodState
from swarmops.core.testing import POOL_UID, T0, make_pod


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
