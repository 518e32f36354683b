"""The PodDisruptionBudget of a pool: its active and claimed pods, `spec.disruption`.

Warm pods are left out: they are idle spares the pool replaces within a second, and
a drain should take them first. Active pods serve the swarm and claimed pods serve a
session: those are what a voluntary disruption (a node drain, an eviction by the GPU
health reaction) must not take too many of at once.

Why `minAvailable` as a number, computed here, rather than the `maxUnavailable` the
user writes: with `maxUnavailable` (or any percentage) the disruption controller
derives the expected pod count from the scale subresource of each pod's controller.
Claimed pods are controlled by their AgentClaim, which has no scale subresource, so
such a budget fails to sync (DisruptionAllowed=False, SyncFailed) and blocks every
eviction. An integer `minAvailable` needs no controller at all. So the operator does
the arithmetic the disruption controller would do, against the pods it expects:

    expected     = spec.replicas + claimed pods (alive)
    unavailable  = maxUnavailable, or ceil(maxUnavailable% * expected)  (Kubernetes rounds up)
    minAvailable = max(0, expected - unavailable)

and rewrites the number when `replicas`, the claimed count or the budget changes.

`unhealthyPodEvictionPolicy: AlwaysAllow`: a pod that is not Ready does no work, so
evicting it must never be blocked by the budget (a drain would otherwise hang on a
broken agent).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from swarmops.api import AgentPool
from swarmops.core.pods import POOL_LABEL, STATE_LABEL, PodState
from swarmops.core.pool import owner_reference

POLICY_API_VERSION: Final = "policy/v1"
#: The pod states a pool's budget covers.
BUDGETED_STATES: Final = (PodState.ACTIVE, PodState.CLAIMED)
UNHEALTHY_POD_EVICTION_POLICY: Final = "AlwaysAllow"


def budget_name(pool_name: str) -> str:
    """The budget is named after its pool (one per pool, in the pool's namespace)."""
    return pool_name


def unavailable_allowed(max_unavailable: int | str, expected: int) -> int:
    """Pods a disruption may take: a count, or a percentage of `expected` rounded up."""
    if isinstance(max_unavailable, int):
        return max_unavailable
    percent = int(max_unavailable.rstrip("%"))
    return math.ceil(percent * expected / 100)


def min_available(max_unavailable: int | str, expected: int) -> int:
    return max(0, expected - unavailable_allowed(max_unavailable, expected))


def budget_selector(pool_name: str) -> dict[str, Any]:
    return {
        "matchLabels": {POOL_LABEL: pool_name},
        "matchExpressions": [
            {"key": STATE_LABEL, "operator": "In", "values": [str(s) for s in BUDGETED_STATES]}
        ],
    }


def budget_spec(pool: AgentPool, claimed: int) -> dict[str, Any]:
    """The budget's spec for a pool with `claimed` alive claimed pods."""
    expected = pool.spec.replicas + claimed
    return {
        "minAvailable": min_available(pool.spec.disruption.max_unavailable, expected),
        "selector": budget_selector(pool.metadata.name),
        "unhealthyPodEvictionPolicy": UNHEALTHY_POD_EVICTION_POLICY,
    }


def budget_manifest(pool: AgentPool, claimed: int) -> dict[str, Any]:
    return {
        "apiVersion": POLICY_API_VERSION,
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": budget_name(pool.metadata.name),
            "namespace": pool.metadata.namespace,
            # The operator watches only budgets with this label (its own).
            "labels": {POOL_LABEL: pool.metadata.name},
            "ownerReferences": [owner_reference(pool)],
        },
        "spec": budget_spec(pool, claimed),
    }


@dataclass(frozen=True, slots=True)
class ObservedBudget:
    """A pool's budget as the watch shows it."""

    name: str
    uid: str
    controller_uid: str | None
    spec: Mapping[str, Any]
    terminating: bool = False


def observe_budget(body: Mapping[str, Any]) -> ObservedBudget:
    metadata: Mapping[str, Any] = body.get("metadata") or {}
    controller_uid = next(
        (
            ref.get("uid")
            for ref in metadata.get("ownerReferences") or []
            if isinstance(ref, Mapping) and ref.get("controller")
        ),
        None,
    )
    spec = body.get("spec") or {}
    return ObservedBudget(
        name=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or ""),
        controller_uid=controller_uid,
        spec={
            key: spec[key]
            for key in ("minAvailable", "maxUnavailable", "selector", "unhealthyPodEvictionPolicy")
            if key in spec
        },
        terminating=metadata.get("deletionTimestamp") is not None,
    )


@dataclass(frozen=True, slots=True)
class BudgetWrite:
    """Create the budget (`manifest`), or replace the spec of the one there (`patch`)."""

    name: str
    manifest: dict[str, Any] | None = None
    patch: list[dict[str, Any]] | None = None


def plan_budget(
    pool: AgentPool, claimed: int, observed: ObservedBudget | None
) -> BudgetWrite | None:
    """The write that makes the pool's budget what it should be; None: it already is.

    A budget owned by another uid (an earlier pool of the same name) or on its way out
    is left to the garbage collector; its DELETED event brings the pool back here to
    create the new one.
    """
    name = budget_name(pool.metadata.name)
    if observed is None:
        return BudgetWrite(name, manifest=budget_manifest(pool, claimed))
    if observed.terminating or observed.controller_uid != pool.metadata.uid:
        return None
    desired = budget_spec(pool, claimed)
    if dict(observed.spec) == desired:
        return None
    return BudgetWrite(
        name,
        patch=[
            # Only the budget seen, never a new one of the same name made meanwhile.
            {"op": "test", "path": "/metadata/uid", "value": observed.uid},
            {"op": "replace", "path": "/spec", "value": desired},
        ],
    )
