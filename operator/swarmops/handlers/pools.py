"""AgentPool handlers: thin, level-triggered, idempotent.

kopf keeps three indices, filled from its watches before any other handler runs: the
AgentPools, the pods that carry a `swarmops.dev/pool` label, and the
PodDisruptionBudgets that carry it (both watched with that label selector
server-side). Watch events of any of them only put the pool's key on a work queue;
the reconcile reads the pool, its pods and its budget from the indices, asks
`plan_pool` and `plan_budget` what to do, performs the writes, and patches the status.

Before planning, the reconcile stores the template's revision in a ControllerRevision
(the stable template must outlive the spec during a rollout) and reads the stable one
back when the spec no longer holds it, takes the current analysis step's due Prometheus
measurements, and reads the `swarmops.dev/rollout-action` annotation; after the status
write it removes that annotation. Draining pods' agents are asked whether they are idle.
docs/rollout.md has the whole story.

The warm refill is rate-limited per pool by a token bucket in memory
(`warmPool.refillRate` a second, a second's worth of burst); a restart starts with a
full bucket, which is at most one second's worth of extra creates.

No kopf resource handler with state is used (no on.create/update/resume), so kopf
writes nothing onto the pools: no progress annotations, no finalizer. Deleting a
pool is the garbage collector's job: the pods carry a controller ownerReference to
the pool, and the operator never deletes pods because their pool went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import kopf

from swarmops.agent.contract import agent_endpoint
from swarmops.api import AgentPool, AgentPoolStatus
from swarmops.api.agentpool import WarmPoolUpdatePolicy
from swarmops.api.common import API_VERSION
from swarmops.core.disruption import BudgetWrite, ObservedBudget, observe_budget, plan_budget
from swarmops.core.expectations import ExpectedPod, PoolExpectations
from swarmops.core.gpu import GpuRequest
from swarmops.core.gpu_fit import GpuNode, fit_event
from swarmops.core.pods import (
    DRAIN_STARTED_ANNOTATION,
    POOL_LABEL,
    STATE_LABEL,
    ObservedPod,
    PodState,
    observe_pod,
)
from swarmops.core.pool import (
    PodCreate,
    PodRef,
    PodRelabel,
    PoolPlan,
    desired_template,
    plan_pool,
    stored_revision,
    stored_revision_name,
    stored_template,
    unschedulable_event,
)
from swarmops.core.pool import with_write_failure as degraded
from swarmops.core.ratelimit import TokenBucket, refill_wait
from swarmops.core.rediscluster.names import SWARM_LABEL
from swarmops.core.revision import template_revision
from swarmops.core.rollout import (
    ROLLOUT_ACTION_ANNOTATION,
    MetricsJudgement,
    due_metrics,
    judge_metrics,
    parse_action,
)
from swarmops.handlers.agentnotify import request_drain
from swarmops.handlers.context import Services, services_of
from swarmops.handlers.gpu_nodes import ALL_GPU_NODES
from swarmops.handlers.objects import InvalidObject, object_ref, parse_body, patch_status
from swarmops.handlers.queue import WorkQueue
from swarmops.kube.client import KubeClient, PatchType
from swarmops.kube.errors import AlreadyExists, ApiError, Conflict, Invalid, NotFound
from swarmops.kube.events import EventRecorder, EventType, ObjectRef
from swarmops.kube.resources import AGENTPOOLS, CONTROLLERREVISIONS, PODDISRUPTIONBUDGETS, PODS
from swarmops.metrics import Metrics

logger = logging.getLogger(__name__)

PoolKey = tuple[str, str]  # (namespace, name)

POOLS_INDEX = "swarmops_pools"
POOL_PODS_INDEX = "swarmops_pool_pods"
BUDGETS_INDEX = "swarmops_pool_budgets"

# Creates go out in batches that double while they succeed (as the ReplicaSet
# controller does), so a template the apiserver rejects costs one call, not hundreds.
INITIAL_CREATE_BATCH = 1
# How long a budget this process created is trusted to show up in the watch.
BUDGET_EXPECTATION_SECONDS = 30.0
# After a failed or contended write, look again soon, then less and less often.
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
# How often the agents of draining pods are asked whether they are idle yet.
DRAIN_POLL_SECONDS = 2.0
# How long a drain this process started is trusted to show up in the watch.
DRAIN_EXPECTATION_SECONDS = 30.0

T = TypeVar("T")


PoolEntry = AgentPool | InvalidObject


def parse_pool(body: Any) -> PoolEntry:
    return parse_body(AgentPool, body)


@dataclass
class WriteOutcome:
    """What the writes of one reconcile achieved."""

    created: dict[PodState, int] = field(default_factory=dict)
    promoted: int = 0
    deleted: int = 0  # surplus
    replaced_unready: int = 0  # warm pods not Ready within the readiness timeout
    replaced_stale: int = 0  # warm pods of an old template (updatePolicy Recreate)
    contended: int = 0  # writes refused because the pod changed under us
    drained: int = 0  # active pods whose drain started
    drained_idle: int = 0  # draining pods deleted because their agent was idle
    failure: ApiError | None = None

    @property
    def created_total(self) -> int:
        return sum(self.created.values())


class PoolController:
    """Reconciles AgentPools from kopf's indices; one reconcile per pool at a time."""

    def __init__(
        self,
        *,
        client: KubeClient,
        events: EventRecorder,
        metrics: Metrics,
        services: Services,
        pools: kopf.Index[PoolKey, PoolEntry],
        pods: kopf.Index[PoolKey, ObservedPod],
        gpu_nodes: kopf.Index[str, GpuNode] | None = None,
        budgets: kopf.Index[PoolKey, ObservedBudget] | None = None,
    ) -> None:
        self._client = client
        self._events = events
        self._metrics = metrics
        self._expectations = services.expectations
        self._resync = services.settings.resync_interval
        self._pools = pools
        self._pods = pods
        # None: no PodDisruptionBudgets (an embedding that does not index them).
        self._budgets = budgets
        self._refill: dict[PoolKey, TokenBucket] = {}
        # Budgets this process created that the cache does not show yet: (pool uid,
        # deadline), so a lagging watch does not make it create them again.
        self._budgets_created: dict[PoolKey, tuple[str, float]] = {}
        # Pools whose Unschedulable Event is posted, until their pods can be placed again
        # (the cache may lag behind our own status write: never post it twice).
        self._unschedulable_posted: dict[PoolKey, str] = {}
        # None: the operator may not watch nodes, so GPU requests are not checked.
        self._gpu_nodes = gpu_nodes
        self._gpu_node_facts: dict[str, GpuNode] = {}
        # The last GPU verdict Event posted per pool (uid, reason, message): the pool in
        # the cache may not show our last status write yet, and must not post it twice.
        self._gpu_events: dict[PoolKey, tuple[str, str, str]] = {}
        self._retries: dict[PoolKey, int] = {}
        self._reported_invalid: dict[PoolKey, tuple[str, int]] = {}
        self._prometheus = services.prometheus
        # Templates per revision (the current one, and earlier ones read back from
        # their ControllerRevisions), and the revisions known to be stored, by
        # (pool uid, revision): they grow with template changes and go with the pool.
        self._templates: dict[PoolKey, dict[tuple[str, str], dict[str, Any]]] = {}
        self._stored: dict[PoolKey, set[tuple[str, str]]] = {}
        # Pods whose drain this process started, until the cache shows the annotation:
        # uid -> monotonic deadline.
        self._draining: dict[PoolKey, dict[str, float]] = {}
        self.queue: WorkQueue[PoolKey] = WorkQueue(
            self.reconcile,
            workers=services.settings.workers,
            on_depth=metrics.queue_depth.set,
        )

    # --- triggers (from watch events) --------------------------------------------------------

    def pool_changed(self, key: PoolKey) -> None:
        self.queue.add(key)

    def pool_deleted(self, key: PoolKey) -> None:
        # Nothing to write: the garbage collector removes the pods through their owner
        # references. Only this process's memory of the pool goes.
        self.queue.forget(key)
        self._expectations.drop_pool(key)
        self._retries.pop(key, None)
        self._reported_invalid.pop(key, None)
        self._gpu_events.pop(key, None)
        self._refill.pop(key, None)
        self._budgets_created.pop(key, None)
        self._unschedulable_posted.pop(key, None)
        self._draining.pop(key, None)
        self._templates.pop(key, None)
        self._stored.pop(key, None)
        self._metrics.forget_pool(*key)

    def pod_changed(self, key: PoolKey, uid: str, deleted: bool) -> None:
        if deleted:
            self._expectations.forget_pod(key, uid, _monotonic())
        self.queue.add(key)

    def budget_changed(self, key: PoolKey) -> None:
        self.queue.add(key)

    def gpu_node_changed(self, name: str, node: GpuNode | None) -> None:
        """Requeue the pools that ask for GPUs when a GPU node's placement facts change."""
        if node is None:
            if self._gpu_node_facts.pop(name, None) is None:
                return
        elif self._gpu_node_facts.get(name) == node:
            return  # a heartbeat or another field placement does not depend on
        else:
            self._gpu_node_facts[name] = node
        for key, entries in self._pools.items():
            if any(isinstance(e, AgentPool) and GpuRequest.of(e.spec.gpu) for e in entries):
                self.queue.add(key)

    def _gpu_node_list(self) -> list[GpuNode] | None:
        if self._gpu_nodes is None:
            return None
        return list(self._gpu_nodes.get(ALL_GPU_NODES, ()))

    # --- the reconcile ----------------------------------------------------------------------

    async def reconcile(self, key: PoolKey) -> float | None:
        started = time.perf_counter()
        result = "error"
        try:
            delay = await self._reconcile(key)
            result = "retry" if key in self._retries else "ok"
            return delay
        finally:
            self._metrics.reconciles.labels("AgentPool", result).inc()
            self._metrics.reconcile_seconds.labels("AgentPool").observe(
                time.perf_counter() - started
            )

    async def _reconcile(self, key: PoolKey) -> float | None:
        entry = _single(self._pools.get(key, ()))
        if entry is None:
            self.pool_deleted(key)
            return None
        if isinstance(entry, InvalidObject):
            await self._report_invalid(key, entry)
            return None
        pool = entry
        if pool.metadata.deletion_timestamp is not None:
            return None  # going away: its pods go with it, by garbage collection
        pods = list(self._pods.get(key, ()))
        expectations = self._expectations.for_pool(key)
        expectations.settle(pods, _monotonic())
        bucket = self._refill_bucket(key, pool)
        templates = await self._revision_templates(pool)
        action_value = pool.metadata.annotations.get(ROLLOUT_ACTION_ANNOTATION)
        action = parse_action(action_value)
        plan = plan_pool(
            pool,
            pods,
            expectations.snapshot(),
            now=_utcnow(),
            gpu_nodes=self._gpu_node_list(),
            create_budget=bucket.available(_monotonic()),
            templates=templates,
            action=action,
            metrics=await self._measure(pool),
            draining=self._draining_uids(key, pods),
        )
        # Spent when planned, not when created: a create the apiserver refuses still
        # counts, so a failing template is retried at the refill pace, not faster.
        warm_creates = sum(1 for c in plan.creates if c.state is PodState.WARM)
        self._refill[key] = bucket.take(warm_creates, _monotonic())
        written = pool.status
        if plan.rollout is not None and plan.rollout.status != pool.status.rollout:
            # Rollout progress first: an operator killed during the pod writes below then
            # resumes at the step those writes belong to, rather than at the step before
            # (which could undo them: a lost step 3 means step 2's weight).
            await self._write_status(pool, plan.status)
            written = plan.status
        outcome = await self._execute(pool, plan, expectations)
        budget_failure = await self._sync_budget(pool, key, plan.status.claimed)
        status = plan.status
        failure = outcome.failure or budget_failure
        if failure is not None:
            reason, message = _failure_reason(failure), failure.message
            if failure is budget_failure:
                reason = "DisruptionBudgetWriteFailed"
            status = degraded(pool, status, reason, message, now=_utcnow())
        await self._write_status(pool, status, written)
        await self._prune_revisions(pool, status)
        if action_value is not None:
            await self._consume_action(pool, action_value, known=action is not None)
        await self._record_rollout(pool, plan)
        await self._record_events(pool, outcome)
        await self._record_unschedulable(pool, key, status)
        await self._record_gpu_fit(pool, plan.status)
        self._metrics.observe_pool(
            *key,
            counts={"active": status.replicas, "warm": status.warm, "claimed": status.claimed},
            ready={"active": status.ready_replicas, "warm": status.warm_ready},
        )
        return self._next_look(key, expectations, plan, trouble=bool(failure or outcome.contended))

    def _refill_bucket(self, key: PoolKey, pool: AgentPool) -> TokenBucket:
        rate = float(pool.spec.warm_pool.refill_rate)
        now = _monotonic()
        bucket = self._refill.get(key)
        bucket = TokenBucket.full(rate, now) if bucket is None else bucket.with_rate(rate, now)
        self._refill[key] = bucket
        return bucket

    def _next_look(
        self, key: PoolKey, expectations: PoolExpectations, plan: PoolPlan, *, trouble: bool
    ) -> float:
        delay = self._resync
        refill = refill_wait(self._refill[key], plan.deferred, _monotonic())
        if refill is not None:
            delay = min(delay, refill)
        recheck_at = plan.recheck_at
        if recheck_at is not None:
            # A timeout, a timed pause, a measurement or a drain deadline comes due: no
            # event will say so.
            until = (recheck_at - _utcnow()).total_seconds()
            delay = min(delay, max(0.0, until) + 0.05)
        if plan.draining:
            delay = min(delay, DRAIN_POLL_SECONDS)
        if trouble:
            attempt = self._retries.get(key, 0)
            self._retries[key] = attempt + 1
            delay = min(delay, RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
        else:
            self._retries.pop(key, None)
        deadline = expectations.next_deadline()
        if deadline is not None:
            # A lost watch event must not stall the pool past the expectation's deadline.
            delay = min(delay, max(0.0, deadline - _monotonic()) + 0.1)
        return delay

    # --- writes -----------------------------------------------------------------------------

    async def _execute(
        self, pool: AgentPool, plan: PoolPlan, expectations: PoolExpectations
    ) -> WriteOutcome:
        outcome = WriteOutcome()
        namespace = pool.metadata.namespace or ""

        async def create(item: PodCreate) -> None:
            try:
                body = await self._client.create(PODS, item.manifest, namespace)
            except AlreadyExists:
                return  # a generateName collision: the next reconcile creates another
            created = observe_pod(body)
            expectations.expect_created(
                ExpectedPod(created.name, created.uid, item.state, created.revision),
                _monotonic(),
            )
            outcome.created[item.state] = outcome.created.get(item.state, 0) + 1

        async def promote(item: PodRelabel) -> None:
            try:
                await self._relabel(namespace, item)
            except (Conflict, NotFound, Invalid):
                # The pod changed (claimed, deleted) since the cache showed it as warm.
                outcome.contended += 1
                return
            expectations.expect_relabelled(item.pod.uid, item.state, _monotonic())
            outcome.promoted += 1

        async def delete(item: tuple[PodRef, str]) -> None:
            ref, why = item
            try:
                await self._client.delete(
                    PODS, ref.name, namespace, uid=ref.uid, resource_version=ref.resource_version
                )
            except NotFound:
                pass  # already gone: the goal
            except Conflict:
                # Changed since we looked (maybe claimed): never delete what we did not see.
                outcome.contended += 1
                return
            expectations.expect_deleted(ref.uid, _monotonic())
            if why == "idle":
                outcome.drained_idle += 1
            elif why == "unready":
                outcome.replaced_unready += 1
            elif why == "stale":
                outcome.replaced_stale += 1
            else:
                outcome.deleted += 1

        key = _key(namespace, pool.metadata.name)
        drain_started = _utcnow()

        async def drain(ref: PodRef) -> None:
            # The uid in a merge patch is a precondition: never mark a successor pod.
            marker = {DRAIN_STARTED_ANNOTATION: _rfc3339(drain_started)}
            try:
                await self._client.patch(
                    PODS,
                    ref.name,
                    {"metadata": {"uid": ref.uid, "annotations": marker}},
                    namespace=namespace,
                )
            except (Conflict, NotFound, Invalid):
                outcome.contended += 1
                return
            deadline = _monotonic() + DRAIN_EXPECTATION_SECONDS
            self._draining.setdefault(key, {})[ref.uid] = deadline
            outcome.drained += 1

        deletes = [
            *((ref, "surplus") for ref in plan.deletes),
            *((ref, "unready") for ref in plan.unready),
            *((ref, "stale") for ref in plan.stale),
        ]

        async def finish_drains() -> None:
            idle = await self._idle_agents(namespace, plan.draining)
            await self._batch([(ref, "idle") for ref in idle], delete, "delete")

        # Relabels and removals first: they are what a scale-up, a rollout step and a
        # rollback are waiting for; new pods (mostly warm refills) take the longest. A
        # stage the apiserver refuses does not hold back the others: they are independent.
        stages: tuple[Callable[[], Awaitable[None]], ...] = (
            lambda: self._batch(plan.relabels, promote, "promote"),
            lambda: self._batch(deletes, delete, "delete"),
            lambda: self._batch(plan.drains, drain, "drain"),
            lambda: self._slow_start(plan.creates, create, "create"),
            finish_drains,
        )
        for stage in stages:
            try:
                await stage()
            except ApiError as error:
                outcome.failure = outcome.failure or error
                logger.warning(
                    "AgentPool %s/%s: a pod write failed: %s", namespace, pool.metadata.name, error
                )
        return outcome

    async def _idle_agents(self, namespace: str, draining: Sequence[PodRef]) -> list[PodRef]:
        """The draining pods whose agents say they are idle: safe to delete now. Each is
        asked to drain (again: it is idempotent), so a busy agent stops taking tasks and
        becomes idle once its current one is done, rather than at the drain deadline."""
        if not draining:
            return []

        async def is_idle(session: aiohttp.ClientSession, ref: PodRef) -> bool:
            try:
                body = await self._client.get(PODS, ref.name, namespace)
            except NotFound:
                return False
            endpoint = agent_endpoint(body)
            if endpoint is None or (body.get("metadata") or {}).get("uid") != ref.uid:
                return False  # no address yet: the drain deadline decides
            answer = await request_drain(session, endpoint)
            return bool(answer and answer.get("idle") is True)

        async with aiohttp.ClientSession() as session:
            answers = await asyncio.gather(*(is_idle(session, ref) for ref in draining))
        return [ref for ref, idle in zip(draining, answers, strict=True) if idle]

    def _draining_uids(self, key: PoolKey, pods: Sequence[ObservedPod]) -> frozenset[str]:
        """Pods this process started draining that the cache may not show so yet."""
        started = self._draining.get(key)
        if not started:
            return frozenset()
        shown = {p.uid for p in pods if p.drain_started_at is not None}
        now = _monotonic()
        for uid in [u for u, deadline in started.items() if u in shown or deadline < now]:
            del started[uid]
        return frozenset(started)

    async def _revision_templates(self, pool: AgentPool) -> dict[str, dict[str, Any]]:
        """Store the current template's revision; the stable revision's template when the
        spec no longer holds it (during a rollout)."""
        uid = pool.metadata.uid or ""
        namespace = pool.metadata.namespace or ""
        pool_key = _key(namespace, pool.metadata.name)
        templates = self._templates.setdefault(pool_key, {})
        stored = self._stored.setdefault(pool_key, set())
        template = desired_template(pool)
        revision = template_revision(template)
        templates[(uid, revision)] = template
        if (uid, revision) not in stored:
            try:
                await self._client.create(
                    CONTROLLERREVISIONS, stored_revision(pool, template, revision), namespace
                )
                stored.add((uid, revision))
            except AlreadyExists:
                stored.add((uid, revision))
            except ApiError as error:
                # Not fatal to this reconcile: only a later rollback or stable refill
                # after an operator restart needs it. Tried again on the next reconcile.
                logger.warning(
                    "AgentPool %s/%s: storing revision %s failed: %s",
                    namespace,
                    pool.metadata.name,
                    revision,
                    error,
                )
        rollout = pool.status.rollout
        stable = (rollout.stable_revision if rollout else None) or pool.status.current_revision
        if not stable or stable == revision:
            return {}
        known = templates.get((uid, stable))
        if known is None:
            name = stored_revision_name(pool.metadata.name, stable)
            try:
                body = await self._client.get(CONTROLLERREVISIONS, name, namespace)
            except ApiError as error:
                # The plan reports the revision as unknown (Degraded) and works without it.
                if not isinstance(error, NotFound):
                    logger.warning(
                        "AgentPool %s/%s: reading revision %s failed: %s",
                        namespace,
                        pool.metadata.name,
                        stable,
                        error,
                    )
                return {}
            known = stored_template(body, stable)
            if known is None:
                return {}
            templates[(uid, stable)] = known
        return {stable: known}

    async def _prune_revisions(self, pool: AgentPool, status: AgentPoolStatus) -> None:
        """Delete the stored templates of revisions this status no longer names (an old
        stable after a promotion, a superseded canary). Only on that transition: one
        missed by a crash right after the status write stays until the pool goes."""

        def named(of: AgentPoolStatus) -> set[str]:
            rollout = of.rollout
            revisions = {of.current_revision, of.update_revision}
            if rollout is not None:
                revisions |= {rollout.stable_revision, rollout.canary_revision}
            return {r for r in revisions if r}

        gone = named(pool.status) - named(status)
        namespace = pool.metadata.namespace or ""
        key = _key(namespace, pool.metadata.name)
        for revision in sorted(gone):
            self._templates.get(key, {}).pop((pool.metadata.uid or "", revision), None)
            self._stored.get(key, set()).discard((pool.metadata.uid or "", revision))
            name = stored_revision_name(pool.metadata.name, revision)
            try:
                await self._client.delete(CONTROLLERREVISIONS, name, namespace)
            except NotFound:
                pass
            except ApiError as error:
                logger.warning(
                    "AgentPool %s/%s: deleting revision %s failed: %s",
                    namespace,
                    pool.metadata.name,
                    revision,
                    error,
                )

    async def _measure(self, pool: AgentPool) -> MetricsJudgement | None:
        """Take the current analysis step's due measurements and judge them."""
        rollout = pool.status.rollout
        if rollout is None:
            return None
        now = _utcnow()
        due = due_metrics(pool.spec, rollout, now)
        revision = rollout.canary_revision or ""
        taken = await asyncio.gather(
            *(self._prometheus.measure(metric, revision=revision, now=now) for metric in due)
        )
        judgement = judge_metrics(
            pool.spec, rollout, {m.name: t for m, t in zip(due, taken, strict=True)}
        )
        if judgement is not None and due:
            self._metrics.rollout_analysis.labels(str(judgement.verdict)).inc()
        return judgement

    async def _consume_action(self, pool: AgentPool, value: str, *, known: bool) -> None:
        """Remove the rollout action annotation once acted on (only if it still says so)."""
        if not known:
            await self._events.record(
                object_ref(pool),
                "InvalidRolloutAction",
                f"{ROLLOUT_ACTION_ANNOTATION}: {value!r} is none of promote, promote-full, "
                "abort, retry; ignored",
                EventType.WARNING,
            )
        path = "/metadata/annotations/" + ROLLOUT_ACTION_ANNOTATION.replace("~", "~0").replace(
            "/", "~1"
        )
        with contextlib.suppress(Conflict, NotFound, Invalid):
            await self._client.patch(
                AGENTPOOLS,
                pool.metadata.name,
                [{"op": "test", "path": path, "value": value}, {"op": "remove", "path": path}],
                namespace=pool.metadata.namespace,
                patch_type=PatchType.JSON,
            )

    async def _record_rollout(self, pool: AgentPool, plan: PoolPlan) -> None:
        decision = plan.rollout
        if decision is None:
            return
        for event in decision.events:
            kind = EventType.WARNING if event.warning else EventType.NORMAL
            await self._events.record(object_ref(pool), event.reason, event.message, kind)
        status = decision.status
        if status is None:
            return
        namespace, name = pool.metadata.namespace or "", pool.metadata.name
        self._metrics.observe_rollout(
            namespace,
            name,
            phase=str(status.phase),
            step=status.current_step_index,
            weight=status.canary_weight,
        )
        if decision.finished is not None and status.started_at is not None:
            took = (_utcnow() - status.started_at).total_seconds()
            self._metrics.rollout_duration.labels(decision.finished).observe(max(0.0, took))

    async def _relabel(self, namespace: str, item: PodRelabel) -> None:
        # Test-and-set on the state label and uid rather than a resourceVersion
        # precondition: pods' status changes all the time, their state label does not.
        label_path = "/metadata/labels/" + STATE_LABEL.replace("~", "~0").replace("/", "~1")
        await self._client.patch(
            PODS,
            item.pod.name,
            [
                {"op": "test", "path": "/metadata/uid", "value": item.pod.uid},
                {"op": "test", "path": label_path, "value": str(PodState.WARM)},
                {"op": "replace", "path": label_path, "value": str(item.state)},
            ],
            namespace=namespace,
            patch_type=PatchType.JSON,
        )

    async def _slow_start(
        self, items: Sequence[T], write: Callable[[T], Awaitable[None]], operation: str
    ) -> None:
        batch, start = INITIAL_CREATE_BATCH, 0
        while start < len(items):
            await self._batch(items[start : start + batch], write, operation)
            start += batch
            batch *= 2

    async def _batch(
        self, items: Sequence[T], write: Callable[[T], Awaitable[None]], operation: str
    ) -> None:
        if not items:
            return
        results = await asyncio.gather(*(write(item) for item in items), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        self._metrics.pod_operations.labels(operation, "ok").inc(len(items) - len(errors))
        if errors:
            self._metrics.pod_operations.labels(operation, "error").inc(len(errors))
            for error in errors:
                if not isinstance(error, ApiError):
                    raise error  # a bug or a network failure: the queue retries with backoff
            first = errors[0]
            assert isinstance(first, ApiError)
            raise first

    async def _sync_budget(self, pool: AgentPool, key: PoolKey, claimed: int) -> ApiError | None:
        """Create or correct the pool's PodDisruptionBudget; the refusal, if any."""
        if self._budgets is None:
            return None
        observed = _single(self._budgets.get(key, ()))
        created = self._budgets_created.get(key)
        if observed is not None or (created and created[1] < _monotonic()):
            self._budgets_created.pop(key, None)
        elif created and created[0] == pool.metadata.uid:
            return None  # ours, in flight to the cache
        write = plan_budget(pool, claimed, observed)
        if write is None:
            return None
        try:
            await self._write_budget(pool, write)
            if write.manifest is not None:
                deadline = _monotonic() + BUDGET_EXPECTATION_SECONDS
                self._budgets_created[key] = (pool.metadata.uid or "", deadline)
        except NotFound:
            return None  # replaced meanwhile: its watch event brings us back
        except ApiError as error:
            if isinstance(error, AlreadyExists):
                if await self._budget_is_ours(pool, write.name):
                    return None  # created by an earlier reconcile; the cache is behind
                # Not labelled or not owned by this pool: somebody's own budget.
                error = AlreadyExists(
                    error.status,
                    error.reason,
                    f"a PodDisruptionBudget named {write.name} exists and is not this pool's "
                    "(it lacks the swarmops.dev/pool label): rename it, or the pool",
                    error.details,
                )
            elif isinstance(error, Invalid | Conflict) and write.patch is not None:
                return None  # the uid test failed: a new budget, its event brings us back
            logger.warning(
                "AgentPool %s/%s: the PodDisruptionBudget write failed: %s",
                pool.metadata.namespace,
                pool.metadata.name,
                error,
            )
            return error
        return None

    async def _budget_is_ours(self, pool: AgentPool, name: str) -> bool:
        try:
            body = await self._client.get(PODDISRUPTIONBUDGETS, name, pool.metadata.namespace)
        except NotFound:
            return True  # gone meanwhile: the next reconcile creates it
        found = observe_budget(body)
        labels = (body.get("metadata") or {}).get("labels") or {}
        return (
            labels.get(POOL_LABEL) == pool.metadata.name
            and found.controller_uid == pool.metadata.uid
        )

    async def _write_budget(self, pool: AgentPool, write: BudgetWrite) -> None:
        namespace = pool.metadata.namespace or ""
        if write.manifest is not None:
            await self._client.create(PODDISRUPTIONBUDGETS, write.manifest, namespace)
        elif write.patch is not None:
            await self._client.patch(
                PODDISRUPTIONBUDGETS,
                write.name,
                write.patch,
                namespace=namespace,
                patch_type=PatchType.JSON,
            )

    async def _write_status(
        self, pool: AgentPool, status: AgentPoolStatus, written: AgentPoolStatus | None = None
    ) -> None:
        """Patch the status unless it equals what is there (`written`: what this
        reconcile already wrote, else the cached status)."""
        wire = status.to_wire()
        if wire == (written or pool.status).to_wire():
            return
        await patch_status(self._client, AGENTPOOLS, pool, wire)

    # --- what people read -------------------------------------------------------------------

    async def _record_events(self, pool: AgentPool, outcome: WriteOutcome) -> None:
        about = object_ref(pool)
        if outcome.created_total:
            parts = ", ".join(
                f"{count} {state}" for state, count in sorted(outcome.created.items())
            )
            await self._events.record(
                about, "PodsCreated", f"Created {outcome.created_total} pods ({parts})"
            )
        if outcome.promoted:
            await self._events.record(
                about, "PodsPromoted", f"Promoted {outcome.promoted} warm pods to active"
            )
        if outcome.deleted:
            await self._events.record(
                about, "PodsDeleted", f"Deleted {outcome.deleted} surplus pods"
            )
        if outcome.drained:
            timeout = pool.spec.rollout.drain_timeout_seconds
            await self._events.record(
                about,
                "PodsDraining",
                f"Draining {outcome.drained} active pods: removed once their agents are idle, "
                f"or after {timeout}s",
            )
        if outcome.drained_idle:
            await self._events.record(
                about, "DrainedPodsDeleted", f"Deleted {outcome.drained_idle} drained idle pods"
            )
        if outcome.replaced_unready:
            timeout = pool.spec.warm_pool.readiness_timeout_seconds
            await self._events.record(
                about,
                "WarmPodsNotReady",
                f"Replacing {outcome.replaced_unready} warm pods not Ready within {timeout}s "
                "of being scheduled",
                EventType.WARNING,
            )
        if outcome.replaced_stale:
            why = (
                "warmPool.updatePolicy Recreate"
                if pool.spec.warm_pool.update_policy is WarmPoolUpdatePolicy.RECREATE
                else "never placed on a node, so no warm-up is lost"
            )
            await self._events.record(
                about,
                "StaleWarmPodsDeleted",
                f"Replacing {outcome.replaced_stale} warm pods of an old template ({why})",
            )
        if outcome.failure is not None:
            await self._events.record(
                about,
                _failure_reason(outcome.failure),
                outcome.failure.message,
                EventType.WARNING,
            )

    async def _record_unschedulable(
        self, pool: AgentPool, key: PoolKey, status: AgentPoolStatus
    ) -> None:
        message = unschedulable_event(status.conditions)
        uid = pool.metadata.uid or ""
        if message is None:
            self._unschedulable_posted.pop(key, None)
            return
        if self._unschedulable_posted.get(key) == uid:
            return
        self._unschedulable_posted[key] = uid
        await self._events.record(object_ref(pool), "PodsUnschedulable", message, EventType.WARNING)

    async def _record_gpu_fit(self, pool: AgentPool, status: AgentPoolStatus) -> None:
        event = fit_event(pool.status.conditions, status.conditions)
        if event is None:
            return
        key = _key(pool.metadata.namespace, pool.metadata.name)
        posted = (pool.metadata.uid or "", event.reason, event.message)
        if self._gpu_events.get(key) == posted:
            return
        self._gpu_events[key] = posted
        kind = EventType.WARNING if event.warning else EventType.NORMAL
        await self._events.record(object_ref(pool), event.reason, event.message, kind)

    async def _report_invalid(self, key: PoolKey, pool: InvalidObject) -> None:
        if self._reported_invalid.get(key) == (pool.uid, pool.generation):
            return
        self._reported_invalid[key] = (pool.uid, pool.generation)
        logger.error("AgentPool %s/%s is invalid: %s", pool.namespace, pool.name, pool.message)
        about = ObjectRef(API_VERSION, "AgentPool", pool.namespace, pool.name, pool.uid)
        await self._events.record(about, "InvalidSpec", pool.message, EventType.WARNING)


def _failure_reason(error: ApiError) -> str:
    return "PodWriteFailed" if not isinstance(error, Invalid) else "PodTemplateInvalid"


def _single(values: Iterable[T]) -> T | None:
    return next(iter(values), None)


def _monotonic() -> float:
    return time.monotonic()


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# --- kopf handlers ---------------------------------------------------------------------------


def _key(namespace: str | None, pool_name: str) -> PoolKey:
    return (namespace or "", pool_name)


async def index_pools(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[PoolKey, PoolEntry]:
    return {_key(namespace, name): parse_pool(body)}


async def index_pool_pods(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[PoolKey, ObservedPod]:
    return {_key(namespace, labels[POOL_LABEL]): observe_pod(body)}


async def on_pool_event(
    event: kopf.RawEvent, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    controller = services_of(memo).pool_controller()
    if event.get("type") == "DELETED":
        controller.pool_deleted(_key(namespace, name))
    else:
        controller.pool_changed(_key(namespace, name))


async def index_pool_budgets(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[PoolKey, ObservedBudget]:
    return {_key(namespace, labels[POOL_LABEL]): observe_budget(body)}


async def on_budget_event(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    services_of(memo).pool_controller().budget_changed(_key(namespace, labels[POOL_LABEL]))


async def on_pod_event(
    *,
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str | None,
    labels: kopf.Labels,
    uid: str,
    memo: Any,
    **_: Any,
) -> None:
    """The one handler of pool pods' events, for the pools, the claims and the swarms
    alike: pod events are the operator's most frequent, and kopf does bookkeeping per
    handler."""
    services = services_of(memo)
    deleted = event.get("type") == "DELETED"
    services.pool_controller().pod_changed(_key(namespace, labels[POOL_LABEL]), uid, deleted)
    if services.claims is not None:
        services.claims.pod_changed(observe_pod(body), labels, body, deleted)
    swarm = labels.get(SWARM_LABEL)
    if deleted and swarm and services.swarms is not None:
        # A stopping pool is stopped once its last pod is gone, which its AgentPool's
        # status (already at 0) does not show.
        services.swarms.swarm_changed((namespace or "", swarm))


def register(registry: kopf.OperatorRegistry, *, disruption_budgets: bool = True) -> None:
    """Register the AgentPool handlers in `registry` (ours, not kopf's global one).

    `disruption_budgets`: keep a PodDisruptionBudget per pool (needs list, watch, create
    and patch on them: a watch that is refused would hold every handler back).
    """
    group, version = "swarmops.dev", "v1alpha1"
    pool_pods = {POOL_LABEL: kopf.PRESENT}
    kopf.index(group, version, "agentpools", id=POOLS_INDEX, registry=registry)(index_pools)
    kopf.index("v1", "pods", id=POOL_PODS_INDEX, labels=pool_pods, registry=registry)(
        index_pool_pods
    )
    kopf.on.event(group, version, "agentpools", registry=registry)(on_pool_event)
    kopf.on.event("v1", "pods", labels=pool_pods, registry=registry)(on_pod_event)
    if disruption_budgets:
        budgets = ("policy", "v1", "poddisruptionbudgets")
        kopf.index(*budgets, id=BUDGETS_INDEX, labels=pool_pods, registry=registry)(
            index_pool_budgets
        )
        kopf.on.event(*budgets, labels=pool_pods, registry=registry)(on_budget_event)
