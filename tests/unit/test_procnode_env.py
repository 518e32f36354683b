"""A container's environment, built the way the kubelet builds it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmops.testbed.procnode.env import (
    ContainerConfigError,
    PodFields,
    container_env,
    field_value,
    parse_quantity,
    referenced_objects,
    static_env,
)
from swarmops.testbed.procnode.model import parse_pod


def pod_with(container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "redis-0",
            "namespace": "team",
            "uid": "uid-1",
            "labels": {"app": "redis"},
            "annotations": {"note": 'say "hi"'},
        },
        "spec": {
            "nodeName": "procnode-0",
            "containers": [{"name": "c", "image": "redis", **container}],
            **spec,
        },
    }


def env_of(container: dict[str, Any], objects: dict[Any, Any] | None = None) -> dict[str, str]:
    pod = parse_pod(pod_with(container))
    return container_env(
        pod.containers[0],
        PodFields(pod, "127.77.0.9", "127.77.0.1"),
        objects or {},
        {"KUBERNETES_SERVICE_HOST": "127.0.0.1"},
    )


def test_literal_values_expand_earlier_variables_only() -> None:
    env = env_of(
        {
            "env": [
                {"name": "A", "value": "a"},
                {"name": "B", "value": "$(A)-$(C)-$(KUBERNETES_SERVICE_HOST)"},
                {"name": "C", "value": "c"},
            ]
        }
    )
    assert env == {"A": "a", "B": "a-$(C)-127.0.0.1", "C": "c"}


def test_downward_api_fields() -> None:
    env = env_of(
        {
            "env": [
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            ]
        }
    )
    assert env == {
        "IP": "127.77.0.9",
        "NAME": "redis-0",
        "NS": "team",
        "UID": "uid-1",
        "NODE": "procnode-0",
        "HOST": "127.77.0.1",
        "APP": "redis",
    }


def test_labels_and_annotations_render_as_quoted_lines() -> None:
    pod = parse_pod(pod_with({}))
    fields = PodFields(pod, "ip", "host")
    assert field_value("metadata.annotations", fields) == 'note="say \\"hi\\""'


def test_unsupported_field_path_is_a_config_error() -> None:
    with pytest.raises(ContainerConfigError, match=r"spec\.bogus"):
        env_of({"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]})


def test_secret_and_config_map_keys() -> None:
    container = {
        "env": [
            {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "auth", "key": "password"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {
                "name": "OPT",
                "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}},
            },
        ]
    }
    assert referenced_objects(parse_pod(pod_with(container)).containers[0]) == {
        ("Secret", "auth"),
        ("ConfigMap", "cfg"),
        ("Secret", "nope"),
    }
    objects = {
        ("Secret", "auth"): {"password": "s3cret"},
        ("ConfigMap", "cfg"): {"mode": "fast"},
        ("Secret", "nope"): None,
    }
    assert env_of(container, objects) == {"PASS": "s3cret", "MODE": "fast"}


def test_missing_secret_or_key_is_a_config_error() -> None:
    container = {
        "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "auth", "key": "pw"}}}]
    }
    with pytest.raises(ContainerConfigError, match='secret "auth" not found'):
        env_of(container, {("Secret", "auth"): None})
    with pytest.raises(ContainerConfigError, match="couldn't find key pw"):
        env_of(container, {("Secret", "auth"): {"other": "x"}})


def test_env_from_with_prefix_then_env_overrides() -> None:
    container = {
        "envFrom": [
            {"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
            {"secretRef": {"name": "missing", "optional": True}},
        ],
        "env": [{"name": "CFG_MODE", "value": "override-$(CFG_MODE)"}],
    }
    objects = {("ConfigMap", "cfg"): {"MODE": "fast", "LEVEL": "3"}, ("Secret", "missing"): None}
    assert env_of(container, objects) == {"CFG_MODE": "override-fast", "CFG_LEVEL": "3"}


def test_resource_field_ref_rounds_up_and_defaults_to_node_allocatable() -> None:
    container = {
        "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}},
        "env": [
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {
                "name": "MEM_MI",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
            {"name": "REQ_CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
        ],
    }
    assert env_of(container) == {"CPU": "2", "MEM_MI": "1024", "REQ_CPU": "2"}
    unlimited = {
        "env": [{"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}]
    }
    assert env_of(unlimited) == {"CPU": "16"}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("500m", Decimal("0.5")),
        ("1Ki", 1024),
        ("2Gi", 2 * 2**30),
        ("1e3", 1000),
        ("1k", 1000),
    ],
)
def test_parse_quantity(text: str, value: Decimal | int) -> None:
    assert parse_quantity(text) == value


@given(st.integers(0, 10**6), st.sampled_from(["", "k", "M", "Ki", "Mi"]))
def test_parse_quantity_scales_integers(number: int, suffix: str) -> None:
    scale = {"": 1, "k": 1000, "M": 10**6, "Ki": 1024, "Mi": 2**20}[suffix]
    assert parse_quantity(f"{number}{suffix}") == number * scale


def test_static_env_keeps_only_literal_values() -> None:
    pod = parse_pod(
        pod_with(
            {
                "env": [
                    {"name": "A", "value": "1"},
                    {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                ]
            }
        )
    )
    assert static_env(pod.containers[0]) == {"A": "1"}
