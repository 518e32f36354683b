"""Can any GPU node ever host one pod of a pool? A pure check over the nodes the operator sees.

"Ever" means on an empty node: current usage is ignored (that is the scheduler's and a
cluster autoscaler's business; pods wait in Pending for it). A node fits when

* its product (GFD `nvidia.com/gpu.product`) is one of the products asked for (any, if none),
* its GPU memory (GFD `nvidia.com/gpu.memory`, MiB) is at least `minMemoryMiB`,
* it has at least `count` of the resource asked for allocatable (`nvidia.com/gpu`, or the
  MIG resource `nvidia.com/mig-<profile>`), and
* SwarmOps has not excluded it (one of its GPU taints, or an excluding health label).

When no node fits, the pool reports `Degraded` with reason `UnsatisfiableGPURequest` and a
message that names what was asked and what the nodes offer. The user's own nodeSelector
and affinity are not evaluated here: a pod they make unschedulable is reported by the
scheduler, and the pool shows that as `Degraded`/`Unschedulable`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from swarmops.api.common import Condition, ConditionStatus, ConditionType
from swarmops.core.conditions import find_condition
from swarmops.core.gpu import (
    BLOCKING_TAINT_EFFECTS,
    EXCLUDED_HEALTH,
    GPU_HEALTH_LABEL,
    GPU_MEMORY_LABEL,
    GPU_NODE_SELECTOR,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    MIG_RESOURCE_PREFIX,
    SWARMOPS_GPU_TAINTS,
    GpuRequest,
)

UNSATISFIABLE_GPU_REQUEST: Final = "UnsatisfiableGPURequest"
#: Most product groups a message lists; the rest are counted.
MAX_LISTED_PRODUCTS: Final = 8


@dataclass(frozen=True, slots=True)
class GpuNode:
    """The facts about a GPU node that placement depends on (small: parsed once at the edge)."""

    name: str
    product: str | None = None
    memory_mib: int | None = None
    resources: tuple[tuple[str, int], ...] = ()  # allocatable nvidia.com/* resources, sorted
    excluded_by: str | None = None  # the SwarmOps taint or health label that excludes it

    def allocatable(self, resource: str) -> int:
        return dict(self.resources).get(resource, 0)


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def observe_gpu_node(body: Mapping[str, Any]) -> GpuNode:
    """Parse a Node body (from a watch event or a list) at the edge."""
    metadata: Mapping[str, Any] = body.get("metadata") or {}
    labels: Mapping[str, str] = metadata.get("labels") or {}
    spec: Mapping[str, Any] = body.get("spec") or {}
    status: Mapping[str, Any] = body.get("status") or {}
    allocatable: Mapping[str, Any] = status.get("allocatable") or {}
    resources = tuple(
        sorted(
            (key, amount)
            for key, value in allocatable.items()
            if key == GPU_RESOURCE or key.startswith(MIG_RESOURCE_PREFIX)
            if (amount := _int(value)) is not None and amount > 0
        )
    )
    excluded_by = next(
        (
            f"taint {taint.get('key')}:{taint.get('effect')}"
            for taint in spec.get("taints") or []
            if isinstance(taint, Mapping)
            and taint.get("key") in SWARMOPS_GPU_TAINTS
            and taint.get("effect") in BLOCKING_TAINT_EFFECTS
        ),
        None,
    )
    health = labels.get(GPU_HEALTH_LABEL)
    if excluded_by is None and health in {str(h) for h in EXCLUDED_HEALTH}:
        excluded_by = f"label {GPU_HEALTH_LABEL}={health}"
    return GpuNode(
        name=str(metadata.get("name") or ""),
        product=labels.get(GPU_PRODUCT_LABEL) or None,
        memory_mib=_int(labels.get(GPU_MEMORY_LABEL)),
        resources=resources,
        excluded_by=excluded_by,
    )


def node_fits(request: GpuRequest, node: GpuNode) -> bool:
    """Could `node`, empty, host one pod with `request`?"""
    return (
        node.excluded_by is None
        and (not request.products or node.product in request.products)
        and (
            request.min_memory_mib is None
            or (node.memory_mib is not None and node.memory_mib >= request.min_memory_mib)
        )
        and node.allocatable(request.resource) >= request.count
    )


def unsatisfiable(request: GpuRequest | None, nodes: Iterable[GpuNode]) -> str | None:
    """None when some node fits (or nothing is asked); else the message for a person."""
    if request is None:
        return None
    nodes = list(nodes)
    if any(node_fits(request, node) for node in nodes):
        return None
    return f"no node offers {describe_request(request)}; {describe_nodes(nodes)}"


def describe_request(request: GpuRequest) -> str:
    """E.g. '2 GPUs of NVIDIA-H100-80GB-HBM3 with at least 81000 MiB each, per pod'."""
    if request.mig_profile:
        unit = "MIG slice" if request.count == 1 else "MIG slices"
        what = f"{request.count} {unit} {request.mig_profile} ({request.resource})"
    else:
        what = f"{request.count} {'GPU' if request.count == 1 else 'GPUs'}"
    if request.products:
        what += f" of {' or '.join(request.products)}"
    if request.min_memory_mib is not None:
        what += f" with at least {request.min_memory_mib} MiB each"
    return f"{what} per pod"


def describe_nodes(nodes: Sequence[GpuNode]) -> str:
    """What the GPU nodes offer, grouped by product, e.g.
    'GPU nodes: NVIDIA-A100-SXM4-40GB (40960 MiB, 4 per node, 1 node)'."""
    if not nodes:
        return f"no GPU nodes are known (none is labelled {GPU_NODE_SELECTOR})"
    memory: dict[str, set[int | None]] = defaultdict(set)
    per_node: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    count: dict[str, int] = defaultdict(int)
    excluded: dict[str, int] = defaultdict(int)
    for node in nodes:
        product = node.product or "unknown product"
        count[product] += 1
        excluded[product] += node.excluded_by is not None
        memory[product].add(node.memory_mib)
        for resource, amount in node.resources:
            per_node[product][resource].append(amount)
    parts = []
    for product in sorted(count)[:MAX_LISTED_PRODUCTS]:
        facts = []
        known_memory = sorted(m for m in memory[product] if m is not None)
        if known_memory:
            facts.append(_span(known_memory, " MiB"))
        offers = per_node[product]
        gpus = offers.get(GPU_RESOURCE)
        facts.append(f"{_span(sorted(gpus), '')} per node" if gpus else "no nvidia.com/gpu")
        for resource in sorted(r for r in offers if r != GPU_RESOURCE):
            profile = resource.removeprefix(MIG_RESOURCE_PREFIX)
            facts.append(f"MIG {profile}: {_span(sorted(offers[resource]), '')} per node")
        facts.append(f"{count[product]} {'node' if count[product] == 1 else 'nodes'}")
        if excluded[product]:
            facts.append(f"{excluded[product]} excluded by SwarmOps GPU health")
        parts.append(f"{product} ({', '.join(facts)})")
    more = len(count) - MAX_LISTED_PRODUCTS
    listed = ", ".join(parts) + (f", and {more} more products" if more > 0 else "")
    return f"GPU products on nodes: {listed}"


def _span(values: Sequence[int], unit: str) -> str:
    low, high = min(values), max(values)
    return f"{high}{unit}" if low == high else f"{low}-{high}{unit}"


GPU_REQUEST_SATISFIABLE: Final = "GPURequestSatisfiable"


@dataclass(frozen=True, slots=True)
class FitEvent:
    """An Event to post about a pool's GPU verdict."""

    reason: str
    message: str
    warning: bool


def fit_event(previous: Sequence[Condition], current: Sequence[Condition]) -> FitEvent | None:
    """The Event a change of the GPU verdict deserves, from the conditions before and after.

    Derived from the pool's stored status rather than from memory, so the Event is posted
    once per change, also across operator restarts, and not on every reconcile.
    """
    before, after = _verdict(previous), _verdict(current)
    if after is not None and after != before:
        return FitEvent(UNSATISFIABLE_GPU_REQUEST, after, warning=True)
    if before is not None and after is None:
        return FitEvent(
            GPU_REQUEST_SATISFIABLE, "a GPU node can now host the pool's pods", warning=False
        )
    return None


def _verdict(conditions: Sequence[Condition]) -> str | None:
    degraded = find_condition(conditions, ConditionType.DEGRADED)
    if (
        degraded is not None
        and degraded.status == ConditionStatus.TRUE
        and degraded.reason == UNSATISFIABLE_GPU_REQUEST
    ):
        return degraded.message
    return None
