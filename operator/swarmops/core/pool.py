"""The AgentPool plan: from a pool and the pods observed for it, decide what to write.

`plan_pool` is the whole decision, as one pure function (in the spirit of
metacontroller's sync hooks): which pods to create (full manifests), which warm pods
to promote to active, which pods to delete, and the status to report. The handler
only reads the cache, calls it, and performs the writes.

Rules:
* `spec.replicas` active pods and `spec.warmPool.size` warm pods are kept.
* Scaling up promotes warm pods to active first (a relabel: no cold start), then
  creates the rest; the warm pool refills with new pods.
* Scaling down deletes the surplus of each state; warm pods go only when the warm
  pool itself shrinks: they are the spare.
* Claimed pods are counted, never touched.
* What the operator wrote but has not seen yet (`Expectations`) counts as done, so
  a burst of watch events never makes it write twice.
* Warm pods are refilled at most `warmPool.refillRate` a second: the caller passes the
  pods its rate limiter allows now (`create_budget`), the plan says how many it held
  back (`deferred`).
* A warm pod placed on a node but not Ready within `warmPool.readinessTimeoutSeconds`
  is replaced; a pod the scheduler cannot place is left alone (replacing it would
  only churn) and counted in `status.unschedulable`, with the scheduler's message.
* On a template change, `updatePolicy: OnReplenish` keeps the old warm pods until they
  are claimed or promoted; `Recreate` deletes them at once and refills from the new
  template. Active pods are the rollout's business; claimed pods are nobody's.
"""

from __future__ import annotations

import datetime
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from swarmops.api import AgentPool, AgentPoolConditionType, AgentPoolStatus
from swarmops.api.agentpool import RevisionStatus, WarmPoolUpdatePolicy
from swarmops.api.common import (
    API_VERSION,
    DNS_LABEL_PATTERN,
    Condition,
    ConditionStatus,
    ConditionType,
)
from swarmops.core.conditions import find_condition, set_condition
from swarmops.core.expectations import Expectations
from swarmops.core.gpu import GpuRequest, gpu_pod_template
from swarmops.core.gpu_fit import UNSATISFIABLE_GPU_REQUEST, GpuNode, unsatisfiable
from swarmops.core.pods import POOL_LABEL, REVISION_LABEL, STATE_LABEL, ObservedPod, PodState
from swarmops.core.revision import template_revision
from swarmops.core.spread import with_hostname_spread

_REVISION_RE = re.compile(DNS_LABEL_PATTERN)
#: Reason of Degraded (and WarmPoolReady) while the scheduler cannot place some pods.
UNSCHEDULABLE = "Unschedulable"
MAX_REVISIONS_IN_STATUS = 16
_EPOCH = datetime.datetime.min.replace(tzinfo=datetime.UTC)


@dataclass(frozen=True, slots=True)
class PodRef:
    """A pod to write to, pinned to the version the plan saw (for preconditions)."""

    name: str
    uid: str
    resource_version: str

    @classmethod
    def of(cls, pod: ObservedPod) -> PodRef:
        return cls(pod.name, pod.uid, pod.resource_version)


@dataclass(frozen=True, slots=True)
class PodCreate:
    state: PodState
    manifest: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PodRelabel:
    pod: PodRef
    state: PodState


@dataclass(frozen=True)
class PoolPlan:
    """What to write for one pool, in order: creates, relabels, deletes, then status."""

    revision: str
    creates: tuple[PodCreate, ...]
    relabels: tuple[PodRelabel, ...]
    deletes: tuple[PodRef, ...]  # surplus pods (the pool shrank)
    status: AgentPoolStatus
    # Warm pods placed but not Ready within the readiness timeout: deleted and replaced.
    unready: tuple[PodRef, ...] = ()
    # Warm pods of an old template under updatePolicy Recreate: deleted and replaced.
    stale: tuple[PodRef, ...] = ()
    # Warm pods still to create that the refill rate limit held back this time.
    deferred: int = 0
    # When a not-Ready warm pod reaches its readiness timeout: look again then.
    recheck_at: datetime.datetime | None = None

    @property
    def idle(self) -> bool:
        return not (self.creates or self.relabels or self.all_deletes)

    @property
    def all_deletes(self) -> tuple[PodRef, ...]:
        return self.deletes + self.unready + self.stale


