"""The async REST client against the real apiserver: every verb and the typed errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from swarmops.kube import (
    AGENTPOOLS,
    PODS,
    AlreadyExists,
    Conflict,
    Credentials,
    Invalid,
    KubeClient,
    NotFound,
    PatchType,
    Propagation,
    load_connection_info,
)
from swarmops.testbed.cluster import TestBed

T = TypeVar("T")


def run_with_client(testbed: TestBed, scenario: Callable[[KubeClient], Awaitable[T]]) -> T:
    credentials = Credentials(lambda: load_connection_info(testbed.kubeconfig, None, {}))

    async def main() -> T:
        async with KubeClient(credentials) as client:
            return await scenario(client)

    return asyncio.run(main())


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeSelector": {"swarmops.dev/node-kind": "cpu"},
            "containers": [{"name": "c", "image": "example/agent:1"}],
        },
    }


@pytest.mark.e2e
def test_create_get_list_patch_delete(testbed: TestBed, namespace: str) -> None:
    async def scenario(client: KubeClient) -> None:
        created = await client.create(PODS, pod("one", role="a"), namespace)
        await client.create(PODS, pod("two", role="b"), namespace)
        assert created["metadata"]["uid"]
        fetched = await client.get(PODS, "one", namespace)
        assert fetched["metadata"]["uid"] == created["metadata"]["uid"]

        everything = await client.list(PODS, namespace, page_size=1)  # follows `continue`
        assert sorted(p["metadata"]["name"] for p in everything) == ["one", "two"]
        by_label = await client.list(PODS, namespace, label_selector="role=b")
        assert [p["metadata"]["name"] for p in by_label] == ["two"]
        by_field = await client.list(PODS, namespace, field_selector="metadata.name=one")
        assert [p["metadata"]["name"] for p in by_field] == ["one"]

        merged = await client.patch(
            PODS, "one", {"metadata": {"labels": {"extra": "x"}}}, namespace=namespace
        )
        assert merged["metadata"]["labels"] == {"role": "a", "extra": "x"}
        strategic = await client.patch(
            PODS,
            "one",
            {"spec": {"containers": [{"name": "c", "image": "example/agent:2"}]}},
            namespace=namespace,
            patch_type=PatchType.STRATEGIC,
        )
        assert strategic["spec"]["containers"][0]["image"] == "example/agent:2"
        json_patched = await client.patch(
            PODS,
            "one",
            [
                {"op": "test", "path": "/metadata/labels/role", "value": "a"},
                {"op": "replace", "path": "/metadata/labels/role", "value": "c"},
            ],
            namespace=namespace,
            patch_type=PatchType.JSON,
        )
        assert json_patched["metadata"]["labels"]["role"] == "c"
        status = await client.patch(
            PODS,
            "one",
            {"status": {"conditions": [{"type": "swarmops.dev/Test", "status": "True"}]}},
            namespace=namespace,
            subresource="status",
        )
        assert any(c["type"] == "swarmops.dev/Test" for c in status["status"]["conditions"])

        await client.delete(
            PODS, "two", namespace, grace_period_seconds=0, propagation=Propagation.BACKGROUND
        )
        with pytest.raises(NotFound):
            for _ in range(100):
                await client.get(PODS, "two", namespace)
                await asyncio.sleep(0.1)

    run_with_client(testbed, scenario)


@pytest.mark.e2e
def test_typed_errors_carry_the_apiservers_message(testbed: TestBed, namespace: str) -> None:
    async def scenario(client: KubeClient) -> None:
        created = await client.create(PODS, pod("p"), namespace)
        uid, version = created["metadata"]["uid"], created["metadata"]["resourceVersion"]

        with pytest.raises(NotFound, match='pods "absent" not found'):
            await client.get(PODS, "absent", namespace)
        with pytest.raises(AlreadyExists, match='pods "p" already exists'):
            await client.create(PODS, pod("p"), namespace)
        with pytest.raises(Invalid) as invalid:
            await client.create(PODS, pod("Bad_Name"), namespace)
        assert "metadata.name" in invalid.value.message
        with pytest.raises(Invalid, match="rejected our request"):
            # A failed JSON-patch test op: how promotions detect a pod changed under them.
            await client.patch(
                PODS,
                "p",
                [{"op": "test", "path": "/metadata/labels", "value": {"nope": "x"}}],
                namespace=namespace,
                patch_type=PatchType.JSON,
            )
        # Stale resourceVersion: a merge patch with it is an optimistic lock.
        await client.patch(PODS, "p", {"metadata": {"labels": {"bump": "1"}}}, namespace=namespace)
        with pytest.raises(Conflict):
            await client.patch(
                PODS,
                "p",
                {"metadata": {"resourceVersion": version, "labels": {"late": "1"}}},
                namespace=namespace,
            )
        with pytest.raises(Conflict, match="ResourceVersion in the precondition"):
            await client.delete(PODS, "p", namespace, uid=uid, resource_version=version)
        with pytest.raises(Conflict, match="UID in the precondition"):
            await client.delete(PODS, "p", namespace, uid="not-the-uid")
        await client.delete(PODS, "p", namespace, uid=uid, grace_period_seconds=0)
        with pytest.raises(NotFound):
            await client.delete(PODS, "p", namespace)
        with pytest.raises(NotFound):
            await client.get(AGENTPOOLS, "absent", namespace)

    run_with_client(testbed, scenario)
