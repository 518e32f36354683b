"""The AgentPool plan: from a pool and the pods observed for it, decide what to write.

`plan_pool` is the whole decision, as one pure function (in the spirit of
metacontroller's sync hooks): which pods to create (full manifests), which warm pods
to promote to active, which pods to delete, and the status to report. The handler
only reads the cache, calls it, and performs the writes.

Rules:
* `spec.replicas` active pods and `spec.warmPool.size` warm pods are kept.
* Which revision the active pods run, and how many of each, is the rollout's decision
  (core/rollout.py, `decide_rollout`); this module turns it into writes.
* Scaling up promotes warm pods of the wanted revision to active first (a relabel: no
  cold start), then creates the rest (never for a canary: its pods come from Ready
  prewarmed warm pods); the warm pool refills with new pods.
* Scaling down removes the surplus of each state. Active pods with an agent are drained
  first (DRAIN_STARTED_ANNOTATION; deleted once idle, or at the drain deadline); warm
  pods go only when the warm pool itself shrinks: they are the spare.
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

import dataclasses
import datetime
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
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
from swarmops.core.agentenv import agent_pod
from swarmops.core.conditions import find_condition, set_condition
from swarmops.core.expectations import Expectations
from swarmops.core.gpu import GpuRequest, gpu_pod_template
from swarmops.core.gpu_fit import UNSATISFIABLE_GPU_REQUEST, GpuNode, unsatisfiable
from swarmops.core.pods import POOL_LABEL, REVISION_LABEL, STATE_LABEL, ObservedPod, PodState
from swarmops.core.revision import template_revision
from swarmops.core.rollout import (
    ActiveTarget,
    MetricsJudgement,
    RolloutAction,
    RolloutDecision,
    decide_rollout,
    next_measurement,
)
from swarmops.core.spread import with_hostname_spread

_REVISION_RE = re.compile(DNS_LABEL_PATTERN)
#: Reason of Degraded (and WarmPoolReady) while the scheduler cannot place some pods.
UNSCHEDULABLE = "Unschedulable"
#: Reason of Degraded while pods of a revision whose template is not stored are needed.
REVISION_UNKNOWN = "RevisionTemplateUnknown"
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
    """What to write for one pool, in order: relabels, deletes and drains, creates, then
    status."""

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
    # When to look again though no event may come: a not-Ready warm pod reaches its
    # readiness timeout, a timed pause ends, a drain deadline passes.
    recheck_at: datetime.datetime | None = None
    # Active pods with an agent to drain before removal: annotate them (drain started).
    drains: tuple[PodRef, ...] = ()
    # Pods draining whose agents may be asked whether they are idle yet (deleted if so).
    draining: tuple[PodRef, ...] = ()
    rollout: RolloutDecision | None = None

    @property
    def idle(self) -> bool:
        return not (self.creates or self.relabels or self.all_deletes or self.drains)

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
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
    return agent_pod(pool, manifest)


def stored_revision_name(pool_name: str, revision: str) -> str:
    return f"{pool_name}-{revision}"


def stored_revision(pool: AgentPool, template: dict[str, Any], revision: str) -> dict[str, Any]:
    """The ControllerRevision that keeps a revision's pod template, owned by the pool.

    The stable revision's template must outlive the spec that held it: during a rollout
    the spec holds the canary's, and the stable pods still need refills and, on a
    rollback, restoring (StatefulSets and DaemonSets keep theirs the same way).
    """
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": stored_revision_name(pool.metadata.name, revision),
            "namespace": pool.metadata.namespace,
            "labels": {POOL_LABEL: pool.metadata.name, REVISION_LABEL: revision},
            "ownerReferences": [owner_reference(pool)],
        },
        "data": {"template": template},
        "revision": pool.metadata.generation or 1,
    }


def stored_template(body: Mapping[str, Any], revision: str) -> dict[str, Any] | None:
    """The template a ControllerRevision keeps, if it is that revision's (checked by hash)."""
    template = (body.get("data") or {}).get("template")
    if not isinstance(template, dict) or template_revision(template) != revision:
        return None
    return template


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
    pool: AgentPool,
    pods: Iterable[ObservedPod],
    expectations: Expectations,
    draining: frozenset[str] = frozenset(),
    unlabelled: str | None = None,
) -> tuple[list[_Member], list[ObservedPod], list[ObservedPod]]:
    """The pool's warm and active pods (expectations applied), its claimed pods, and its
    draining pods (active pods on their way out: no longer counted as active).

    A pod without a revision label (not one the operator made) counts as `unlabelled`.
    """
    name, uid = pool.metadata.name, pool.metadata.uid
    members: list[_Member] = []
    claimed: list[ObservedPod] = []
    drained: list[ObservedPod] = []
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
            if state is PodState.ACTIVE and (
                pod.drain_started_at is not None or pod.uid in draining
            ):
                drained.append(pod)
            else:
                members.append(_Member(state, pod, pod.revision or unlabelled))
    for created in expectations.creates:
        if created.uid not in seen:
            members.append(_Member(created.state, None, created.revision))
    return members, claimed, drained


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
    templates: Mapping[str, dict[str, Any]] | None = None,
    action: RolloutAction | None = None,
    metrics: MetricsJudgement | None = None,
    draining: frozenset[str] = frozenset(),
) -> PoolPlan:
    """Decide the writes that move the pool toward its spec, and the status to report.

    `gpu_nodes` are the GPU nodes the operator sees; None when it cannot see nodes (no
    RBAC), and then whether a GPU request fits any node is not judged. An unsatisfiable
    request still gets its pods: Pending pods are what a cluster autoscaler acts on.

    `create_budget` is how many warm pods the refill rate limit allows now (None: no
    limit). Active pods are not limited: a scale-up is a person's or an autoscaler's
    explicit request, and promotion already serves it from the warm pool first.

    `templates` are the stored templates of earlier revisions (the stable one during a
    rollout), `action` a person's rollout request, `metrics` the verdict of the current
    analysis step's metrics, `draining` the uids of pods this process started draining
    that the cache does not show so yet (core/rollout.py decides the rest).
    """
    template = desired_template(pool)
    revision = template_revision(template)
    known = {**(templates or {}), revision: template}
    previous = pool.status.rollout
    stable = (previous.stable_revision if previous else None) or pool.status.current_revision
    members, claimed, drained = _members(
        pool, observed_pods, expectations, draining, stable or revision
    )
    warm_pool = pool.spec.warm_pool
    observed_members = [
        dataclasses.replace(m.pod, state=m.state, revision=m.revision)
        for m in members
        if m.pod is not None
    ]
    decision = decide_rollout(
        pool.spec,
        update_revision=revision,
        current_revision=pool.status.current_revision,
        previous=pool.status.rollout,
        pods=observed_members,
        action=action,
        now=now,
        metrics=metrics,
    )

    active = [m for m in members if m.state is PodState.ACTIVE]
    all_warm = [m for m in members if m.state is PodState.WARM]
    prewarm = [m for m in all_warm if m.revision in decision.prewarm]
    spare, stale = _split_stale(
        [m for m in all_warm if m.revision not in decision.prewarm],
        decision.spare_revision,
        warm_pool.update_policy,
    )
    timeout = datetime.timedelta(seconds=warm_pool.readiness_timeout_seconds)
    spare, unready, recheck_at = _split_unready(spare, timeout, now)
    prewarm, unready_prewarm, recheck_prewarm = _split_unready(prewarm, timeout, now)
    unready += unready_prewarm
    recheck_at = _earliest(
        recheck_at,
        recheck_prewarm,
        decision.recheck_at,
        next_measurement(pool.spec, decision.status),
    )

    creates: list[tuple[PodState, str]] = []
    relabels: list[PodRelabel] = []
    deletes: list[PodRef] = []
    drains: list[PodRef] = []
    missing_templates: set[str] = set()
    promoted: set[str] = set()
    promoted_of: Counter[str] = Counter()

    active_revisions = {m.revision or "" for m in active} | set(decision.active)
    for rev in sorted(active_revisions):
        target = decision.active.get(rev, ActiveTarget(0))
        have = [m for m in active if (m.revision or "") == rev]
        missing = target.count - len(have)
        if missing < 0:
            for pod in _surplus(have, -missing, revision):
                (drains if pod.has_agent else deletes).append(PodRef.of(pod))
            continue
        source = prewarm if rev in decision.prewarm else spare
        candidates = sorted(
            (
                m.pod
                for m in source
                if m.pod is not None and m.revision == rev and (m.pod.ready or target.cold_start)
            ),
            key=lambda p: _promotion_order(p, rev),
        )
        limit = missing if target.max_promotions is None else min(missing, target.max_promotions)
        chosen = candidates[: max(0, limit)]
        relabels += [PodRelabel(PodRef.of(pod), PodState.ACTIVE) for pod in chosen]
        promoted |= {pod.uid for pod in chosen}
        promoted_of[rev] += len(chosen)
        cold = missing - len(chosen) if target.cold_start else 0
        if cold > 0 and rev not in known:
            missing_templates.add(rev)
        elif cold > 0:
            creates += [(PodState.ACTIVE, rev)] * cold
    spare = [m for m in spare if m.pod is None or m.pod.uid not in promoted]
    prewarm = [m for m in prewarm if m.pod is None or m.pod.uid not in promoted]

    warm_wanted = [(decision.spare_revision, spare, warm_pool.size)]
    # Prewarm targets count the canary's active pods as the rollout saw them: those
    # promoted just now are no longer missing.
    warm_wanted += [
        (rev, [m for m in prewarm if m.revision == rev], max(0, count - promoted_of[rev]))
        for rev, count in sorted(decision.prewarm.items())
    ]
    deferred = 0
    budget = create_budget
    for rev, have_warm, want in warm_wanted:
        warm_missing = want - len(have_warm)
        if warm_missing > 0 and rev not in known:
            missing_templates.add(rev)
        elif warm_missing > 0:
            allowed = warm_missing if budget is None else max(0, min(warm_missing, budget))
            creates += [(PodState.WARM, rev)] * allowed
            deferred += warm_missing - allowed
            budget = None if budget is None else budget - allowed
        elif warm_missing < 0:
            deletes += [PodRef.of(pod) for pod in _surplus(have_warm, -warm_missing, rev)]

    drain_timeout = datetime.timedelta(seconds=pool.spec.rollout.drain_timeout_seconds)
    still_draining: list[PodRef] = []
    for pod in drained:
        started = pod.drain_started_at or now
        if not pod.has_agent or started + drain_timeout <= now:
            deletes.append(PodRef.of(pod))
        else:
            still_draining.append(PodRef.of(pod))
            recheck_at = _earliest(recheck_at, started + drain_timeout)

    plan_creates = tuple(
        PodCreate(state, pod_manifest(pool, known[rev], rev, state)) for state, rev in creates
    )
    status = pool_status(
        pool,
        members,
        claimed,
        revision=revision,
        busy=bool(creates or relabels or deletes or drains or expectations.pending),
        scaling_up=bool(creates or relabels),
        scaling_down=bool(deletes or drains),
        now=now,
        gpu_problem=(
            None if gpu_nodes is None else unsatisfiable(GpuRequest.of(pool.spec.gpu), gpu_nodes)
        ),
        replacing=len(unready) + len(stale),
        deferred=deferred,
        rollout=decision,
        draining=len(drained),
        missing_templates=sorted(missing_templates),
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
        drains=tuple(drains),
        draining=tuple(still_draining),
        rollout=decision,
    )


