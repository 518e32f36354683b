"""GPU nodes: a kopf index of the nodes GPU Feature Discovery labelled, for the pool reconcile.

Nodes are cluster-scoped, so kopf watches them cluster-wide even when the operator
serves only some namespaces; the watch is narrowed server-side to
`nvidia.com/gpu.present=true` (runtime.configure_kopf), so the operator never holds
the cluster's CPU nodes. Each node is parsed once into a small `GpuNode`.

A node event only requeues the pools that ask for GPUs, and only when the facts that
placement depends on changed (not on every status heartbeat).

kopf runs no resource handler before every index has listed its objects, and a
watch it may not list never lists: this index is registered only when the operator
may list and watch nodes (runtime.serve asks the apiserver first).
"""

from __future__ import annotations

from typing import Any

import kopf

from swarmops.core.gpu import GPU_PRESENT_LABEL
from swarmops.core.gpu_fit import GpuNode, observe_gpu_node
from swarmops.handlers.context import services_of

GPU_NODES_INDEX = "swarmops_gpu_nodes"
#: Every GPU node goes under this one key: the check looks at all of them at once.
ALL_GPU_NODES = "all"


async def index_gpu_nodes(body: kopf.Body, **_: Any) -> dict[str, GpuNode]:
    return {ALL_GPU_NODES: observe_gpu_node(body)}


async def on_gpu_node_event(
    event: kopf.RawEvent, body: kopf.Body, name: str, memo: Any, **_: Any
) -> None:
    node = None if event.get("type") == "DELETED" else observe_gpu_node(body)
    services_of(memo).pool_controller().gpu_node_changed(name, node)


def register(registry: kopf.OperatorRegistry) -> None:
    """Register the GPU node index and event handler in `registry`."""
    gpu_nodes = {GPU_PRESENT_LABEL: "true"}
    kopf.index("v1", "nodes", id=GPU_NODES_INDEX, labels=gpu_nodes, registry=registry)(
        index_gpu_nodes
    )
    kopf.on.event("v1", "nodes", labels=gpu_nodes, registry=registry)(on_gpu_node_event)
