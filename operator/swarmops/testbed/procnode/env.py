"""A container's environment, as the kubelet builds it, from already-fetched data.

Order of precedence (later wins): ``envFrom`` sources in order, then ``env`` in
order. An ``env`` value may use ``$(NAME)`` for any variable defined before it
(including those from ``envFrom``) and for the service variables; command and
args may use every variable of the final environment.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

from swarmops.testbed.procnode.expansion import expand
from swarmops.testbed.procnode.model import (
    Container,
    EnvFrom,
    FieldRef,
    KeyRef,
    Pod,
    ResourceFieldRef,
)

ObjectKind = Literal["ConfigMap", "Secret"]
ObjectKey = tuple[ObjectKind, str]
# A fetched ConfigMap or Secret as text values; None when it does not exist.
ObjectData = Mapping[str, str] | None

NODE_ALLOCATABLE: Mapping[str, str] = {
    "cpu": "16",
    "memory": "64Gi",
    "ephemeral-storage": "100Gi",
    "pods": "250",
}


class ContainerConfigError(Exception):
    """The container cannot start yet (kubelet: ``CreateContainerConfigError``),
    for example because a Secret it reads does not exist. Retried."""

    reason = "CreateContainerConfigError"


@dataclass(frozen=True)
class PodFields:
    """The pod's values the downward API can expose."""

    pod: Pod
    pod_ip: str
    host_ip: str


_FIELD_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['([^']*)'\]$")


def field_value(path: str, fields: PodFields) -> str:
    pod = fields.pod
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": pod.uid,
        "spec.nodeName": pod.node_name,
        "spec.serviceAccountName": pod.service_account_name,
        "status.hostIP": fields.host_ip,
        "status.hostIPs": fields.host_ip,
        "status.podIP": fields.pod_ip,
        "status.podIPs": fields.pod_ip,
    }
    if path in simple:
        return simple[path]
    if path in ("metadata.labels", "metadata.annotations"):
        values = pod.labels if path == "metadata.labels" else pod.annotations
        return "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted(values.items()))
    match = _FIELD_SUBSCRIPT.match(path)
    if match:
        values = pod.labels if match.group(1) == "labels" else pod.annotations
        return values.get(match.group(2), "")
    raise ContainerConfigError(f"unsupported fieldRef fieldPath {path!r}")


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes resource quantity (``500m``, ``1Gi``, ``2e3``) as a number."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise ValueError(f"not a quantity: {text!r}")
    number, suffix = match.groups()
    try:
        value = Decimal(number)
    except InvalidOperation as error:
        raise ValueError(f"not a quantity: {text!r}") from error
    if suffix in _BINARY:
        return value * _BINARY[suffix]
    if suffix in _DECIMAL:
        return value * _DECIMAL[suffix]
    raise ValueError(f"unknown quantity suffix in {text!r}")


def resource_value(ref: ResourceFieldRef, pod: Pod, container: Container) -> str:
    """``resourceFieldRef``: the request or limit, divided by the divisor and rounded
    up; a limit left unset is the node's allocatable amount."""
    target = container
    if ref.container:
        found = next(
            (c for c in (*pod.containers, *pod.init_containers) if c.name == ref.container), None
        )
        if found is None:
            raise ContainerConfigError(
                f"resourceFieldRef names unknown container {ref.container!r}"
            )
        target = found
    kind, _, resource = ref.resource.partition(".")
    if kind not in ("limits", "requests") or not resource:
        raise ContainerConfigError(f"unsupported resourceFieldRef resource {ref.resource!r}")
    amount = target.resources.get(kind, {}).get(resource)
    if amount is None and kind == "requests":
        amount = target.resources.get("limits", {}).get(resource, "0")
    if amount is None:
        amount = NODE_ALLOCATABLE.get(resource, "0")
    divisor = parse_quantity(ref.divisor or "1")
    if divisor <= 0:
        raise ContainerConfigError(f"resourceFieldRef divisor must be positive, got {ref.divisor}")
    return str(math.ceil(parse_quantity(amount) / divisor))


def referenced_objects(container: Container) -> set[ObjectKey]:
    """The ConfigMaps and Secrets a container's environment reads."""
    keys: set[ObjectKey] = {(source.kind, source.name) for source in container.env_from}
    for var in container.env:
        if isinstance(var.source, KeyRef):
            keys.add((var.source.kind, var.source.name))
    return keys


def _env_from(source: EnvFrom, objects: Mapping[ObjectKey, ObjectData]) -> dict[str, str]:
    data = objects.get((source.kind, source.name))
    if data is None:
        if source.optional:
            return {}
        raise ContainerConfigError(f'{source.kind.lower()} "{source.name}" not found')
    # Keys that cannot be variable names are skipped, as the kubelet does.
    return {source.prefix + k: v for k, v in data.items() if k and "=" not in source.prefix + k}


def _key_ref(ref: KeyRef, objects: Mapping[ObjectKey, ObjectData]) -> str | None:
    data = objects.get((ref.kind, ref.name))
    if data is None:
        if ref.optional:
            return None
        raise ContainerConfigError(f'{ref.kind.lower()} "{ref.name}" not found')
    if ref.key not in data:
        if ref.optional:
            return None
        raise ContainerConfigError(f"couldn't find key {ref.key} in {ref.kind} {ref.name}")
    return data[ref.key]


def container_env(
    container: Container,
    fields: PodFields,
    objects: Mapping[ObjectKey, ObjectData],
    service_env: Mapping[str, str],
) -> dict[str, str]:
    """The variables the container defines (not the node's base environment)."""
    env: dict[str, str] = {}
    for source in container.env_from:
        env.update(_env_from(source, objects))
    for var in container.env:
        value: str | None
        if var.source is None:
            defined = {**service_env, **env}
            value = expand(var.value or "", defined.get)
        elif isinstance(var.source, FieldRef):
            value = field_value(var.source.field_path, fields)
        elif isinstance(var.source, ResourceFieldRef):
            value = resource_value(var.source, fields.pod, container)
        else:
            value = _key_ref(var.source, objects)
        if value is not None:
            env[var.name] = value
    return env


def static_env(container: Container) -> dict[str, str]:
    """Variables with literal values only: what an exec probe's command may expand
    (the kubelet's ExpandContainerCommandOnlyStatic)."""
    return {var.name: var.value or "" for var in container.env if var.source is None}
