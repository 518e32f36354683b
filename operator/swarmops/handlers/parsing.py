"""Custom resource bodies into models, at the edge, the same way for every controller.

A body the apiserver accepted may still fail the models (a rule only pydantic checks,
a field from a newer CRD): it becomes an `InvalidObject` that says what is wrong, which
its controller reports on the object (a condition and an Event) and never reconciles,
while every other object is served as usual."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from swarmops.api.common import CustomResource

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
