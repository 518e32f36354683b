"""AgentClaim decisions: which pods qualify, the writes that bind one, and the status.

Everything here is pure: the handler (handlers/claims.py) reads kopf's indices, asks
these functions what to do, performs the writes and patches the status.

Binding a warm pod is one JSON patch on the pod that tests, then sets:
* `test` the pod's uid and resourceVersion (the very version the operator chose from,
  so a pod deleted, promoted or claimed since is refused) and its `warm` state label;
* relabel it `claimed` with the claim's name, move its controller ownerReference
  from the pool to the claim, and annotate when and how it was bound.
The apiserver applies a patch atomically on the latest stored version, so of any
number of concurrent patches (other claims, other operator processes, the pool's
own promotions) exactly one sees `warm`; the others get 422 (or 409) and pick
another pod. Nothing in memory is needed for safety: an operator restarted in the
middle of a bind finds the pod labelled with the claim, or still warm.

The pod is the record of the bind: the claim's status is derived from it (its
annotations carry the bind time and whether it was a warm hit), so a status lost to
a crash between the two writes is rebuilt exactly.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from swarmops.api import AgentClaim, AgentClaimConditionType, AgentClaimStatus, AgentPool
from swarmops.api.agentclaim import ClaimPhase, ShutdownPolicy, WhenNoWarmPod
from swarmops.api.agentpool import WarmPoolUpdatePolicy
from swarmops.api.common import API_VERSION, ConditionStatus, ConditionType
from swarmops.core.conditions import find_condition, set_condition
from swarmops.core.pods import (
    CLAIM_LABEL,
    POOL_LABEL,
    STATE_LABEL,
    ObservedPod,
    PodState,
    observe_pod,
    parse_time,
)
from swarmops.core.pool import desired_template, pod_manifest
from swarmops.core.revision import template_revision

BOUND_AT_ANNOTATION: Final = "swarmops.dev/bound-at"
WARM_HIT_ANNOTATION: Final = "swarmops.dev/warm-hit"
# Only claims whose pod outlives them (shutdownPolicy Retain) carry it: the claim's
# ownerReference must come off the pod before the claim goes, or the garbage
# collector would delete the pod. With Delete, the garbage collector is the release.
RETAIN_FINALIZER: Final = "swarmops.dev/retain-pod"

BOUND = AgentClaimConditionType.BOUND
READY = ConditionType.READY
DEGRADED = ConditionType.DEGRADED


class ClaimReason(enum.StrEnum):
    """The `reason`s of a claim's conditions and Events."""

    WARM_POD_BOUND = "WarmPodBound"
    COLD_STARTED = "ColdStarted"
    POD_READY = "PodReady"
    POD_NOT_READY = "PodNotReady"
    POD_UNSCHEDULABLE = "PodUnschedulable"
    BINDING = "Binding"
    WAITING_FOR_WARM_POD = "WaitingForWarmPod"
    POOL_NOT_FOUND = "PoolNotFound"
    POOL_INVALID = "PoolInvalid"
    CAPABILITIES_NOT_OFFERED = "CapabilitiesNotOffered"
    BIND_FAILED = "BindFailed"
    BIND_TIMEOUT = "BindTimeout"
    POD_LOST = "PodLost"
    POD_FAILED = "PodFailed"
    POD_COMPLETED = "PodCompleted"
    TTL_EXPIRED = "TTLExpired"
    AS_EXPECTED = "AsExpected"


_PHASE_RANK: Final = {
    ClaimPhase.PENDING: 0,
    ClaimPhase.BOUND: 1,
    ClaimPhase.FAILED: 2,
    ClaimPhase.RELEASED: 2,
}


def phase_rank(phase: ClaimPhase) -> int:
    """Phases only move forward: Pending, then Bound, then Failed or Released."""
    return _PHASE_RANK[phase]


def is_terminal(phase: ClaimPhase) -> bool:
    return phase in (ClaimPhase.FAILED, ClaimPhase.RELEASED)


