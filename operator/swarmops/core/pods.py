"""The operator's labels on pods, and a pod as the pool plan sees it."""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swarmops.agent.contract import AGENT_PORT_NAME

POOL_LABEL = "swarmops.dev/pool"
REVISION_LABEL = "swarmops.dev/revision"
STATE_LABEL = "swarmops.dev/state"
# The AgentClaim a claimed pod is bound to (its name; the claim's uid is in the pod's
# controller ownerReference).
CLAIM_LABEL = "swarmops.dev/claim"
# When the pool started draining an active pod it is removing (RFC 3339): from then on the
# pod no longer counts as active, and it is deleted once its agent is idle or the drain
# deadline passes (core/rollout.py).
DRAIN_STARTED_ANNOTATION = "swarmops.dev/drain-started-at"
# A container waiting with this reason is in a crash loop (the kubelet's back-off).
CRASH_LOOP_REASON = "CrashLoopBackOff"


class PodState(enum.StrEnum):
    """A pool pod's role; kept in the `swarmops.dev/state` label."""

    WARM = "warm"  # idle and prewarmed, ready to be handed out
    ACTIVE = "active"  # one of the pool's `replicas`, serving the swarm's shared work
    CLAIMED = "claimed"  # bound to an AgentClaim, owned by the claim from then on


def parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


@dataclass(frozen=True, slots=True)
class ObservedPod:
    """The few facts about a pod that pool decisions depend on (small: pools hold thousands)."""

    name: str
    namespace: str
    uid: str
    resource_version: str
    pool: str | None
    state: PodState | None
    revision: str | None
    controller_uid: str | None
    created: datetime.datetime | None
    terminating: bool
    phase: str
    ready: bool
    node_name: str | None
    unschedulable: str | None  # the scheduler's message while the pod cannot be placed
    # Whether metadata.annotations exists: a JSON patch must add the map before a key in it.
    has_annotations: bool = False
    # When the scheduler placed the pod (PodScheduled=True), and when its Ready condition
    # last changed: the readiness timeout of warm pods counts from the later of the two.
    scheduled_at: datetime.datetime | None = None
    ready_changed_at: datetime.datetime | None = None
    # Container restarts summed over the pod's containers, and whether one of them is in
    # a crash loop: what the rollout's pod checks judge a canary by.
    restarts: int = 0
    crash_looping: bool = False
    # Set while the pool drains the pod before removing it (DRAIN_STARTED_ANNOTATION).
    drain_started_at: datetime.datetime | None = None
    # Whether the pod runs an agent the operator can ask whether it is idle.
    has_agent: bool = False

    @property
    def alive(self) -> bool:
        """Counts toward the pool: neither on its way out nor finished."""
        return not self.terminating and self.phase not in ("Succeeded", "Failed")

    @property
    def not_ready_since(self) -> datetime.datetime | None:
        """Since when a placed pod has been waiting to be Ready; None: Ready, or not placed.

        Counted from its scheduling, or from when it last lost readiness if that came
        later. An unscheduled pod has no clock: it is waiting for room, not failing to
        start, and replacing it would only churn.
        """
        if self.ready or self.node_name is None:
            return None
        # A pod bound without the scheduler (spec.nodeName set) has no PodScheduled.
        start = self.scheduled_at or self.created
        if start is None:
            return None
        if self.ready_changed_at is not None and self.ready_changed_at > start:
            return self.ready_changed_at
        return start


def _condition(conditions: Any, kind: str) -> Mapping[str, Any] | None:
    if not isinstance(conditions, list):
        return None
    for condition in conditions:
        if isinstance(condition, Mapping) and condition.get("type") == kind:
            return condition
    return None


def observe_pod(body: Mapping[str, Any]) -> ObservedPod:
    """Parse a pod body (from a watch event or a list) at the edge."""
    metadata: Mapping[str, Any] = body.get("metadata") or {}
    spec: Mapping[str, Any] = body.get("spec") or {}
    status: Mapping[str, Any] = body.get("status") or {}
    labels: Mapping[str, str] = metadata.get("labels") or {}
    try:
        state: PodState | None = PodState(labels.get(STATE_LABEL, ""))
    except ValueError:
        state = None
    controller_uid = next(
        (
            ref.get("uid")
            for ref in metadata.get("ownerReferences") or []
            if isinstance(ref, Mapping) and ref.get("controller")
        ),
        None,
    )
    phase = str(status.get("phase") or "Pending")
    ready_condition = _condition(status.get("conditions"), "Ready")
    scheduled = _condition(status.get("conditions"), "PodScheduled")
    unschedulable = None
    if (
        scheduled is not None
        and scheduled.get("status") == "False"
        and scheduled.get("reason") == "Unschedulable"
        and not spec.get("nodeName")
    ):
        unschedulable = str(scheduled.get("message") or "the scheduler found no node")
    container_statuses = [
        c for c in status.get("containerStatuses") or () if isinstance(c, Mapping)
    ]
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    return ObservedPod(
        name=str(metadata.get("name") or ""),
        namespace=str(metadata.get("namespace") or ""),
        uid=str(metadata.get("uid") or ""),
        resource_version=str(metadata.get("resourceVersion") or ""),
        pool=labels.get(POOL_LABEL),
        state=state,
        revision=labels.get(REVISION_LABEL),
        controller_uid=controller_uid,
        created=parse_time(metadata.get("creationTimestamp")),
        terminating=metadata.get("deletionTimestamp") is not None,
        phase=phase,
        ready=phase == "Running"
        and ready_condition is not None
        and ready_condition.get("status") == "True",
        node_name=spec.get("nodeName") or None,
        unschedulable=unschedulable,
        has_annotations=bool(metadata.get("annotations")),
        scheduled_at=(
            parse_time(scheduled.get("lastTransitionTime"))
            if scheduled is not None and scheduled.get("status") == "True"
            else None
        ),
        ready_changed_at=(
            parse_time(ready_condition.get("lastTransitionTime"))
            if ready_condition is not None
            else None
        ),
        restarts=sum(int(c.get("restartCount") or 0) for c in container_statuses),
        crash_looping=any(
            ((c.get("state") or {}).get("waiting") or {}).get("reason") == CRASH_LOOP_REASON
            for c in container_statuses
        ),
        drain_started_at=parse_time(annotations.get(DRAIN_STARTED_ANNOTATION)),
        has_agent=any(
            port.get("name") == AGENT_PORT_NAME
            for container in spec.get("containers") or ()
            for port in container.get("ports") or ()
        ),
    )
