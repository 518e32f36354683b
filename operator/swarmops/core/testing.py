"""Builders of pools and observed pods, for tests of the core and of code built on it."""

from __future__ import annotations

import datetime
from typing import Any

from swarmops.api import AgentClaim, AgentPool
from swarmops.core.pods import ObservedPod, PodState

POOL_UID = "uid-pool"
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def make_pool(
    replicas: int = 2,
    warm: int = 0,
    *,
    name: str = "agents",
    namespace: str = "team",
    uid: str = POOL_UID,
    generation: int = 1,
    image: str = "agent:1",
    status: dict[str, Any] | None = None,
) -> AgentPool:
    body: dict[str, Any] = {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "generation": generation},
        "spec": {
            "replicas": replicas,
            "warmPool": {"size": warm},
            "template": {
                "metadata": {"labels": {"app": "agent"}, "annotations": {"note": "hi"}},
                "spec": {
                    "containers": [{"name": "agent", "image": image, "args": ["--serve"]}],
                    "terminationGracePeriodSeconds": 5,
                },
            },
        },
    }
    if status is not None:
        body["status"] = status
    return AgentPool.from_body(body)


def make_pod(
    name: str,
    state: PodState | None,
    *,
    ready: bool = True,
    pool: str = "agents",
    owner: str | None = POOL_UID,
    revision: str | None = None,
    age: int = 0,
    node: str | None = "node-a",
    terminating: bool = False,
    phase: str | None = None,
    unschedulable: str | None = None,
    resource_version: str = "1",
) -> ObservedPod:
    return ObservedPod(
        name=name,
        namespace="team",
        uid=f"uid-{name}",
        resource_version=resource_version,
        pool=pool,
        state=state,
        revision=revision,
        controller_uid=owner,
        created=T0 - datetime.timedelta(seconds=age),
        terminating=terminating,
        phase=phase or ("Running" if ready else "Pending"),
        ready=ready,
        node_name=node,
        unschedulable=unschedulable,
    )


CLAIM_UID = "uid-claim"


def make_claim(
    name: str = "session",
    *,
    uid: str = CLAIM_UID,
    pool: str = "agents",
    namespace: str = "team",
    capabilities: tuple[str, ...] = (),
    when_no_warm_pod: str = "ColdStart",
    bind_timeout: int = 300,
    ttl: int | None = None,
    shutdown_policy: str = "Delete",
    created: datetime.datetime = T0,
    finalizers: tuple[str, ...] = (),
    deleting: bool = False,
    status: dict[str, Any] | None = None,
) -> AgentClaim:
    lifetime: dict[str, Any] = {"shutdownPolicy": shutdown_policy}
    if ttl is not None:
        lifetime["ttlSecondsAfterBound"] = ttl
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "generation": 1,
        "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finalizers": list(finalizers),
    }
    if deleting:
        metadata["deletionTimestamp"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    body: dict[str, Any] = {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "AgentClaim",
        "metadata": metadata,
        "spec": {
            "poolRef": {"name": pool},
            "capabilities": list(capabilities),
            "whenNoWarmPod": when_no_warm_pod,
            "bindTimeoutSeconds": bind_timeout,
            "lifetime": lifetime,
        },
    }
    if status is not None:
        body["status"] = status
    return AgentClaim.from_body(body)