def pool_selector(pool_name: str, state: PodState | None = None) -> str:
    """Label selector of a pool's pods (of one state): the scale subresource's selector."""
    selector = f"{POOL_LABEL}={pool_name}"
    return selector if state is None else f"{selector},{STATE_LABEL}={state}"


def desired_template(pool: AgentPool) -> dict[str, Any]:
    """The pod template as the pool's pods get it; its hash is the revision.

    GPU requests, node affinity and tolerations (core/gpu.py), and the spread over
    nodes (core/spread.py) are merged in here, so that they count in the revision like
    any other template change.
    """
    return with_hostname_spread(
        gpu_pod_template(pool.spec.template.to_wire(), pool.spec.gpu), pool.metadata.name
    )


def owner_reference(pool: AgentPool) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "AgentPool",
        "name": pool.metadata.name,
        "uid": pool.metadata.uid or "",
        "controller": True,
        # The pool's foreground deletion waits for its pods.
        "blockOwnerDeletion": True,
    }


def pod_manifest(
    pool: AgentPool, template: dict[str, Any], revision: str, state: PodState
) -> dict[str, Any]:
    """A full Pod manifest for one new pod of the pool."""
    template_meta: dict[str, Any] = template.get("metadata") or {}
    labels = {
        **(template_meta.get("labels") or {}),
        POOL_LABEL: pool.metadata.name,
        REVISION_LABEL: revision,
        STATE_LABEL: str(state),
    }
    metadata: dict[str, Any] = {
        "generateName": f"{pool.metadata.name}-",
        "namespace": pool.metadata.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(pool)],
    }
    if template_meta.get("annotations"):
        metadata["annotations"] = dict(template_meta["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


@dataclass(frozen=True, slots=True)
class _Member:
    """A pod of the pool as far as the operator knows: observed, or created but unseen."""

    state: PodState
    pod: ObservedPod | None  # None: created by us, not in the cache yet
    revision: str | None

    @property
    def ready(self) -> bool:
        return self.pod is not None and self.pod.ready


def _members(
    pool: AgentPool, pods: Iterable[ObservedPod], expectations: Expectations
) -> tuple[list[_Member], list[ObservedPod]]:
    """The pool's warm and active pods (expectations applied), and its claimed pods."""
    name, uid = pool.metadata.name, pool.metadata.uid
    members: list[_Member] = []
    claimed: list[ObservedPod] = []
    seen: set[str] = set()
    for pod in pods:
        seen.add(pod.uid)
        if pod.pool != name or not pod.alive:
            continue
        state = expectations.relabels.get(pod.uid, pod.state)
        if state is PodState.CLAIMED:
            claimed.append(pod)
        elif (
            state in (PodState.WARM, PodState.ACTIVE)
            and pod.controller_uid == uid
            and pod.uid not in expectations.deletes
        ):
            # A pod of the same name from an earlier pool with the same name (its owner
            # uid differs) is the garbage collector's, not ours.
            members.append(_Member(state, pod, pod.revision))
    for created in expectations.creates:
        if created.uid not in seen:
            members.append(_Member(created.state, None, created.revision))
    return members, claimed


def _created(pod: ObservedPod) -> datetime.datetime:
    return pod.created or _EPOCH


def _deletion_order(pod: ObservedPod, revision: str) -> tuple[Any, ...]:
    """Cheapest to lose first: unplaced, not running, not ready, old revision, newest."""
    return (
        pod.node_name is not None,
        pod.phase == "Running",
        pod.ready,
        pod.revision == revision,
        -_created(pod).timestamp(),
        pod.name,
    )


def _promotion_order(pod: ObservedPod, revision: str) -> tuple[Any, ...]:
    """Best to promote first: current revision, Ready, oldest (warmed the longest)."""
    return (pod.revision != revision, not pod.ready, _created(pod), pod.name)


def _split_stale(
    warm: Sequence[_Member], revision: str, policy: WarmPoolUpdatePolicy
) -> tuple[list[_Member], list[PodRef]]:
    """Warm pods of an old revision that leave the count and are deleted.

    Under Recreate, all of them. Under OnReplenish, only those not placed on a node:
    keeping stale pods is about not throwing away their warm-up, and an unplaced pod
    has none; its old template (a nodeSelector no node has, say) may be the very
    reason it cannot be placed, and a pod's placement fields cannot be changed.

    One created but not yet seen cannot be deleted (no uid to pin); under Recreate it
    is only left out of the count, and deleted once the cache shows it.
    """
    recreate = policy is WarmPoolUpdatePolicy.RECREATE
    kept: list[_Member] = []
    stale: list[PodRef] = []
    for member in warm:
        unplaced = member.pod is not None and member.pod.node_name is None
        if member.revision == revision or not (recreate or unplaced):
            kept.append(member)
        elif member.pod is not None:
            stale.append(PodRef.of(member.pod))
    return kept, stale


def _split_unready(
    warm: Sequence[_Member], timeout: datetime.timedelta, now: datetime.datetime
) -> tuple[list[_Member], list[PodRef], datetime.datetime | None]:
    """Warm pods placed but not Ready for `timeout` leave the count and are deleted.

    Returns the pods kept, those to replace, and the earliest moment one of the kept
    pods times out (to look again then without waiting for an event).
    """
    kept: list[_Member] = []
    unready: list[PodRef] = []
    recheck_at: datetime.datetime | None = None
    for member in warm:
        since = member.pod.not_ready_since if member.pod is not None else None
        if member.pod is None or since is None:
            kept.append(member)
            continue
        deadline = since + timeout
        if deadline <= now:
            unready.append(PodRef.of(member.pod))
        else:
            kept.append(member)
            recheck_at = deadline if recheck_at is None else min(recheck_at, deadline)
    return kept, unready, recheck_at


def plan_pool(
    pool: AgentPool,
    observed_pods: Iterable[ObservedPod],
    expectations: Expectations,
    *,
    now: datetime.datetime,
    gpu_nodes: Sequence[GpuNode] | None = None,
    create_budget: int | None = None,
) -> PoolPlan:
    """Decide the writes that move the pool toward its spec, and the status to report.

    `gpu_nodes` are the GPU nodes the operator sees; None when it cannot see nodes (no
    RBAC), and then whether a GPU request fits any node is not judged. An unsatisfiable
    request still gets its pods: Pending pods are what a cluster autoscaler acts on.

    `create_budget` is how many warm pods the refill rate limit allows now (None: no
    limit). Active pods are not limited: a scale-up is a person's or an autoscaler's
    explicit request, and promotion already serves it from the warm pool first.
    """
    template = desired_template(pool)
    revision = template_revision(template)
    members, claimed = _members(pool, observed_pods, expectations)
    want_active = pool.spec.replicas
    want_warm = pool.spec.warm_pool.size
    warm_pool = pool.spec.warm_pool

    active = [m for m in members if m.state is PodState.ACTIVE]
    warm, stale = _split_stale(
        [m for m in members if m.state is PodState.WARM], revision, warm_pool.update_policy
    )
    warm, unready, recheck_at = _split_unready(
        warm, datetime.timedelta(seconds=warm_pool.readiness_timeout_seconds), now
    )
    observed_warm = sorted(
        (m.pod for m in warm if m.pod is not None), key=lambda p: _promotion_order(p, revision)
    )
    creates: list[PodState] = []
    relabels: list[PodRelabel] = []
    deletes: list[PodRef] = []

    active_missing = want_active - len(active)
    if active_missing > 0:
        promoted = observed_warm[:active_missing]
        relabels = [PodRelabel(PodRef.of(pod), PodState.ACTIVE) for pod in promoted]
        promoted_uids = {pod.uid for pod in promoted}
        warm = [m for m in warm if m.pod is None or m.pod.uid not in promoted_uids]
        creates += [PodState.ACTIVE] * (active_missing - len(promoted))
    elif active_missing < 0:
        deletes += _surplus(active, -active_missing, revision)

    warm_missing = want_warm - len(warm)
    deferred = 0
    if warm_missing > 0:
        allowed = (
            warm_missing if create_budget is None else max(0, min(warm_missing, create_budget))
        )
        creates += [PodState.WARM] * allowed
        deferred = warm_missing - allowed
    elif warm_missing < 0:
        deletes += _surplus(warm, -warm_missing, revision)

    plan_creates = tuple(
        PodCreate(state, pod_manifest(pool, template, revision, state)) for state in creates
    )
    status = pool_status(
        pool,
        members,
        claimed,
        revision=revision,
        busy=bool(creates or relabels or deletes or expectations.pending),
        scaling_up=bool(creates or relabels),
        scaling_down=bool(deletes),
        now=now,
        gpu_problem=(
            None if gpu_nodes is None else unsatisfiable(GpuRequest.of(pool.spec.gpu), gpu_nodes)
        ),
        replacing=len(unready) + len(stale),
        deferred=deferred,
    )
    return PoolPlan(
        revision,
        plan_creates,
        tuple(relabels),
        tuple(deletes),
        status,
        unready=tuple(unready),
        stale=tuple(stale),
        deferred=deferred,
        recheck_at=recheck_at,
    )


def _surplus(members: Sequence[_Member], count: int, revision: str) -> list[PodRef]:
    # Pods created but not yet seen cannot be deleted (no uid precondition to pin
    # them); the next reconcile sees them and evens out.
    observed = sorted(
        (m.pod for m in members if m.pod is not None), key=lambda p: _deletion_order(p, revision)
    )
    return [PodRef.of(pod) for pod in observed[:count]]


def _revision_counts(
    members: Sequence[_Member], claimed: Sequence[ObservedPod], revision: str
) -> list[RevisionStatus]:
    per: dict[str, Counter[str]] = {}
    for member in members:
        if member.pod is None or not member.revision:
            continue
        counts = per.setdefault(member.revision, Counter())
        key = "replicas" if member.state is PodState.ACTIVE else "warm"
        counts[key] += 1
        if member.ready:
            counts["ready_replicas" if key == "replicas" else "warm_ready"] += 1
    for pod in claimed:
        if pod.revision:
            per.setdefault(pod.revision, Counter())["claimed"] += 1
    valid = {r: c for r, c in per.items() if len(r) <= 63 and _REVISION_RE.match(r)}
    ordered = sorted(valid, key=lambda r: (r != revision, -sum(valid[r].values()), r))
    return [RevisionStatus(revision=r, **dict(valid[r])) for r in ordered[:MAX_REVISIONS_IN_STATUS]]


def pool_status(
    pool: AgentPool,
    members: Sequence[_Member],
    claimed: Sequence[ObservedPod],
    *,
    revision: str,
    busy: bool,
    scaling_up: bool,
    scaling_down: bool,
    now: datetime.datetime,
    gpu_problem: str | None = None,
    replacing: int = 0,
    deferred: int = 0,
) -> AgentPoolStatus:
    """Counts of what exists (not of what is merely planned), plus the conditions.

    `gpu_problem` says why no node can ever host a pod of the pool (see core/gpu_fit.py).
    `replacing`: warm pods being replaced (not Ready in time, or stale under Recreate);
    `deferred`: warm pods the refill rate limit holds back for now.
    """
    seen = [m for m in members if m.pod is not None]
    active = [m for m in seen if m.state is PodState.ACTIVE]
    warm = [m for m in seen if m.state is PodState.WARM]
    ready_active = sum(m.ready for m in active)
    ready_warm = sum(m.ready for m in warm)
    unschedulable = [m.pod.unschedulable for m in seen if m.pod and m.pod.unschedulable]
    warm_unschedulable = [m.pod.unschedulable for m in warm if m.pod and m.pod.unschedulable]
    want_active, want_warm = pool.spec.replicas, pool.spec.warm_pool.size
    generation = pool.metadata.generation or 0

    conditions = list(pool.status.conditions)

    def put(kind: str, status: bool, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(
            conditions,
            kind,
            ConditionStatus.TRUE if status else ConditionStatus.FALSE,
            reason,
            message,
            now=now,
            observed_generation=generation,
        )

    replicas_ready = ready_active >= want_active
    warm_ready = ready_warm >= want_warm
    ready_message = f"{ready_active}/{want_active} active pods are Ready"
    if replicas_ready:
        put(ConditionType.READY, True, "ReplicasReady", ready_message)
    elif gpu_problem:
        message = f"{ready_message}; {gpu_problem}"
        put(ConditionType.READY, False, UNSATISFIABLE_GPU_REQUEST, message)
    else:
        put(ConditionType.READY, False, "ReplicasNotReady", ready_message)
    warm_message = f"{ready_warm}/{want_warm} warm pods are Ready"
    if warm_ready:
        put(AgentPoolConditionType.WARM_POOL_READY, True, "WarmPoolFull", warm_message)
    elif warm_unschedulable:
        message = (
            f"{warm_message}; {len(warm_unschedulable)} cannot be scheduled: "
            f"{warm_unschedulable[0]}"
        )
        put(AgentPoolConditionType.WARM_POOL_READY, False, UNSCHEDULABLE, message)
    else:
        put(AgentPoolConditionType.WARM_POOL_READY, False, "WarmPoolFilling", warm_message)
    if scaling_up:
        progressing = (True, "ScalingUp", "creating or promoting pods")
    elif scaling_down:
        progressing = (True, "ScalingDown", "deleting surplus pods")
    elif replacing:
        progressing = (
            True,
            "ReplacingWarmPods",
            f"replacing {replacing} warm pods (not Ready in time, or of an old template)",
        )
    elif deferred:
        rate = pool.spec.warm_pool.refill_rate
        progressing = (
            True,
            "RefillRateLimited",
            f"{deferred} warm pods wait for the refill rate limit ({rate}/s)",
        )
    elif busy or not (replicas_ready and warm_ready):
        progressing = (True, "PodsStarting", "waiting for pods to be created and become Ready")
    else:
        progressing = (False, "Stable", "all pods exist and are Ready")
    put(ConditionType.PROGRESSING, *progressing)
    if gpu_problem:
        put(ConditionType.DEGRADED, True, UNSATISFIABLE_GPU_REQUEST, gpu_problem)
    elif unschedulable:
        put(
            ConditionType.DEGRADED,
            True,
            UNSCHEDULABLE,
            f"{len(unschedulable)} pods cannot be scheduled: {unschedulable[0]}",
        )
    else:
        put(ConditionType.DEGRADED, False, "AsExpected", "")

    return pool.status.model_copy(
        update={
            "observed_generation": generation,
            "replicas": len(active),
            "ready_replicas": ready_active,
            "warm": len(warm),
            "warm_ready": ready_warm,
            "claimed": len(claimed),
            "unschedulable": len(unschedulable),
            "current_revision": revision,
            "update_revision": revision,
            "selector": pool_selector(pool.metadata.name, PodState.ACTIVE),
            "revisions": _revision_counts(members, claimed, revision),
            "conditions": conditions,
        }
    )


def unschedulable_event(conditions: Sequence[Condition]) -> str | None:
    """The Warning Event's message while the pool is Degraded by pods it cannot place.

    Posted once when the pool enters that state (the handler remembers it), so a person
    reading `kubectl describe` sees the scheduler's reason without digging in the pods.
    """
    degraded = find_condition(conditions, ConditionType.DEGRADED)
    if degraded is None or degraded.status != ConditionStatus.TRUE:
        return None
    if degraded.reason != UNSCHEDULABLE:
        return None
    return degraded.message


def with_write_failure(
    pool: AgentPool,
    status: AgentPoolStatus,
    reason: str,
    message: str,
    *,
    now: datetime.datetime,
) -> AgentPoolStatus:
    """The planned status after the plan's writes failed: Degraded, with the apiserver's message.

    The condition is set over the pool's *previous* Degraded condition, so a failure
    that persists keeps its lastTransitionTime (and an unchanged status is not
    written again, which would wake the pool's own watch in a loop).
    """
    previous = find_condition(pool.status.conditions, ConditionType.DEGRADED)
    base = [
        previous if previous is not None and c.type == ConditionType.DEGRADED else c
        for c in status.conditions
    ]
    conditions = set_condition(
        base,
        ConditionType.DEGRADED,
        ConditionStatus.TRUE,
        reason,
        message,
        now=now,
        observed_generation=status.observed_generation,
    )
    return status.model_copy(update={"conditions": conditions})