def _earliest(*moments: datetime.datetime | None) -> datetime.datetime | None:
    present = [m for m in moments if m is not None]
    return min(present) if present else None


def _surplus(members: Sequence[_Member], count: int, revision: str) -> list[ObservedPod]:
    # Pods created but not yet seen cannot be deleted (no uid precondition to pin
    # them); the next reconcile sees them and evens out.
    observed = sorted(
        (m.pod for m in members if m.pod is not None), key=lambda p: _deletion_order(p, revision)
    )
    return observed[:count]


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
    rollout: RolloutDecision | None = None,
    draining: int = 0,
    missing_templates: Sequence[str] = (),
) -> AgentPoolStatus:
    """Counts of what exists (not of what is merely planned), plus the conditions.

    `gpu_problem` says why no node can ever host a pod of the pool (see core/gpu_fit.py).
    `replacing`: warm pods being replaced (not Ready in time, or stale under Recreate);
    `deferred`: warm pods the refill rate limit holds back for now; `rollout`: the
    rollout's decision (its status, and whether it is under way or Degraded);
    `draining`: active pods being drained; `missing_templates`: revisions the pool needs
    pods of whose template is not stored (ControllerRevision lost).
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
    if rollout is not None and rollout.in_progress and rollout.status is not None:
        reason = "RolloutPaused" if rollout.status.pause_reason else "RolloutInProgress"
        step = rollout.status.current_step_index
        progressing = (True, reason, f"rollout step {step}: {rollout.status.message}")
    elif scaling_up:
        progressing = (True, "ScalingUp", "creating or promoting pods")
    elif scaling_down or draining:
        progressing = (True, "ScalingDown", f"removing surplus pods ({draining} draining)")
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
    elif rollout is not None and rollout.degraded is not None:
        put(ConditionType.DEGRADED, True, *rollout.degraded)
    elif missing_templates:
        put(
            ConditionType.DEGRADED,
            True,
            REVISION_UNKNOWN,
            f"no stored template of revision {', '.join(missing_templates)}: its pods cannot "
            "be created",
        )
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
            "draining": draining,
            "unschedulable": len(unschedulable),
            "current_revision": revision if rollout is None else rollout.stable_revision,
            "update_revision": revision,
            "rollout": pool.status.rollout if rollout is None else rollout.status,
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
