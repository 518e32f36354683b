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
"""

from __future__ import annotations

import datetime
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from swarmops.api import AgentPool, AgentPoolConditionType, AgentPoolStatus
from swarmops.api.agentpool import RevisionStatus
from swarmops.api.common import API_VERSION, DNS_LABEL_PATTERN, ConditionStatus, ConditionType
from swarmops.core.conditions import find_condition, set_condition
from swarmops.core.expectations import Expectations
from swarmops.core.pods import POOL_LABEL, REVISION_LABEL, STATE_LABEL, ObservedPod, PodState
from swarmops.core.revision import template_revision

_REVISION_RE = re.compile(DNS_LABEL_PATTERN)
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
    deletes: tuple[PodRef, ...]
    status: AgentPoolStatus

    @property
    def idle(self) -> bool:
        return not (self.creates or self.relabels or self.deletes)


def pool_selector(pool_name: str, state: PodState | None = None) -> str:
    """Label selector of a pool's pods (of one state): the scale subresource's selector."""
    selector = f"{POOL_LABEL}={pool_name}"
    return selector if state is None else f"{selector},{STATE_LABEL}={state}"


def desired_template(pool: AgentPool) -> dict[str, Any]:
    """The pod template as the pool's pods get it; its hash is the revision.

    GPU requests and node affinity (issue 6) belong here, so that they count in the
    revision like any other template change.
    """
    return pool.spec.template.to_wire()


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


def plan_pool(
    pool: AgentPool,
    observed_pods: Iterable[ObservedPod],
    expectations: Expectations,
    *,
    now: datetime.datetime,
) -> PoolPlan:
    """Decide the writes that move the pool toward its spec, and the status to report."""
    template = desired_template(pool)
    revision = template_revision(template)
    members, claimed = _members(pool, observed_pods, expectations)
    want_active = pool.spec.replicas
    want_warm = pool.spec.warm_pool.size

    active = [m for m in members if m.state is PodState.ACTIVE]
    warm = [m for m in members if m.state is PodState.WARM]
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
    if warm_missing > 0:
        creates += [PodState.WARM] * warm_missing
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
    )
    return PoolPlan(revision, plan_creates, tuple(relabels), tuple(deletes), status)


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
) -> AgentPoolStatus:
    """Counts of what exists (not of what is merely planned), plus the conditions."""
    seen = [m for m in members if m.pod is not None]
    active = [m for m in seen if m.state is PodState.ACTIVE]
    warm = [m for m in seen if m.state is PodState.WARM]
    ready_active = sum(m.ready for m in active)
    ready_warm = sum(m.ready for m in warm)
    unschedulable = [m.pod.unschedulable for m in seen if m.pod and m.pod.unschedulable]
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
    put(
        ConditionType.READY,
        replicas_ready,
        "ReplicasReady" if replicas_ready else "ReplicasNotReady",
        f"{ready_active}/{want_active} active pods are Ready",
    )
    put(
        AgentPoolConditionType.WARM_POOL_READY,
        warm_ready,
        "WarmPoolFull" if warm_ready else "WarmPoolFilling",
        f"{ready_warm}/{want_warm} warm pods are Ready",
    )
    if scaling_up:
        progressing = (True, "ScalingUp", "creating or promoting pods")
    elif scaling_down:
        progressing = (True, "ScalingDown", "deleting surplus pods")
    elif busy or not (replicas_ready and warm_ready):
        progressing = (True, "PodsStarting", "waiting for pods to be created and become Ready")
    else:
        progressing = (False, "Stable", "all pods exist and are Ready")
    put(ConditionType.PROGRESSING, *progressing)
    if unschedulable:
        put(
            ConditionType.DEGRADED,
            True,
            "Unschedulable",
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
