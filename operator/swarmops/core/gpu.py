"""GPU scheduling of agent pods: what `AgentPool.spec.gpu` adds to the pod template.

The keys NVIDIA's components put on GPU nodes (GPU Feature Discovery labels, the
device plugin's resources, the GPU taint) and the keys SwarmOps itself owns on
nodes (health label, taints) are defined here, once: the pod builder, the
feasibility check (`core/gpu_fit.py`) and the future GPU node agent all use them.

`gpu_pod_template` merges the GPU needs into the user's template:

* resources: `nvidia.com/gpu: N` (or `nvidia.com/mig-<profile>: N`) as both request
  and limit (extended resources must have them equal) on the first container that
  already names that resource, else on the first container; every other resource the
  user set is kept;
* required node affinity on GFD labels, ANDed with the user's: our matchExpressions
  are added to each of the user's nodeSelectorTerms (terms are ORed, expressions in a
  term ANDed, so this is the only merge that keeps every alternative of the user and
  still forces ours onto all of them); with no user terms there is one term, ours;
* a preferred node affinity away from nodes SwarmOps marked WARN;
* a toleration of the GPU taint (`nvidia.com/gpu`, NoSchedule, Exists); the
  SwarmOps-owned taints are never tolerated, and the health label is also required
  to be healthy (NotIn), so even a user's blanket `operator: Exists` toleration does
  not put agents on a node SwarmOps has excluded;
The spread of the pool's pods over nodes is not GPU-specific: every pool's pods get it
(`core/spread.py`), merged after this in `core/pool.desired_template`.

All of it lands in the template before it is hashed, so a change of `spec.gpu` is a
new revision like any other template change.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from swarmops.api.agentpool import GpuRequirements

# --- Keys owned by NVIDIA's components and Kubernetes ---------------------------------------

#: The device plugin's resource for whole GPUs.
GPU_RESOURCE: Final = "nvidia.com/gpu"
#: The device plugin's MIG resources (mixed strategy): nvidia.com/mig-1g.10gb, ...
MIG_RESOURCE_PREFIX: Final = "nvidia.com/mig-"
#: GPU Feature Discovery labels.
GPU_PRESENT_LABEL: Final = "nvidia.com/gpu.present"
GPU_PRODUCT_LABEL: Final = "nvidia.com/gpu.product"
GPU_MEMORY_LABEL: Final = "nvidia.com/gpu.memory"  # MiB per GPU
#: GPU nodes as the operator watches them (server-side label selector).
GPU_NODE_SELECTOR: Final = f"{GPU_PRESENT_LABEL}=true"
#: The taint GPU node pools carry so that only pods asking for GPUs land there.
GPU_TAINT_KEY: Final = "nvidia.com/gpu"

# --- Keys owned by SwarmOps on nodes (set by the operator) ------------------------------------


class GpuHealth(enum.StrEnum):
    """A node's GPU health, as SwarmOps classifies it (issue 7; the node agent's levels)."""

    OK = "ok"
    UNMONITORED = "unmonitored"  # checks cannot run here: never treated as unhealthy
    WARN = "warn"  # an Event and a metric; new agents prefer other nodes
    DEGRADED = "degraded"  # no new agents; running ones finish
    CRITICAL = "critical"  # no new agents; running ones are evicted
    UNKNOWN = "unknown"  # the agent's heartbeat is stale or NVML fails (after a grace period)


#: Node label with the node's `GpuHealth` as the operator acts on it. The operator (not
#: the node agent) sets it together with its taints, after its circuit breaker, dry-run
#: mode and UNKNOWN grace period had their say, so label and taints always agree.
#: Absent means not classified (yet): schedulable.
GPU_HEALTH_LABEL: Final = "swarmops.dev/gpu-health"
#: Health values that keep new agent pods off a node (required node affinity, NotIn).
EXCLUDED_HEALTH: Final = (GpuHealth.DEGRADED, GpuHealth.CRITICAL, GpuHealth.UNKNOWN)
#: Health values new agent pods avoid when they can (preferred node affinity).
AVOIDED_HEALTH: Final = (GpuHealth.WARN,)
AVOID_WARN_WEIGHT: Final = 100

#: Taints SwarmOps puts on GPU nodes, effect NoSchedule (the operator evicts through the
#: Eviction API, which respects PDBs, rather than with NoExecute). Agent pods never
#: tolerate them; the operator only ever removes these keys, never anybody else's.
UNHEALTHY_TAINT: Final = "swarmops.dev/gpu-unhealthy"  # CRITICAL
DEGRADED_TAINT: Final = "swarmops.dev/gpu-degraded"  # DEGRADED
UNKNOWN_TAINT: Final = "swarmops.dev/gpu-unknown"  # UNKNOWN past its grace period
SWARMOPS_GPU_TAINTS: Final = frozenset({UNHEALTHY_TAINT, DEGRADED_TAINT, UNKNOWN_TAINT})
#: Effects under which a taint keeps a pod that does not tolerate it off the node.
BLOCKING_TAINT_EFFECTS: Final = frozenset({"NoSchedule", "NoExecute"})


# --- The request ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuRequest:
    """What one pod asks for, normalised from `spec.gpu` (None there or count 0: no request)."""

    count: int
    products: tuple[str, ...] = ()  # sorted; empty: any product
    min_memory_mib: int | None = None
    mig_profile: str | None = None

    @property
    def resource(self) -> str:
        return f"{MIG_RESOURCE_PREFIX}{self.mig_profile}" if self.mig_profile else GPU_RESOURCE

    @classmethod
    def of(cls, gpu: GpuRequirements | None) -> GpuRequest | None:
        if gpu is None or gpu.count < 1:
            return None
        return cls(
            count=gpu.count,
            products=tuple(sorted(set(gpu.products))),
            min_memory_mib=gpu.min_memory_mib,
            mig_profile=gpu.mig_profile,
        )


def required_expressions(request: GpuRequest) -> list[dict[str, Any]]:
    """Node selector requirements every node of the pod must meet."""
    expressions: list[dict[str, Any]] = []
    if request.products:
        expressions.append(
            {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": list(request.products)}
        )
    if request.min_memory_mib is not None:
        # Gt is strict and takes an integer: "at least N" is "more than N-1".
        expressions.append(
            {
                "key": GPU_MEMORY_LABEL,
                "operator": "Gt",
                "values": [str(request.min_memory_mib - 1)],
            }
        )
    expressions.append(
        {
            "key": GPU_HEALTH_LABEL,
            "operator": "NotIn",
            "values": [str(health) for health in EXCLUDED_HEALTH],
        }
    )
    return expressions


def preferred_term() -> dict[str, Any]:
    return {
        "weight": AVOID_WARN_WEIGHT,
        "preference": {
            "matchExpressions": [
                {
                    "key": GPU_HEALTH_LABEL,
                    "operator": "NotIn",
                    "values": [str(health) for health in AVOIDED_HEALTH],
                }
            ]
        },
    }


def gpu_toleration() -> dict[str, Any]:
    return {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}


# --- Merging into the user's template ---------------------------------------------------------


def gpu_pod_template(template: Mapping[str, Any], gpu: GpuRequirements | None) -> dict[str, Any]:
    """`template` with the GPU needs of `gpu` merged in; the input is not changed.

    Without a GPU request (no `gpu`, or count 0) the template comes back as it was, so
    pools without GPUs keep their revision.
    """
    result = copy.deepcopy(dict(template))
    request = GpuRequest.of(gpu)
    if request is None:
        return result
    spec: dict[str, Any] = result.setdefault("spec", {})
    spec["containers"] = _with_gpu_resources(spec.get("containers") or [], request)
    spec["affinity"] = _with_affinity(spec.get("affinity") or {}, request)
    spec["tolerations"] = _appended(spec.get("tolerations") or [], [gpu_toleration()])
    return result


def _with_gpu_resources(
    containers: Sequence[Mapping[str, Any]], request: GpuRequest
) -> list[dict[str, Any]]:
    result = [dict(container) for container in containers]
    if not result:
        return result
    resource = request.resource
    target = next(
        (
            index
            for index, container in enumerate(result)
            if any(
                resource in ((container.get("resources") or {}).get(part) or {})
                for part in ("limits", "requests")
            )
        ),
        0,
    )
    container = result[target]
    resources = dict(container.get("resources") or {})
    for part in ("limits", "requests"):
        resources[part] = {**(resources.get(part) or {}), resource: str(request.count)}
    container["resources"] = resources
    return result


def _with_affinity(affinity: Mapping[str, Any], request: GpuRequest) -> dict[str, Any]:
    result = dict(affinity)
    node_affinity = dict(result.get("nodeAffinity") or {})
    required_key = "requiredDuringSchedulingIgnoredDuringExecution"
    preferred_key = "preferredDuringSchedulingIgnoredDuringExecution"
    required = dict(node_affinity.get(required_key) or {})
    ours = required_expressions(request)
    terms = required.get("nodeSelectorTerms") or []
    if terms:
        required["nodeSelectorTerms"] = [_and_term(term, ours) for term in terms]
    else:
        required["nodeSelectorTerms"] = [{"matchExpressions": ours}]
    node_affinity[required_key] = required
    node_affinity[preferred_key] = _appended(
        node_affinity.get(preferred_key) or [], [preferred_term()]
    )
    result["nodeAffinity"] = node_affinity
    return result


def _and_term(term: Mapping[str, Any], ours: Sequence[dict[str, Any]]) -> dict[str, Any]:
    result = dict(term)
    if not term.get("matchExpressions") and not term.get("matchFields"):
        # An empty term matches no node at all; adding ours would make it match some.
        return result
    result["matchExpressions"] = _appended(term.get("matchExpressions") or [], ours)
    return result


def _appended(existing: Sequence[Any], additions: Sequence[Any]) -> list[Any]:
    """`existing` plus those `additions` it does not hold yet (so the merge is idempotent)."""
    result = list(existing)
    for item in additions:
        if item not in result:
            result.append(item)
    return result
