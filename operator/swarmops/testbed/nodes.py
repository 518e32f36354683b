"""Manifests of the test bed's simulated nodes: CPU nodes and GPU nodes that
advertise `nvidia.com/gpu` and the labels GPU Feature Discovery would set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# kwok manages exactly the nodes that carry this annotation.
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
TESTBED_NODE_LABEL = "swarmops.dev/testbed-node"
# The taint GPU node pools usually carry, so only pods that ask for GPUs land there.
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@dataclass(frozen=True)
class GPUProduct:
    """A GPU model as GPU Feature Discovery labels it."""

    product: str
    memory_mib: int
    count: int
    family: str


H100 = GPUProduct("NVIDIA-H100-80GB-HBM3", 81559, 8, "hopper")
A100 = GPUProduct("NVIDIA-A100-SXM4-40GB", 40960, 4, "ampere")
L4 = GPUProduct("NVIDIA-L4", 23034, 1, "ada-lovelace")
DEFAULT_GPU_PRODUCTS = (H100, A100)


@dataclass(frozen=True)
class NodeShape:
    cpu: str = "64"
    memory: str = "256Gi"
    # kwok pods cost nothing, so nodes may hold far more than a kubelet's 110.
    pods: str = "500"


def cpu_node(name: str, shape: NodeShape = NodeShape()) -> dict[str, Any]:
    return _node(name, {"swarmops.dev/node-kind": "cpu"}, [], _resources(shape, {}))


def gpu_node(name: str, gpu: GPUProduct, shape: NodeShape = NodeShape()) -> dict[str, Any]:
    labels = {
        "swarmops.dev/node-kind": "gpu",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": gpu.product,
        "nvidia.com/gpu.memory": str(gpu.memory_mib),
        "nvidia.com/gpu.count": str(gpu.count),
        "nvidia.com/gpu.family": gpu.family,
    }
    resources = _resources(shape, {"nvidia.com/gpu": str(gpu.count)})
    return _node(name, labels, [GPU_TAINT], resources)


def _resources(shape: NodeShape, extra: dict[str, str]) -> dict[str, str]:
    return {"cpu": shape.cpu, "memory": shape.memory, "pods": shape.pods, **extra}


def _node(
    name: str, labels: dict[str, str], taints: list[dict[str, str]], resources: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "kwok",
                "type": "kwok",
                TESTBED_NODE_LABEL: "kwok",
                **labels,
            },
        },
        "spec": {"taints": taints} if taints else {},
        "status": {"capacity": resources, "allocatable": resources},
    }
