"""AgentClaim handlers: thin, level-triggered, idempotent, with a lean bind path.

kopf keeps the indices, filled from its watches before any handler runs: the claims,
the pods labelled with a claim (from the same label-selected pod watch the pools
use), and, from handlers/pools.py, the pools and their pods. Watch events only put a
claim's key on a work queue; the reconcile reads the indices, asks core/claims.py
what to do, performs the writes and patches the status.

The bind path, from a claim's ADDED event to its Bound status, is two API calls (the
pod's bind patch or a cold-start create, then the status patch) and no LIST. Events
are posted in the background, off that path.

Process memory only makes things faster or quieter, never safe or unsafe: the
apiserver's test-and-set on the pod decides who gets it, and the pod records the
bind. What memory holds:
* reservations: pods this process is binding (or bound, before the watch shows it),
  so two of its own reconciles never race each other for one pod;
* just-bound pods, until the claim-pod index shows them, so a claim whose pod event
  has not arrived is not bound twice nor declared lost;
* its own last status write per claim, until the claim's watch shows it, so a lagging
  cache never turns into a duplicated Event or a phase going backwards;
* which Pending claims wait for a warm pod of which pool, to wake them (oldest first)
  when one becomes Ready, and which are blocked on their pool, to wake them when it
  changes. Every Pending claim also has a timer at its bind deadline;
* per pool, its warm pods in the order they are handed out (core/warmpods.py), built
  from the pool pods' index at the pool's first bind and kept current by pod events,
  so a bind does not scan the pool. It only picks the pod to try.

Pod events come from the pools' pod handler (handlers/pools.py), which feeds both
controllers: kopf's bookkeeping per handler invocation is paid once per event, not twice.

No kopf resource handler with state is used, so kopf writes nothing onto the claims.
The only finalizer is SwarmOps' own, on claims whose pod outlives them (Retain).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import kopf

from swarmops.agent.contract import AgentEndpoint, Assignment, PodRole, agent_endpoint
from swarmops.api import AgentClaim, AgentClaimStatus, AgentPool
from swarmops.api.agentclaim import ClaimPhase
from swarmops.api.common import API_VERSION
from swarmops.core.claims import (
    BindMode,
    ClaimedPod,
    ClaimEvent,
    ClaimPlan,
    bind_failed_status,
    bind_patch,
    bound_status,
    claim_events,
    cold_start_manifest,
    finalizer_patch,
    is_terminal,
    observe_claimed_pod,
    phase_rank,
    plan_claim,
    pool_revision,
    release_patch,
    required_revision,
)
from swarmops.core.pods import CLAIM_LABEL, ObservedPod, PodState
from swarmops.core.ratelimit import TokenBucket
from swarmops.core.warmpods import WarmPods
from swarmops.handlers.agentnotify import AgentNotifier, assignment_for_pod, claim_info
from swarmops.handlers.context import Services, services_of
from swarmops.handlers.objects import InvalidObject, parse_body, patch_status
from swarmops.handlers.pools import POOL_PODS_INDEX, POOLS_INDEX, PoolEntry
from swarmops.handlers.queue import WorkQueue
from swarmops.kube.client import KubeClient, PatchType
from swarmops.kube.errors import AlreadyExists, ApiError, Conflict, Invalid, NotFound
from swarmops.kube.events import EventRecorder, EventType, ObjectRef
from swarmops.kube.resources import AGENTCLAIMS, PODS
from swarmops.metrics import Metrics

logger = logging.getLogger(__name__)

ClaimKey = tuple[str, str]  # (namespace, claim name)
PoolKey = tuple[str, str]  # (namespace, pool name)

CLAIMS_INDEX = "swarmops_claims"
CLAIM_PODS_INDEX = "swarmops_claim_pods"

# Lost races in one reconcile before it gives the watch time to catch up (a lost race
# means the cache was behind, so the next candidate is likely stale too).
MAX_BIND_ATTEMPTS = 4
CONTENDED_RETRY_SECONDS = 0.1
# How long a bound pod stays reserved / remembered when its watch event never comes.
MEMORY_TTL_SECONDS = 60.0
# How long this process trusts its own status write over a cache that differs.
WRITTEN_STATUS_TTL_SECONDS = 30.0
# A deadline timer fires a little late rather than a little early.
DEADLINE_SLACK_SECONDS = 0.05
RETRY_AFTER_FAILURE_SECONDS = 2.0
# Normal Events about claims (Bound, Released) are budgeted operator-wide: at a hundred
# claims a second they would be two hundred Event writes a second, a fifth of the
# apiserver's writes on the claim path, that nobody reads (the claim's status says it
# all). Warnings are never held back. A burst of 50 keeps every Event of a quiet day.
NORMAL_EVENTS_PER_SECOND = 5.0
NORMAL_EVENTS_BURST = 50.0

T = TypeVar("T")


ClaimEntry = AgentClaim | InvalidObject


def parse_claim(body: Any) -> ClaimEntry:
    return parse_body(AgentClaim, body)


def _lost_race(error: ApiError) -> bool:
    """A bind patch refused because the pod is not what we saw: someone else won.

    409 is a conflict; 422 from a JSON patch is a failed `test` op ("testing value ...
    failed"); 404 is a pod deleted since. Any other 422 is a real error in the patch.
    """
    if isinstance(error, Conflict | NotFound):
        return True
    return isinstance(error, Invalid) and "test" in error.message.lower()


@dataclass
class _Bind:
    """The outcome of one bind attempt."""

    pod: ClaimedPod | None = None
    contended: bool = False  # every candidate tried was lost to a race
    failure: ApiError | None = None  # the apiserver refused a pod write
    agent: AgentEndpoint | None = None  # where the bound pod's agent listens, if it has one


class ClaimController:
    """Reconciles AgentClaims from kopf's indices; one reconcile per claim at a time."""

    def __init__(
        self,
        *,
        client: KubeClient,
        events: EventRecorder,
        metrics: Metrics,
        services: Services,
        claims: kopf.Index[ClaimKey, ClaimEntry],
        claim_pods: kopf.Index[ClaimKey, ClaimedPod],
        pools: kopf.Index[PoolKey, PoolEntry],
        pool_pods: kopf.Index[PoolKey, ObservedPod],
    ) -> None:
        self._client = client
        self._events = events
        self._metrics = metrics
        self._resync = services.settings.resync_interval
        self._claims = claims
        self._claim_pods = claim_pods
        self._pools = pools
        self._pool_pods = pool_pods
        # Per pool, its pods ordered for the next bind: built from the pool pods' index
        # at the pool's first bind, then kept current by pod events (`pod_changed`).
        self._warm: dict[PoolKey, WarmPods] = {}
        self._warm_pool_of: dict[str, PoolKey] = {}  # pod uid -> the WarmPods holding it
        self._reserved: dict[str, float] = {}  # pod uid -> monotonic deadline
        self._just_bound: dict[str, tuple[ClaimedPod, float]] = {}  # claim uid -> pod
        self._released: dict[str, float] = {}  # pod uid -> deadline (Retain, leaving the watch)
        self._written: dict[str, tuple[AgentClaimStatus, float]] = {}  # claim uid -> write
        self._first_seen: dict[str, float] = {}  # claim uid -> monotonic
        self._waiting: dict[PoolKey, dict[ClaimKey, None]] = {}  # insertion order: oldest first
        self._blocked: dict[PoolKey, set[ClaimKey]] = {}
        self._woken: set[ClaimKey] = set()
        self._revisions: dict[tuple[str, int], str] = {}  # (pool uid, generation) -> revision
        self._reported_invalid: dict[ClaimKey, tuple[str, int]] = {}
        self._background: set[asyncio.Task[None]] = set()
        # Tells agents their claim (and role) over HTTP, in the background.
        self._notifier = AgentNotifier(metrics)
        self._event_budget = TokenBucket.full(
            NORMAL_EVENTS_PER_SECOND, _monotonic(), burst=NORMAL_EVENTS_BURST
        )
        self.queue: WorkQueue[ClaimKey] = WorkQueue(
            self.reconcile,
            workers=services.settings.workers,
            on_depth=metrics.claim_queue_depth.set,
        )

    async def stop(self) -> None:
        await self.queue.stop()
        await self._notifier.close()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # --- triggers (from watch events) --------------------------------------------------------

    def claim_changed(self, key: ClaimKey, uid: str) -> None:
        self._first_seen.setdefault(uid, _monotonic())
        self.queue.add(key)

    def claim_deleted(self, key: ClaimKey, uid: str) -> None:
        self.queue.forget(key)
        self._forget(key, uid)

    def pod_changed(self, pod: ObservedPod, labels: Any, body: Any, deleted: bool) -> None:
        namespace, uid = pod.namespace, pod.uid
        claim = labels.get(CLAIM_LABEL)
        if claim:
            self.queue.add((namespace, claim))
        self._index_warm(pod, deleted)
        if deleted or pod.state is not PodState.WARM:
            # The watch shows what this process wrote (or the pod is gone): the cache now
            # keeps the pod off every candidate list by itself.
            self._reserved.pop(uid, None)
        elif pod.ready and not pod.terminating:
            self._wake_waiting((namespace, pod.pool or ""))
        if deleted:
            self._notifier.forget(uid)
        elif pod.ready and not pod.terminating:
            self._tell_agent(namespace, claim, body)

    def _index_warm(self, pod: ObservedPod, deleted: bool) -> None:
        """Keep the pools' WarmPods current; pools without one are built when needed."""
        key = (pod.namespace, pod.pool or "")
        held_by = self._warm_pool_of.get(pod.uid)
        if held_by is not None and (deleted or held_by != key):
            self._unindex_warm(held_by, pod.uid)
        warm = None if deleted else self._warm.get(key)
        if warm is not None:
            warm.update(pod)
            self._warm_pool_of[pod.uid] = key

    def _unindex_warm(self, pool: PoolKey, uid: str) -> None:
        self._warm_pool_of.pop(uid, None)
        warm = self._warm.get(pool)
        if warm is not None:
            warm.remove(uid)

    def _warm_pods(self, pool: PoolKey) -> WarmPods:
        warm = self._warm.get(pool)
        if warm is None:
            # From kopf's index, which every pod event has updated before it reaches
            # `pod_changed`: from here on the events keep it current.
            pods = list(self._pool_pods.get(pool, ()))
            warm = self._warm[pool] = WarmPods.of(pods)
            self._warm_pool_of.update((pod.uid, pool) for pod in pods)
        return warm

    # --- the agents' hand-off (handlers/agentnotify.py) ---------------------------------------

    def _hand_off(self, claim: AgentClaim, bound: _Bind, status: AgentClaimStatus) -> None:
        """Tell the bound pod's agent its claim right away, in the background."""
        if bound.agent is None or bound.pod is None:
            return  # no agent port, or no IP yet (a cold start: told once Ready)
        info = claim_info(claim, bound.pod, expires_at=status.expires_at)
        assignment = Assignment(bound.agent.pod, bound.agent.pod_uid, PodRole.CLAIMED, info)
        self._notifier.notify(bound.agent, assignment)

    def _tell_agent(self, namespace: str, claim_name: str | None, body: Any) -> None:
        """Level-triggered hand-off: a Ready pool pod's agent is told what it is for,
        unless this process told it that already."""
        claim = None
        if claim_name:
            entry = _single(self._claims.get((namespace, claim_name), ()))
            claim = entry if isinstance(entry, AgentClaim) else None
        told = assignment_for_pod(body, claim)
        if told is not None:
            self._notifier.notify(*told)

    def pool_changed(self, key: PoolKey, deleted: bool) -> None:
        for claim in self._blocked.get(key, ()):
            self.queue.add(claim)
        if deleted:
            self._drop_warm(key)
            for claim in self._waiting.get(key, {}):
                self.queue.add(claim)
        else:
            # A spec change may offer what the first waiting claim needs (e.g. Recreate
            # turned off); claims of one pool all want the same pods, so one is enough.
            self._wake_waiting(key)

    def _wake_waiting(self, pool: PoolKey) -> None:
        """Wake the oldest claim waiting for a warm pod of `pool` that is not woken yet.

        All claims of one pool accept the same pods (capabilities are the pool's), so a
        new Ready warm pod is for the first in line; waking every waiting claim would
        only make the others find nothing.
        """
        for claim in self._waiting.get(pool, {}):
            if claim not in self._woken:
                self._woken.add(claim)
                self.queue.add(claim)
                return

    def _drop_warm(self, pool: PoolKey) -> None:
        warm = self._warm.pop(pool, None)
        if warm is not None:
            for uid in [u for u, held_by in self._warm_pool_of.items() if held_by == pool]:
                del self._warm_pool_of[uid]

    def _forget(self, key: ClaimKey, uid: str | None) -> None:
        self._woken.discard(key)
        self._reported_invalid.pop(key, None)
        for waiting in self._waiting.values():
            waiting.pop(key, None)
        for blocked in self._blocked.values():
            blocked.discard(key)
        if uid:
            self._just_bound.pop(uid, None)
            self._written.pop(uid, None)
            self._first_seen.pop(uid, None)

    # --- the reconcile ----------------------------------------------------------------------

    async def reconcile(self, key: ClaimKey) -> float | None:
        started = time.perf_counter()
        result = "error"
        try:
            delay = await self._reconcile(key)
            result = "ok"
            return delay
        finally:
            self._metrics.reconciles.labels("AgentClaim", result).inc()
            self._metrics.reconcile_seconds.labels("AgentClaim").observe(
                time.perf_counter() - started
            )

    async def _reconcile(self, key: ClaimKey) -> float | None:
        self._woken.discard(key)
        entry = _single(self._claims.get(key, ()))
        if entry is None:
            self._forget(key, None)
            return None
        if isinstance(entry, InvalidObject):
            await self._report_invalid(key, entry)
            return None
        claim = entry
        uid = claim.metadata.uid or ""
        namespace = claim.metadata.namespace or ""
        pool_key = (namespace, claim.spec.pool_ref.name)
        pool_entry = _single(self._pools.get(pool_key, ()))
        pool = pool_entry if isinstance(pool_entry, AgentPool) else None
        pool_invalid = pool_entry.message if isinstance(pool_entry, InvalidObject) else None
        before = self._effective_status(claim)
        plan = plan_claim(
            claim,
            before,
            pool=pool,
            pool_invalid=pool_invalid,
            own_pods=self._own_pods(key, uid),
            now=_utcnow(),
        )

        if plan.finalizer is True and not await self._set_finalizer(claim, present=True):
            return CONTENDED_RETRY_SECONDS
        await self._end_pods(claim, plan)

        status = plan.status
        bound: _Bind | None = None
        if plan.bind is not None and pool is not None:
            bound = await self._bind(claim, pool, plan.bind)
            if bound.pod is not None:
                self._just_bound[uid] = (bound.pod, _monotonic() + MEMORY_TTL_SECONDS)
                status = bound_status(claim, before, bound.pod, now=_utcnow())
                self._hand_off(claim, bound, status)
            elif bound.failure is not None:
                status = bind_failed_status(claim, before, bound.failure.message, now=_utcnow())

        if not await self._write_status(claim, before, status):
            return None  # the claim is gone
        self._track(key, pool_key, plan, status)
        latency = self._observe(claim, before, status, bound)
        self._post_events(claim, claim_events(before, status, latency_ms=latency))

        if plan.finalizer is False:
            await self._set_finalizer(claim, present=False)
        return self._next_look(plan, status, bound)

    def _next_look(
        self, plan: ClaimPlan, status: AgentClaimStatus, bound: _Bind | None
    ) -> float | None:
        if bound is not None and bound.contended and bound.pod is None:
            return CONTENDED_RETRY_SECONDS
        if bound is not None and bound.failure is not None:
            return RETRY_AFTER_FAILURE_SECONDS
        if is_terminal(status.phase):
            return None
        if status.phase is ClaimPhase.BOUND:
            # Pod events wake a bound claim; the timer is only for its ttl.
            if status.expires_at is None:
                return self._resync
            until = (status.expires_at - _utcnow()).total_seconds()
            return min(self._resync, max(0.0, until) + DEADLINE_SLACK_SECONDS)
        if plan.requeue_after is None:
            return self._resync
        return min(self._resync, plan.requeue_after + DEADLINE_SLACK_SECONDS)

    # --- what the reconcile reads -----------------------------------------------------------

    def _effective_status(self, claim: AgentClaim) -> AgentClaimStatus:
        """The claim's status as this process last wrote it, while the watch lags behind."""
        uid = claim.metadata.uid or ""
        cached = claim.status
        entry = self._written.get(uid)
        if entry is None:
            return cached
        written, deadline = entry
        if phase_rank(cached.phase) > phase_rank(written.phase) or (
            cached.to_wire() == written.to_wire()
        ):
            del self._written[uid]  # the watch caught up (or someone else moved it on)
            return cached
        if _monotonic() > deadline:
            del self._written[uid]
            return cached
        return written

    def _own_pods(self, key: ClaimKey, uid: str) -> list[ClaimedPod]:
        now = _monotonic()
        pods = [
            pod
            for pod in self._claim_pods.get(key, ())
            if pod.owned_by(uid) and not self._is_released(pod.uid, now)
        ]
        remembered = self._just_bound.get(uid)
        if remembered is not None:
            pod, deadline = remembered
            if any(p.uid == pod.uid for p in pods) or deadline < now:
                del self._just_bound[uid]  # the index has it now (or never will)
            else:
                pods.append(pod)
        return pods

    def _is_released(self, pod_uid: str, now: float) -> bool:
        deadline = self._released.get(pod_uid)
        if deadline is None:
            return False
        if deadline < now:
            del self._released[pod_uid]
            return False
        return True

    def _revision(self, pool: AgentPool) -> str:
        key = (pool.metadata.uid or "", pool.metadata.generation or 0)
        revision = self._revisions.get(key)
        if revision is None:
            if len(self._revisions) > 1024:
                self._revisions.clear()
            revision = self._revisions[key] = pool_revision(pool)
        return revision

    def _live_reservations(self, now: float) -> dict[str, float]:
        expired = [uid for uid, deadline in self._reserved.items() if deadline < now]
        for uid in expired:
            del self._reserved[uid]
        return self._reserved

    # --- writes -----------------------------------------------------------------------------

    async def _bind(self, claim: AgentClaim, pool: AgentPool, mode: BindMode) -> _Bind:
        namespace = claim.metadata.namespace or ""
        pool_key = (namespace, pool.metadata.name)
        revision = required_revision(pool, self._revision(pool))
        skip: set[str] = set()
        outcome = _Bind()
        for _ in range(MAX_BIND_ATTEMPTS):
            now = _monotonic()
            # Choose and reserve with no await in between: this process's other
            # reconciles see the reservation before they choose.
            pod = self._warm_pods(pool_key).choose(
                pool_uid=pool.metadata.uid,
                revision=revision,
                reserved=self._live_reservations(now),
                skip=skip,
            )
            if pod is None:
                break
            self._reserved[pod.uid] = now + MEMORY_TTL_SECONDS
            try:
                body = await self._client.patch(
                    PODS,
                    pod.name,
                    bind_patch(pod, claim, now=_utcnow()),
                    namespace=namespace,
                    patch_type=PatchType.JSON,
                )
            except ApiError as error:
                self._reserved.pop(pod.uid, None)
                if isinstance(error, NotFound):
                    # Gone without a watch event this process saw (a relist): forget it.
                    self._unindex_warm(pool_key, pod.uid)
                if not _lost_race(error):
                    self._metrics.pod_operations.labels("claim", "error").inc()
                    logger.warning(
                        "AgentClaim %s/%s: binding pod %s failed: %s",
                        namespace,
                        claim.metadata.name,
                        pod.name,
                        error,
                    )
                    outcome.failure = error
                    return outcome
                self._metrics.claim_bind_conflicts.inc()
                skip.add(pod.uid)
                outcome.contended = True
                continue
            except BaseException:
                self._reserved.pop(pod.uid, None)
                raise
            self._metrics.pod_operations.labels("claim", "ok").inc()
            outcome.pod = observe_claimed_pod(body)
            outcome.agent = agent_endpoint(body)
            outcome.contended = False
            return outcome
        if outcome.contended or mode is not BindMode.WARM_OR_COLD:
            # Lost races mean the cache is behind: look again shortly, rather than pay
            # for a cold start while warm pods may be free.
            return outcome
        return await self._cold_start(claim, pool)

    async def _cold_start(self, claim: AgentClaim, pool: AgentPool) -> _Bind:
        namespace = claim.metadata.namespace or ""
        manifest = cold_start_manifest(pool, claim, now=_utcnow())
        try:
            try:
                body = await self._client.create(PODS, manifest, namespace)
            except AlreadyExists:
                # Created by an earlier attempt whose answer was lost, or a name taken.
                body = await self._client.get(PODS, manifest["metadata"]["name"], namespace)
                if not observe_claimed_pod(body).owned_by(claim.metadata.uid):
                    raise
        except ApiError as error:
            self._metrics.pod_operations.labels("create", "error").inc()
            logger.warning(
                "AgentClaim %s/%s: cold start failed: %s", namespace, claim.metadata.name, error
            )
            return _Bind(failure=error)
        self._metrics.pod_operations.labels("create", "ok").inc()
        return _Bind(pod=observe_claimed_pod(body))

    async def _end_pods(self, claim: AgentClaim, plan: ClaimPlan) -> None:
        """Release the claim's pod (delete or keep) and delete duplicates. Raising leaves
        the retry to the queue, with backoff."""
        namespace = claim.metadata.namespace or ""
        uid = claim.metadata.uid or ""
        for pod in (*plan.deletes, *plan.duplicates):
            if pod in plan.duplicates:
                logger.warning(
                    "AgentClaim %s/%s holds more than one pod; deleting %s",
                    namespace,
                    claim.metadata.name,
                    pod.name,
                )
            with contextlib.suppress(NotFound, Conflict):  # gone, or replaced: not ours
                await self._client.delete(PODS, pod.name, namespace, uid=pod.uid)
            self._metrics.pod_operations.labels("delete", "ok").inc()
        if plan.duplicates:
            names = ", ".join(p.name for p in plan.duplicates)
            self._post_events(
                claim,
                [
                    ClaimEvent(
                        "DuplicatePodDeleted", f"Deleted extra pods bound to it: {names}", True
                    )
                ],
            )
        for pod in plan.releases:
            try:
                await self._client.patch(
                    PODS,
                    pod.name,
                    release_patch(pod, uid),
                    namespace=namespace,
                    patch_type=PatchType.JSON,
                )
            except (NotFound, Invalid) as error:
                if isinstance(error, Invalid) and not _lost_race(error):
                    raise
                # Gone, or released already (its watch event has not come yet).
            now = _monotonic()
            for stale in [uid for uid, deadline in self._released.items() if deadline < now]:
                del self._released[stale]
            self._released[pod.uid] = now + MEMORY_TTL_SECONDS
            self._metrics.pod_operations.labels("release", "ok").inc()

    async def _set_finalizer(self, claim: AgentClaim, *, present: bool) -> bool:
        patch = finalizer_patch(claim, present=present)
        if patch is None:
            return True
        try:
            await self._client.patch(
                AGENTCLAIMS,
                claim.metadata.name,
                patch,
                namespace=claim.metadata.namespace,
                patch_type=PatchType.JSON,
            )
        except (NotFound, Conflict, Invalid) as error:
            # Gone, or its finalizers changed since the cache: the next event retries.
            logger.info(
                "AgentClaim %s/%s: finalizer not %s: %s",
                claim.metadata.namespace,
                claim.metadata.name,
                "added" if present else "removed",
                error,
            )
            return False
        return True

    async def _write_status(
        self, claim: AgentClaim, before: AgentClaimStatus, status: AgentClaimStatus
    ) -> bool:
        """Patch the status when it changed; False when the claim is gone."""
        wire = status.to_wire()
        if wire == before.to_wire():
            return True
        if not await patch_status(self._client, AGENTCLAIMS, claim, wire):
            return False
        self._written[claim.metadata.uid or ""] = (
            status,
            _monotonic() + WRITTEN_STATUS_TTL_SECONDS,
        )
        return True

    # --- bookkeeping, metrics and what people read ------------------------------------------

    def _track(
        self, key: ClaimKey, pool: PoolKey, plan: ClaimPlan, status: AgentClaimStatus
    ) -> None:
        pending = status.phase is ClaimPhase.PENDING
        waiting = self._waiting.setdefault(pool, {})
        if pending and plan.waiting:
            waiting.setdefault(key, None)
        else:
            waiting.pop(key, None)
        blocked = self._blocked.setdefault(pool, set())
        if pending and plan.blocked:
            blocked.add(key)
        else:
            blocked.discard(key)
        if not waiting:
            del self._waiting[pool]
        if not blocked:
            del self._blocked[pool]

    def _observe(
        self,
        claim: AgentClaim,
        before: AgentClaimStatus,
        after: AgentClaimStatus,
        bound: _Bind | None,
    ) -> float | None:
        """Count outcomes; return the bind latency this process measured, if it bound."""
        uid = claim.metadata.uid or ""
        latency: float | None = None
        if after.phase is not before.phase:
            condition = after.condition("Bound")
            reason = condition.reason if condition is not None else ""
            self._metrics.claims.labels(str(after.phase).lower(), reason).inc()
        if bound is not None and bound.pod is not None:
            warm = bound.pod.warm_hit is not False
            self._metrics.claim_warm_pool.labels("hit" if warm else "miss").inc()
            first_seen = self._first_seen.pop(uid, None)
            if first_seen is not None:
                seconds = _monotonic() - first_seen
                self._metrics.claim_bind_seconds.labels(str(warm).lower()).observe(seconds)
                latency = seconds * 1000
        if after.phase is not ClaimPhase.PENDING:
            self._first_seen.pop(uid, None)
        return latency

    def _post_events(self, claim: AgentClaim, events: Iterable[ClaimEvent]) -> None:
        about = ObjectRef(
            API_VERSION,
            "AgentClaim",
            claim.metadata.namespace or "",
            claim.metadata.name,
            claim.metadata.uid or "",
        )
        for event in events:
            if not event.warning:
                now = _monotonic()
                if self._event_budget.available(now) < 1:
                    self._metrics.events_suppressed.labels(event.reason).inc()
                    continue
                self._event_budget = self._event_budget.take(1, now)
            kind = EventType.WARNING if event.warning else EventType.NORMAL
            self._spawn(self._events.record(about, event.reason, event.message, kind))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        # Off the bind path; the recorder never raises (a lost Event is only logged).
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _report_invalid(self, key: ClaimKey, claim: InvalidObject) -> None:
        if self._reported_invalid.get(key) == (claim.uid, claim.generation):
            return
        self._reported_invalid[key] = (claim.uid, claim.generation)
        logger.error("AgentClaim %s/%s is invalid: %s", claim.namespace, claim.name, claim.message)
        about = ObjectRef(API_VERSION, "AgentClaim", claim.namespace, claim.name, claim.uid)
        await self._events.record(about, "InvalidSpec", claim.message, EventType.WARNING)


def _single(values: Iterable[T]) -> T | None:
    return next(iter(values), None)


def _monotonic() -> float:
    return time.monotonic()


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# --- kopf handlers ---------------------------------------------------------------------------


async def index_claims(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[ClaimKey, ClaimEntry]:
    return {(namespace or "", name): parse_claim(body)}


async def index_claim_pods(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[ClaimKey, ClaimedPod]:
    return {(namespace or "", labels[CLAIM_LABEL]): observe_claimed_pod(body)}


async def on_claim_event(
    event: kopf.RawEvent, namespace: str | None, name: str, uid: str, memo: Any, **_: Any
) -> None:
    controller = services_of(memo).claim_controller()
    key = (namespace or "", name)
    if event.get("type") == "DELETED":
        controller.claim_deleted(key, uid)
    else:
        controller.claim_changed(key, uid)


async def on_pool_event(
    event: kopf.RawEvent, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    controller = services_of(memo).claim_controller()
    controller.pool_changed((namespace or "", name), event.get("type") == "DELETED")


def register(registry: kopf.OperatorRegistry) -> None:
    """Register the AgentClaim handlers in `registry` (after pools.register: the pools'
    indices are shared)."""
    group, version = "swarmops.dev", "v1alpha1"
    kopf.index(group, version, "agentclaims", id=CLAIMS_INDEX, registry=registry)(index_claims)
    kopf.index(
        "v1", "pods", id=CLAIM_PODS_INDEX, labels={CLAIM_LABEL: kopf.PRESENT}, registry=registry
    )(index_claim_pods)
    # Explicit ids: the pool handlers of the same resources have the same function names.
    kopf.on.event(group, version, "agentclaims", id="claims/claim", registry=registry)(
        on_claim_event
    )
    # Pod events reach `ClaimController.pod_changed` through the pools' pod handler: one
    # kopf handler invocation per pod event, not one per controller.
    kopf.on.event(group, version, "agentpools", id="claims/pool", registry=registry)(on_pool_event)


__all__ = [
    "CLAIMS_INDEX",
    "CLAIM_PODS_INDEX",
    "POOLS_INDEX",
    "POOL_PODS_INDEX",
    "ClaimController",
    "register",
]
