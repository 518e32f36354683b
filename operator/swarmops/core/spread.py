"""Spreading a pool's pods over nodes: one topology spread constraint, for every pool.

Losing a node should cost a pool a few of its warm pods, not most of them, and claims
should find Ready pods on several nodes. So every pod the operator builds (warm,
active, cold-started for a claim, with or without GPUs) carries a soft spread over
`kubernetes.io/hostname` of its pool's pods:

    maxSkew 1, whenUnsatisfiable ScheduleAnyway, labelSelector swarmops.dev/pool=<pool>

ScheduleAnyway, because a spread the cluster cannot honour (one node left, the others
full) must never keep a pod Pending: an unplaced warm pod is worth nothing. The selector
is the pool label alone, not the state: the state of a pod changes after it is placed
(warm → active or claimed), and the scheduler can only count what is on the nodes now.

Merged, not imposed: a user who already spreads over hostnames in the template (any
maxSkew, any whenUnsatisfiable) keeps theirs and gets no second one; constraints on
other keys (zones, racks) are kept and ours is appended. The constraint is part of the
template before it is hashed, so it counts in the revision like any template change.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from swarmops.core.pods import POOL_LABEL

HOSTNAME_LABEL: Final = "kubernetes.io/hostname"
SPREAD_MAX_SKEW: Final = 1


def spread_constraint(pool_name: str) -> dict[str, Any]:
    """The constraint the operator adds for the pods of `pool_name`."""
    return {
        "maxSkew": SPREAD_MAX_SKEW,
        "topologyKey": HOSTNAME_LABEL,
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {POOL_LABEL: pool_name}},
    }


def with_hostname_spread(template: Mapping[str, Any], pool_name: str) -> dict[str, Any]:
    """`template` (a pod template: metadata and spec) with the pool's hostname spread merged
    in; the input is not changed, and merging twice changes nothing more."""
    result = copy.deepcopy(dict(template))
    spec: dict[str, Any] = result.setdefault("spec", {})
    constraints: list[dict[str, Any]] = list(spec.get("topologySpreadConstraints") or [])
    if not any(c.get("topologyKey") == HOSTNAME_LABEL for c in constraints):
        constraints.append(spread_constraint(pool_name))
    spec["topologySpreadConstraints"] = constraints
    return result
