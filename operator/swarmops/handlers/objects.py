"""What every controller does with objects of its own kind, done one way for all four:
parse the body at the edge, patch the status subresource, name the object in Events.

A body the apiserver accepted may still fail the models (a rule only pydantic checks,
a field from a newer CRD): it becomes an `InvalidObject` that says what is wrong, which
its controller reports on the object (a condition and an Event) and never reconciles,
while every other object is served as usual."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from swarmops.api.common import API_VERSION, CustomResource
from swarmops.kube.client import KubeClient
from swarmops.kube.errors import NotFound
from swarmops.kube.events import ObjectRef
from swarmops.kube.resources import Resource

ResourceT = TypeVar("ResourceT", bound=CustomResource)


@dataclass(frozen=True)
class InvalidObject:
    """A body that does not parse: reported, never reconciled."""

    namespace: str
    name: str
    uid: str
    generation: int
    message: str


def parse_body(model: type[ResourceT], body: Mapping[str, Any]) -> ResourceT | InvalidObject:
    try:
        return model.from_body(without_managed_fields(body))
    except ValidationError as error:
        metadata = body.get("metadata") or {}
        return InvalidObject(
            namespace=str(metadata.get("namespace") or ""),
            name=str(metadata.get("name") or ""),
            uid=str(metadata.get("uid") or ""),
            generation=int(metadata.get("generation") or 0),
            message=one_line(error),
        )


def one_line(error: ValidationError) -> str:
    """The first problem, where it is, and how many more there are."""
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def without_managed_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body less metadata.managedFields: nothing reads them, and copying them out of
    kopf's views was a third of parsing a claim, on every claim event (py-spy)."""
    metadata = body.get("metadata") or {}
    return {**body, "metadata": {k: v for k, v in metadata.items() if k != "managedFields"}}


def object_ref(resource: CustomResource) -> ObjectRef:
    """The object as the subject of an Event."""
    return ObjectRef(
        API_VERSION,
        resource.KIND,
        resource.metadata.namespace or "",
        resource.metadata.name,
        resource.metadata.uid or "",
    )


async def patch_status(
    client: KubeClient, kind: Resource, resource: CustomResource, wire: Mapping[str, Any]
) -> bool:
    """Write `wire` as the object's status; False when the object is gone (deleted
    meanwhile: nothing left to report on)."""
    try:
        await client.patch(
            kind,
            resource.metadata.name,
            {"status": dict(wire)},
            namespace=resource.metadata.namespace,
            subresource="status",
        )
    except NotFound:
        return False
    return True
