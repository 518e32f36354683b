"""Which warm pod a claim gets: the pools' warm Ready pods, kept in order for the binds.

A bind happens at every claim, so choosing its pod must not cost a pass over the pool
(thousands of pods, most of them claimed under load). `WarmPods` holds one pool's pods
as its pod events describe them and keeps, per (controller, revision) and per node, the
warm Ready candidates sorted oldest first, and per node the count of claimed pods. A
choice then looks at the head of each node's list: O(nodes), not O(pods); an update is
a binary search plus a list insert or delete (a memmove over at most one node's pods).

It is pure data, no I/O. It only decides which pod to try: the bind's test-and-set on
the pod's resourceVersion (core/claims.py, `bind_patch`) decides who gets it, so an
index a little behind the apiserver costs a lost race, never a double bind.

The choice: among the pool's own warm pods (its controller), alive and Ready, of the
required revision if one is, neither `reserved` (binds in flight in this process) nor
`skip`ped (lost races), the one on the node holding the fewest claimed (or reserved)
pods of the pool, then the oldest (warmed longest), then by name.
"""

from __future__ import annotations

import bisect
import datetime
from collections import Counter
from collections.abc import Collection, Iterable
from typing import Final

from swarmops.core.pods import ObservedPod, PodState

_EPOCH: Final = datetime.datetime.min.replace(tzinfo=datetime.UTC)

# (created, name, uid): a candidate's place in its node's list, oldest first.
_Key = tuple[datetime.datetime, str, str]
# (controller uid, revision): candidates are looked up by what a claim requires.
_Group = tuple[str | None, str | None]


def _key(pod: ObservedPod) -> _Key:
    return (pod.created or _EPOCH, pod.name, pod.uid)


def _node(pod: ObservedPod) -> str:
    return pod.node_name or ""


def _is_candidate(pod: ObservedPod) -> bool:
    return pod.state is PodState.WARM and pod.ready and pod.alive


class WarmPods:
    """One pool's pods, as far as choosing a warm one to bind goes."""

    __slots__ = ("_candidates", "_claimed", "_pods")

    def __init__(self) -> None:
        self._pods: dict[str, ObservedPod] = {}  # uid -> the latest observation
        self._candidates: dict[_Group, dict[str, list[_Key]]] = {}  # -> node -> sorted
        self._claimed: Counter[str] = Counter()  # node -> alive claimed pods

    @classmethod
    def of(cls, pods: Iterable[ObservedPod]) -> WarmPods:
        index = cls()
        for pod in pods:
            index.update(pod)
        return index

    def __len__(self) -> int:
        return len(self._pods)

    def get(self, uid: str) -> ObservedPod | None:
        return self._pods.get(uid)

    def update(self, pod: ObservedPod) -> None:
        """Take in the latest observation of a pod of this pool (a watch event)."""
        self.remove(pod.uid)
        self._pods[pod.uid] = pod
        if not pod.alive:
            return
        if pod.state is PodState.CLAIMED:
            self._claimed[_node(pod)] += 1
        elif _is_candidate(pod):
            group = self._candidates.setdefault((pod.controller_uid, pod.revision), {})
            bisect.insort(group.setdefault(_node(pod), []), _key(pod))

    def remove(self, uid: str) -> None:
        """Forget a pod (deleted, or no longer of this pool)."""
        pod = self._pods.pop(uid, None)
        if pod is None or not pod.alive:
            return
        node = _node(pod)
        if pod.state is PodState.CLAIMED:
            self._claimed[node] -= 1
            if self._claimed[node] <= 0:
                del self._claimed[node]
        elif _is_candidate(pod):
            group_key = (pod.controller_uid, pod.revision)
            group = self._candidates[group_key]
            keys = group[node]
            key = _key(pod)
            del keys[bisect.bisect_left(keys, key)]
            if not keys:
                del group[node]
                if not group:
                    del self._candidates[group_key]

    def choose(
        self,
        *,
        pool_uid: str | None,
        revision: str | None = None,
        reserved: Collection[str] = (),
        skip: Collection[str] = (),
    ) -> ObservedPod | None:
        """The warm pod to hand out next (see the module's docstring), or None."""
        load = self._claimed.copy()
        for uid in reserved:
            pod = self._pods.get(uid)
            if pod is not None and pod.alive and pod.state is not PodState.CLAIMED:
                load[_node(pod)] += 1
        best: tuple[int, datetime.datetime, str] | None = None
        chosen: str | None = None
        for (owner, pod_revision), nodes in self._candidates.items():
            if owner != pool_uid or (revision is not None and pod_revision != revision):
                continue
            for node, keys in nodes.items():
                # The node's oldest candidate that is free; reserved and skipped pods are
                # few (binds in flight, lost races), so this stops within a few steps.
                for created, name, uid in keys:
                    if uid in reserved or uid in skip:
                        continue
                    rank = (load[node], created, name)
                    if best is None or rank < best:
                        best, chosen = rank, uid
                    break
        return None if chosen is None else self._pods[chosen]


def choose_warm_pod(
    pods: Iterable[ObservedPod],
    *,
    pool_name: str,
    pool_uid: str | None,
    revision: str | None = None,
    reserved: Collection[str] = (),
    skip: Collection[str] = (),
) -> ObservedPod | None:
    """The same choice from a list of pods (of any pool): `WarmPods` built on the spot."""
    return WarmPods.of(p for p in pods if p.pool == pool_name).choose(
        pool_uid=pool_uid, revision=revision, reserved=reserved, skip=skip
    )