# --- the claim's own pod ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimedPod:
    """A pod labelled with a claim's name, with what the claim's status is built from."""

    pod: ObservedPod
    claim: str
    pod_ip: str | None
    bound_at: datetime.datetime | None
    warm_hit: bool | None
    owner_uids: tuple[str, ...]  # uids of its ownerReferences, in order

    @property
    def name(self) -> str:
        return self.pod.name

    @property
    def uid(self) -> str:
        return self.pod.uid

    @property
    def held(self) -> bool:
        """Still the claim's pod (finished or not): nobody is deleting it."""
        return not self.pod.terminating

    def owned_by(self, claim_uid: str | None) -> bool:
        return bool(claim_uid) and self.pod.controller_uid == claim_uid


def observe_claimed_pod(body: Mapping[str, Any]) -> ClaimedPod:
    """Parse a claimed pod's body (from a watch event, a list or a write's response)."""
    metadata: Mapping[str, Any] = body.get("metadata") or {}
    labels: Mapping[str, str] = metadata.get("labels") or {}
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    status: Mapping[str, Any] = body.get("status") or {}
    warm = annotations.get(WARM_HIT_ANNOTATION)
    return ClaimedPod(
        pod=observe_pod(body),
        claim=str(labels.get(CLAIM_LABEL) or ""),
        pod_ip=status.get("podIP") or None,
        bound_at=parse_time(annotations.get(BOUND_AT_ANNOTATION)),
        warm_hit=None if warm not in ("true", "false") else warm == "true",
        owner_uids=tuple(
            str(ref.get("uid") or "")
            for ref in metadata.get("ownerReferences") or []
            if isinstance(ref, Mapping)
        ),
    )


# --- which warm pods qualify (the choice among them: core/warmpods.py) ------------------------


def pool_revision(pool: AgentPool) -> str:
    """The revision the pool's new pods get (the hash of its desired template)."""
    return template_revision(desired_template(pool))


def required_revision(pool: AgentPool, revision: str) -> str | None:
    """The revision a warm pod must have to be handed out; None: any revision.

    With the Recreate update policy stale warm pods are on their way out, so claims
    refuse them; with OnReplenish they are handed out until the pool is used up.
    """
    if pool.spec.warm_pool.update_policy is WarmPoolUpdatePolicy.RECREATE:
        return revision
    return None


def missing_capabilities(pool: AgentPool, claim: AgentClaim) -> list[str]:
    """What the claim asks for that the pool does not offer (empty: a match)."""
    offered = set(pool.spec.capabilities)
    return sorted(c for c in set(claim.spec.capabilities) if c not in offered)


# --- the writes ----------------------------------------------------------------------------


def _pointer(*parts: str) -> str:
    """A JSON pointer (RFC 6901): '~' and '/' inside a key are escaped."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def claim_owner_reference(claim: AgentClaim) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "AgentClaim",
        "name": claim.metadata.name,
        "uid": claim.metadata.uid or "",
        "controller": True,
        # A foreground deletion of the claim waits for its pod.
        "blockOwnerDeletion": True,
    }


def format_time(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with milliseconds (creationTimestamps only have seconds)."""
    utc = moment.astimezone(datetime.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _bind_annotations(now: datetime.datetime, *, warm_hit: bool) -> dict[str, str]:
    return {BOUND_AT_ANNOTATION: format_time(now), WARM_HIT_ANNOTATION: str(warm_hit).lower()}


def bind_patch(pod: ObservedPod, claim: AgentClaim, *, now: datetime.datetime) -> list[Any]:
    """The JSON patch that binds warm `pod` to `claim`, or fails if the pod changed.

    The tests come first: uid (not a pod of the same name created since), the
    resourceVersion the choice was made on (not deleted, promoted or claimed since:
    any write moves it), and the warm state label (so even a patch built from a
    version we never saw cannot take a pod out of another claim's hands).
    """
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/uid", "value": pod.uid},
        {"op": "test", "path": "/metadata/resourceVersion", "value": pod.resource_version},
        {"op": "test", "path": _pointer("metadata", "labels", STATE_LABEL), "value": "warm"},
        {
            "op": "replace",
            "path": _pointer("metadata", "labels", STATE_LABEL),
            "value": str(PodState.CLAIMED),
        },
        {
            "op": "add",
            "path": _pointer("metadata", "labels", CLAIM_LABEL),
            "value": claim.metadata.name,
        },
        # The whole list: the pool's pods are created with the pool as their only owner,
        # and the resourceVersion test guarantees that is still what is stored.
        {"op": "add", "path": "/metadata/ownerReferences", "value": [claim_owner_reference(claim)]},
    ]
    annotations = _bind_annotations(now, warm_hit=True)
    if pod.has_annotations:
        ops += [
            {"op": "add", "path": _pointer("metadata", "annotations", key), "value": value}
            for key, value in annotations.items()
        ]
    else:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": annotations})
    return ops


