"""Expectations: the operator's memory of its own writes that the watch has not shown yet.

Between a create (or delete, or relabel) and the watch event that reflects it, the
cache still shows the old world. Planning from the cache alone would redo the write
on every event in that gap; agent-sandbox #1215 made ~8,400 pods for a target of 500
that way. So every write is recorded here and folded into what the planner sees
until the cache catches up (or a deadline passes, in case an event was lost).

Process-local and in memory by design: after a restart, the cache is rebuilt from a
full LIST before any reconcile runs (kopf's indices), so nothing is in flight.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from swarmops.core.pods import ObservedPod, PodState

# How long an unobserved write is trusted. Watch events normally arrive within a
# second; this only bounds the damage of a lost event (a stalled refill, never excess).
DEFAULT_TTL_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class ExpectedPod:
    """A pod the operator created and has not seen in the cache yet."""

    name: str
    uid: str
    state: PodState
    revision: str | None


@dataclass(frozen=True)
class Expectations:
    """A read-only snapshot for the planner."""

    creates: tuple[ExpectedPod, ...] = ()
    deletes: frozenset[str] = frozenset()  # uids
    relabels: Mapping[str, PodState] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def pending(self) -> bool:
        return bool(self.creates or self.deletes or self.relabels)


NONE = Expectations()


class PoolExpectations:
    """The in-flight writes of one pool. Times are monotonic seconds, passed in."""

    def __init__(self, ttl: float = DEFAULT_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._creates: dict[str, tuple[ExpectedPod, float]] = {}
        self._deletes: dict[str, float] = {}
        self._relabels: dict[str, tuple[PodState, float]] = {}
        # uids already seen deleted: a DELETED event can overtake the create's response.
        self._gone: dict[str, float] = {}

    def expect_created(self, pod: ExpectedPod, now: float) -> None:
        if pod.uid not in self._gone:
            self._creates[pod.uid] = (pod, now + self.ttl)

    def expect_deleted(self, uid: str, now: float) -> None:
        if uid not in self._gone:
            self._deletes[uid] = now + self.ttl
        self._relabels.pop(uid, None)

    def expect_relabelled(self, uid: str, state: PodState, now: float) -> None:
        if uid not in self._gone:
            self._relabels[uid] = (state, now + self.ttl)

    def forget(self, uid: str, now: float) -> None:
        """The pod is gone from the cluster (its DELETED event): nothing about it is pending."""
        self._creates.pop(uid, None)
        self._deletes.pop(uid, None)
        self._relabels.pop(uid, None)
        self._gone[uid] = now + self.ttl

    def settle(self, observed: Iterable[ObservedPod], now: float) -> None:
        """Drop what the cache now shows, and what has waited past its deadline."""
        seen = {pod.uid: pod for pod in observed}
        self._creates = {
            uid: entry for uid, entry in self._creates.items() if uid not in seen and entry[1] > now
        }
        self._deletes = {
            uid: deadline
            for uid, deadline in self._deletes.items()
            # A pod we deleted stays in the cache while it terminates: that is enough.
            if uid in seen and not seen[uid].terminating and deadline > now
        }
        self._relabels = {
            uid: entry
            for uid, entry in self._relabels.items()
            if (uid not in seen or seen[uid].state != entry[0]) and entry[1] > now
        }
        self._gone = {uid: deadline for uid, deadline in self._gone.items() if deadline > now}

    def snapshot(self) -> Expectations:
        if not (self._creates or self._deletes or self._relabels):
            return NONE
        return Expectations(
            creates=tuple(pod for pod, _ in self._creates.values()),
            deletes=frozenset(self._deletes),
            relabels=MappingProxyType({uid: state for uid, (state, _) in self._relabels.items()}),
        )

    def next_deadline(self) -> float | None:
        deadlines = [
            *(deadline for _, deadline in self._creates.values()),
            *self._deletes.values(),
            *(deadline for _, deadline in self._relabels.values()),
        ]
        return min(deadlines) if deadlines else None


class ExpectationsStore:
    """Expectations of every pool this operator reconciles, by (namespace, name)."""

    def __init__(self, ttl: float = DEFAULT_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._pools: dict[tuple[str, str], PoolExpectations] = {}

    def for_pool(self, key: tuple[str, str]) -> PoolExpectations:
        if key not in self._pools:
            self._pools[key] = PoolExpectations(self.ttl)
        return self._pools[key]

    def drop_pool(self, key: tuple[str, str]) -> None:
        self._pools.pop(key, None)

    def forget_pod(self, key: tuple[str, str], uid: str, now: float) -> None:
        if key in self._pools:
            self._pools[key].forget(uid, now)
