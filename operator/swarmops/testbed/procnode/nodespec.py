"""The process node's Node object and Lease, as plain data (pure)."""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from swarmops.testbed.procnode.env import NODE_ALLOCATABLE
from swarmops.testbed.procnode.status import timestamp

NODE_KIND_LABEL = "swarmops.dev/testbed-node"
NODE_KIND = "process"
TAINT_KEY = "swarmops.dev/process-node"
TAINT = {"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40

# What a pod needs to land on the process node.
POD_PLACEMENT: Mapping[str, Any] = {
    "nodeSelector": {NODE_KIND_LABEL: NODE_KIND},
    "tolerations": [
        {"key": TAINT_KEY, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ],
}


def _architecture() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def node_labels(name: str) -> dict[str, str]:
    return {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": _architecture(),
        NODE_KIND_LABEL: NODE_KIND,
    }


def node_taints(existing: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Our taint, plus any other taint already there (the node lifecycle
    controller's, say), which is not ours to drop."""
    return [dict(t) for t in existing if t.get("key") != TAINT_KEY] + [dict(TAINT)]


def node_conditions(now: datetime, previous: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    stamp = timestamp(now)
    before = {str(c.get("type")): c for c in previous}
    wanted = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "sufficient PIDs available"),
        ("Ready", "True", "KubeletReady", "the process node is posting ready status"),
    ]
    conditions = []
    for kind, state, reason, message in wanted:
        old = before.get(kind)
        transition = stamp
        if old is not None and old.get("status") == state and old.get("lastTransitionTime"):
            transition = str(old["lastTransitionTime"])
        conditions.append(
            {
                "type": kind,
                "status": state,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": transition,
            }
        )
    return conditions


def node_status(
    name: str,
    host_ip: str,
    kubelet_version: str,
    now: datetime,
    previous_conditions: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    resources = dict(NODE_ALLOCATABLE)
    return {
        "capacity": resources,
        "allocatable": resources,
        "conditions": node_conditions(now, previous_conditions),
        "addresses": [
            {"type": "InternalIP", "address": host_ip},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": name,
            "systemUUID": name,
            "bootID": "",
            "kernelVersion": platform.release(),
            "osImage": "SwarmOps process node (local processes on loopback)",
            "containerRuntimeVersion": "procnode://1",
            "kubeletVersion": kubelet_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": _architecture(),
        },
    }


def node_manifest(name: str, host_ip: str, kubelet_version: str, now: datetime) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": node_labels(name),
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": node_taints(())},
        "status": node_status(name, host_ip, kubelet_version, now),
    }


def micro_time(now: datetime) -> str:
    """metav1.MicroTime, as a Lease's renewTime wants it."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_manifest(name: str, node_uid: str, now: datetime) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}
            ],
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": micro_time(now),
        },
    }