def cold_start_name(claim: AgentClaim) -> str:
    """The cold-started pod's name: fixed per claim, so a repeated create (a retry, a
    second operator process) is refused with AlreadyExists instead of making two pods."""
    uid = (claim.metadata.uid or "").replace("-", "")
    return f"{claim.metadata.name}-{uid[:8]}" if uid else claim.metadata.name


def cold_start_manifest(
    pool: AgentPool, claim: AgentClaim, *, now: datetime.datetime
) -> dict[str, Any]:
    """A pod from the pool's template (the pool's own builder), born claimed and owned
    by the claim. It keeps the pool label, so the pool counts it among its claimed."""
    template = desired_template(pool)
    manifest = pod_manifest(pool, template, template_revision(template), PodState.CLAIMED)
    metadata: dict[str, Any] = manifest["metadata"]
    metadata.pop("generateName", None)
    metadata["name"] = cold_start_name(claim)
    metadata["labels"] = {**metadata["labels"], CLAIM_LABEL: claim.metadata.name}
    metadata["ownerReferences"] = [claim_owner_reference(claim)]
    metadata["annotations"] = {
        **(metadata.get("annotations") or {}),
        **_bind_annotations(now, warm_hit=False),
    }
    return manifest


def release_patch(pod: ClaimedPod, claim_uid: str) -> list[Any]:
    """The JSON patch that lets a pod outlive its claim (shutdownPolicy Retain).

    The claim's ownerReference comes off (or the garbage collector would delete the pod
    with the claim), and so do the pool and state labels: the pod is no longer the
    pool's, nor counted by it, nor watched by the operator. The claim label stays, so
    a person can still find whose agent it was.
    """
    index = pod.owner_uids.index(claim_uid)
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/uid", "value": pod.uid},
        {"op": "test", "path": f"/metadata/ownerReferences/{index}/uid", "value": claim_uid},
        {"op": "remove", "path": f"/metadata/ownerReferences/{index}"},
    ]
    if pod.pod.pool is not None:
        ops.append({"op": "remove", "path": _pointer("metadata", "labels", POOL_LABEL)})
    if pod.pod.state is not None:
        ops.append({"op": "remove", "path": _pointer("metadata", "labels", STATE_LABEL)})
    return ops


def finalizer_patch(claim: AgentClaim, *, present: bool) -> list[Any] | None:
    """The JSON patch that adds (`present`) or removes RETAIN_FINALIZER; None: nothing to do.

    Tests pin the list as it was seen, so a finalizer another controller adds at the
    same moment is never dropped (the patch fails and the next reconcile retries).
    """
    finalizers = list(claim.metadata.finalizers)
    uid_test = {"op": "test", "path": "/metadata/uid", "value": claim.metadata.uid or ""}
    if present:
        if RETAIN_FINALIZER in finalizers:
            return None
        if not finalizers:
            return [
                uid_test,
                {"op": "add", "path": "/metadata/finalizers", "value": [RETAIN_FINALIZER]},
            ]
        return [
            uid_test,
            {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
            {"op": "add", "path": "/metadata/finalizers/-", "value": RETAIN_FINALIZER},
        ]
    if RETAIN_FINALIZER not in finalizers:
        return None
    index = finalizers.index(RETAIN_FINALIZER)
    return [
        uid_test,
        {"op": "test", "path": f"/metadata/finalizers/{index}", "value": RETAIN_FINALIZER},
        {"op": "remove", "path": f"/metadata/finalizers/{index}"},
    ]


# --- status ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Cond:
    status: bool
    reason: str
    message: str = ""


def _with_conditions(
    claim: AgentClaim,
    status: AgentClaimStatus,
    *,
    now: datetime.datetime,
    bound: _Cond,
    ready: _Cond,
    degraded: _Cond,
    **fields: Any,
) -> AgentClaimStatus:
    generation = claim.metadata.generation or 0
    conditions = list(status.conditions)
    for kind, cond in ((READY, ready), (BOUND, bound), (DEGRADED, degraded)):
        conditions = set_condition(
            conditions,
            kind,
            ConditionStatus.TRUE if cond.status else ConditionStatus.FALSE,
            cond.reason,
            cond.message,
            now=now,
            observed_generation=generation,
        )
    return status.model_copy(
        update={"observed_generation": generation, "conditions": conditions, **fields}
    )


def bind_deadline(claim: AgentClaim, now: datetime.datetime) -> datetime.datetime:
    created = claim.metadata.creation_timestamp or now
    return created + datetime.timedelta(seconds=claim.spec.bind_timeout_seconds)


def pending_status(
    claim: AgentClaim,
    status: AgentClaimStatus,
    reason: str,
    message: str,
    *,
    degraded: bool,
    now: datetime.datetime,
) -> AgentClaimStatus:
    return _with_conditions(
        claim,
        status,
        now=now,
        bound=_Cond(False, reason, message),
        ready=_Cond(False, reason, message),
        degraded=_Cond(True, reason, message)
        if degraded
        else _Cond(False, ClaimReason.AS_EXPECTED),
        phase=ClaimPhase.PENDING,
    )


def failed_status(
    claim: AgentClaim,
    status: AgentClaimStatus,
    reason: str,
    message: str,
    *,
    now: datetime.datetime,
) -> AgentClaimStatus:
    return _with_conditions(
        claim,
        status,
        now=now,
        bound=_Cond(False, reason, message),
        ready=_Cond(False, reason, message),
        degraded=_Cond(True, reason, message),
        phase=ClaimPhase.FAILED,
        expires_at=None,
    )


def released_status(
    claim: AgentClaim,
    status: AgentClaimStatus,
    reason: str,
    message: str,
    *,
    now: datetime.datetime,
) -> AgentClaimStatus:
    return _with_conditions(
        claim,
        status,
        now=now,
        bound=_Cond(False, reason, message),
        ready=_Cond(False, reason, message),
        degraded=_Cond(False, ClaimReason.AS_EXPECTED),
        phase=ClaimPhase.RELEASED,
    )


def bound_status(
    claim: AgentClaim, status: AgentClaimStatus, pod: ClaimedPod, *, now: datetime.datetime
) -> AgentClaimStatus:
    """Bound to `pod`: every field from the pod itself (its annotations say when and how)."""
    bound_at = pod.bound_at or status.bound_at or now
    warm_hit = pod.warm_hit if pod.warm_hit is not None else status.warm_hit
    created = claim.metadata.creation_timestamp
    time_to_bind = (
        None if created is None else max(0, round((bound_at - created).total_seconds() * 1000))
    )
    ttl = claim.spec.lifetime.ttl_seconds_after_bound
    expires_at = None if ttl is None else bound_at + datetime.timedelta(seconds=ttl)
    node = pod.pod.node_name
    how = ClaimReason.WARM_POD_BOUND if warm_hit is not False else ClaimReason.COLD_STARTED
    where = f"on node {node}" if node else "not scheduled yet"
    if pod.pod.ready:
        ready = _Cond(True, ClaimReason.POD_READY, f"pod {pod.name} is Ready")
    elif pod.pod.unschedulable:
        ready = _Cond(False, ClaimReason.POD_UNSCHEDULABLE, pod.pod.unschedulable)
    else:
        ready = _Cond(
            False, ClaimReason.POD_NOT_READY, f"pod {pod.name} is {pod.pod.phase}, not Ready yet"
        )
    return _with_conditions(
        claim,
        status,
        now=now,
        bound=_Cond(True, how, f"pod {pod.name} {where}"),
        ready=ready,
        degraded=_Cond(False, ClaimReason.AS_EXPECTED),
        phase=ClaimPhase.BOUND,
        pod_name=pod.name,
        pod_ip=pod.pod_ip,
        node_name=node,
        revision=pod.pod.revision,
        warm_hit=warm_hit,
        bound_at=bound_at,
        time_to_bind_milliseconds=time_to_bind,
        expires_at=expires_at,
    )


# --- the plan --------------------------------------------------------------------------------


class BindMode(enum.StrEnum):
    WARM_ONLY = "WarmOnly"  # a warm pod or nothing (whenNoWarmPod: Wait)
    WARM_OR_COLD = "WarmOrCold"  # a warm pod, else a cold start (whenNoWarmPod: ColdStart)


@dataclass(frozen=True)
class ClaimPlan:
    """What to do for one claim, in order: finalizer, pod writes, bind, status."""

    status: AgentClaimStatus  # to report when no bind happens in this pass
    bind: BindMode | None = None
    finalizer: bool | None = None  # True: add RETAIN_FINALIZER, False: remove it
    deletes: tuple[ClaimedPod, ...] = ()  # the claim's pod, released by deletion
    releases: tuple[ClaimedPod, ...] = ()  # the claim's pod, released and kept
    duplicates: tuple[ClaimedPod, ...] = ()  # extra pods bound to the claim: deleted
    requeue_after: float | None = None  # seconds until a deadline (bind timeout or ttl)
    # Waiting for a warm pod (Wait policy): woken when one becomes Ready.
    waiting: bool = False
    # Blocked on the pool (missing, invalid, lacking capabilities): woken when it changes.
    blocked: bool = False


def _seconds_until(moment: datetime.datetime, now: datetime.datetime) -> float:
    return max(0.0, (moment - now).total_seconds())


def _primary(pods: Sequence[ClaimedPod], status: AgentClaimStatus) -> ClaimedPod | None:
    """The pod the claim holds: the one its status names, else the first bound."""
    for pod in pods:
        if pod.name == status.pod_name:
            return pod
    late = datetime.datetime.max.replace(tzinfo=datetime.UTC)
    return min(pods, key=lambda p: (p.bound_at or late, p.name), default=None)


def _end(
    claim: AgentClaim, pod: ClaimedPod
) -> tuple[tuple[ClaimedPod, ...], tuple[ClaimedPod, ...], str]:
    """(deletes, releases, what happened to the pod) when the claim's life ends."""
    if claim.spec.lifetime.shutdown_policy is ShutdownPolicy.RETAIN:
        return (), (pod,), f"pod {pod.name} retained"
    return (pod,), (), f"pod {pod.name} deleted"


def plan_claim(
    claim: AgentClaim,
    status: AgentClaimStatus,
    *,
    pool: AgentPool | None,
    pool_invalid: str | None = None,
    own_pods: Sequence[ClaimedPod],
    now: datetime.datetime,
) -> ClaimPlan:
    """Decide what to do for a claim, from the claim, its pool and the pods bound to it.

    `status` is the claim's latest known status (the handler's own last write when the
    watch has not shown it yet); `own_pods` are the pods labelled with the claim
    (terminating ones and those of an earlier claim of the same name included: only
    those the claim controls and nobody is deleting count); `pool` is None when there is no
    such pool or it cannot be parsed, and then `pool_invalid` says why it cannot.
    """
    retain = claim.spec.lifetime.shutdown_policy is ShutdownPolicy.RETAIN
    has_finalizer = RETAIN_FINALIZER in claim.metadata.finalizers
    held = [p for p in own_pods if p.held and p.owned_by(claim.metadata.uid)]
    primary = _primary(held, status)
    duplicates = tuple(p for p in held if p is not primary)

    # The finalizer comes off last, once every pod write of the pass has succeeded.
    drop_finalizer = False if has_finalizer else None
    if claim.metadata.deletion_timestamp is not None:
        # Going away. With Delete the garbage collector removes the pod; with Retain it
        # is released first, then the finalizer lets the claim go.
        if retain and primary is not None:
            return ClaimPlan(
                status, releases=(primary,), duplicates=duplicates, finalizer=drop_finalizer
            )
        return ClaimPlan(status, finalizer=drop_finalizer)

    if is_terminal(status.phase):
        # Done; tidy up a pod that outlived the end (a crash between the two writes).
        if primary is not None:
            deletes, releases, _ = _end(claim, primary)
            return ClaimPlan(
                status,
                deletes=deletes,
                releases=releases,
                duplicates=duplicates,
                finalizer=drop_finalizer,
            )
        return ClaimPlan(status, finalizer=drop_finalizer)

    finalizer = True if retain and not has_finalizer else None
    if not retain and has_finalizer:
        finalizer = False  # the policy changed to Delete: the garbage collector releases

    if primary is not None:
        bound = bound_status(claim, status, primary, now=now)
        end_reason: str | None = None
        if primary.pod.phase == "Failed":
            end_reason, message = ClaimReason.POD_FAILED, f"pod {primary.name} failed"
        elif primary.pod.phase == "Succeeded":
            end_reason, message = ClaimReason.POD_COMPLETED, f"pod {primary.name} completed"
        elif bound.expires_at is not None and bound.expires_at <= now:
            ttl = claim.spec.lifetime.ttl_seconds_after_bound
            end_reason, message = ClaimReason.TTL_EXPIRED, f"ttl of {ttl}s after bound expired"
        if end_reason is None:
            return ClaimPlan(
                bound,
                finalizer=finalizer,
                duplicates=duplicates,
                requeue_after=(
                    None if bound.expires_at is None else _seconds_until(bound.expires_at, now)
                ),
            )
        deletes, releases, fate = _end(claim, primary)
        make = failed_status if end_reason is ClaimReason.POD_FAILED else released_status
        return ClaimPlan(
            make(claim, bound, end_reason, f"{message}; {fate}", now=now),
            deletes=deletes,
            releases=releases,
            duplicates=duplicates,
            finalizer=drop_finalizer,
        )

    if status.phase is ClaimPhase.BOUND:
        gone = f"pod {status.pod_name} is gone" if status.pod_name else "the pod is gone"
        return ClaimPlan(
            failed_status(claim, status, ClaimReason.POD_LOST, gone, now=now),
            finalizer=drop_finalizer,
        )

    # Pending: find a pool that can serve it, then bind.
    deadline = bind_deadline(claim, now)
    expired = deadline <= now
    pool_name = claim.spec.pool_ref.name
    problem: tuple[ClaimReason, str] | None = None
    if pool_invalid is not None:
        problem = (ClaimReason.POOL_INVALID, f"AgentPool {pool_name} is invalid: {pool_invalid}")
    elif pool is None or pool.metadata.deletion_timestamp is not None:
        why = "does not exist" if pool is None else "is being deleted"
        problem = (ClaimReason.POOL_NOT_FOUND, f"AgentPool {pool_name} {why}")
    else:
        missing = missing_capabilities(pool, claim)
        if missing:
            problem = (
                ClaimReason.CAPABILITIES_NOT_OFFERED,
                f"AgentPool {pool_name} does not offer {', '.join(missing)}",
            )
    timeout = claim.spec.bind_timeout_seconds
    if problem is not None:
        reason, message = problem
        if expired:
            return ClaimPlan(
                failed_status(
                    claim, status, reason, f"{message}; gave up after {timeout}s", now=now
                ),
                finalizer=drop_finalizer,
            )
        return ClaimPlan(
            pending_status(claim, status, reason, message, degraded=True, now=now),
            finalizer=finalizer,
            requeue_after=_seconds_until(deadline, now),
            blocked=True,
        )
    if expired:
        reason, message = (
            ClaimReason.BIND_TIMEOUT,
            f"no warm pod of AgentPool {pool_name} became Ready within {timeout}s",
        )
        last = find_condition(status.conditions, BOUND)
        if last is not None and last.reason == ClaimReason.BIND_FAILED:
            # The apiserver kept refusing the pod write: that, not the wait, is the cause.
            reason, message = ClaimReason.BIND_FAILED, f"{last.message}; gave up after {timeout}s"
        return ClaimPlan(
            failed_status(claim, status, reason, message, now=now),
            finalizer=drop_finalizer,
        )
    cold = claim.spec.when_no_warm_pod is WhenNoWarmPod.COLD_START
    waiting = pending_status(
        claim,
        status,
        ClaimReason.WAITING_FOR_WARM_POD,
        f"waiting for a Ready warm pod of AgentPool {pool_name}",
        degraded=False,
        now=now,
    )
    return ClaimPlan(
        waiting,
        bind=BindMode.WARM_OR_COLD if cold else BindMode.WARM_ONLY,
        finalizer=finalizer,
        requeue_after=_seconds_until(deadline, now),
        waiting=not cold,
    )


def bind_failed_status(
    claim: AgentClaim, status: AgentClaimStatus, message: str, *, now: datetime.datetime
) -> AgentClaimStatus:
    """Still Pending: the apiserver refused the pod write (quota, admission, template)."""
    return pending_status(claim, status, ClaimReason.BIND_FAILED, message, degraded=True, now=now)


# --- Events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimEvent:
    reason: str
    message: str
    warning: bool = False


def claim_events(
    before: AgentClaimStatus, after: AgentClaimStatus, *, latency_ms: float | None = None
) -> list[ClaimEvent]:
    """What a person reading `kubectl describe agentclaim` wants to know of a change.

    `latency_ms`: the bind as the operator measured it (from the claim's first watch
    event); else the status's time from creationTimestamp (whole seconds) is quoted.
    """
    events: list[ClaimEvent] = []
    if after.phase is not before.phase:
        if after.phase is ClaimPhase.BOUND:
            how = "warm pod" if after.warm_hit is not False else "cold-started pod"
            where = f" on node {after.node_name}" if after.node_name else ""
            took = latency_ms if latency_ms is not None else after.time_to_bind_milliseconds
            timing = f" in {took:.0f} ms" if took is not None else ""
            events.append(ClaimEvent("Bound", f"Bound {how} {after.pod_name}{where}{timing}"))
        elif after.phase in (ClaimPhase.FAILED, ClaimPhase.RELEASED):
            bound = find_condition(after.conditions, BOUND)
            reason = bound.reason if bound is not None else str(after.phase)
            message = bound.message if bound is not None else ""
            if after.phase is ClaimPhase.RELEASED:
                events.append(ClaimEvent("Released", f"{reason}: {message}"))
            else:
                events.append(ClaimEvent(reason, message, warning=True))
    if after.phase is ClaimPhase.PENDING:
        new = find_condition(after.conditions, DEGRADED)
        old = find_condition(before.conditions, DEGRADED)
        if (
            new is not None
            and new.status == ConditionStatus.TRUE
            and (old is None or old.status != ConditionStatus.TRUE or old.reason != new.reason)
        ):
            events.append(ClaimEvent(new.reason, new.message, warning=True))
    return events
