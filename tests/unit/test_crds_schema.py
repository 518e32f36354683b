"""The generated schemas are structural, fully described and bounded: what the apiserver
demands of a CRD, what `kubectl explain` shows, and what keeps CEL cost estimates small."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from swarmops.api.crdgen import crd_manifest, openapi_schema
from swarmops.api.registry import KINDS, KindInfo

#: Short names and resource names the built-in kinds of Kubernetes 1.36 use.
BUILT_IN_SHORT_NAMES = frozenset(
    [
        "cj",
        "cm",
        "crd",
        "crds",
        "cs",
        "csr",
        "deploy",
        "ds",
        "ep",
        "ev",
        "hpa",
        "ing",
        "ip",
        "limits",
        "netpol",
        "no",
        "ns",
        "pc",
        "pdb",
        "po",
        "pv",
        "pvc",
        "quota",
        "rc",
        "rs",
        "sa",
        "sc",
        "sts",
        "svc",
        "vac",
    ]
)
BUILT_IN_RESOURCES = frozenset(
    [
        "pods",
        "services",
        "nodes",
        "namespaces",
        "deployments",
        "statefulsets",
        "daemonsets",
        "replicasets",
        "jobs",
        "cronjobs",
        "configmaps",
        "secrets",
        "events",
        "endpoints",
        "ingresses",
        "leases",
        "roles",
    ]
)

#: Keys that never belong in a structural schema (and are not emitted by the generator).
FORBIDDEN_KEYS = frozenset(
    {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "const", "title", "uniqueItems"}
)


def walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below ``node`` with a readable path: ``.name`` for properties,
    ``[*]`` for list items, ``{*}`` for map values."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[*]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{*}}")


def all_keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from all_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from all_keys(item)


def spec_and_status_nodes(info: KindInfo) -> Iterator[tuple[str, dict[str, Any]]]:
    schema = openapi_schema(info)
    for part in ("spec", "status"):
        yield from walk(schema["properties"][part], f"{info.kind}.{part}")


def resolve(info: KindInfo, json_path: str) -> dict[str, Any]:
    """The schema node a simple JSONPath (``.spec.replicas``) points at."""
    node = openapi_schema(info)
    for name in json_path.strip(".").split("."):
        node = node["properties"][name]
    return node


EVERY_NODE = [(path, node) for info in KINDS for path, node in spec_and_status_nodes(info)]
IDS = [path for path, _ in EVERY_NODE]


@pytest.mark.parametrize("info", KINDS, ids=lambda info: info.kind)
def test_no_forbidden_keyword_anywhere(info: KindInfo) -> None:
    used = set(all_keys(crd_manifest(info)["spec"]["versions"][0]["schema"]))
    # "title" could legitimately be a property name one day; it is checked per node below.
    assert not (used - {"title"}) & FORBIDDEN_KEYS


@pytest.mark.parametrize(("path", "node"), EVERY_NODE, ids=IDS)
def test_every_node_is_structural_described_and_bounded(path: str, node: dict[str, Any]) -> None:
    assert not FORBIDDEN_KEYS & node.keys()
    is_map_value = path.endswith("{*}")
    is_scalar_item = path.endswith("[*]") and node.get("type") != "object"
    if not (is_map_value or is_scalar_item):
        # What `kubectl explain` prints for the field (or for the objects of a list).
        assert node.get("description", "").strip(), f"{path} has no description"
    if node.get("x-kubernetes-int-or-string"):
        assert "type" not in node
        assert "maxLength" in node, "an int-or-string in a CEL rule needs a bound"
        return
    assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}
    if node["type"] == "array":
        assert "maxItems" in node, f"{path}: unbounded list"
        assert isinstance(node.get("items"), dict)
    if (
        node["type"] == "string"
        and "enum" not in node
        and node.get("format") != "date-time"
        and not is_map_value  # label and annotation values; no rule reads them
    ):
        assert "maxLength" in node, f"{path}: unbounded string"
    if node["type"] == "object" and isinstance(node.get("additionalProperties"), dict):
        assert "maxProperties" in node, f"{path}: unbounded map"
        assert "properties" not in node
    if "default" in node:
        assert node["default"] is not None
    if node.get("x-kubernetes-preserve-unknown-fields"):
        assert node["type"] == "object" and node.get("properties"), (
            f"{path}: free-form objects still declare the fields the operator relies on"
        )


@pytest.mark.parametrize(("path", "node"), EVERY_NODE, ids=IDS)
def test_list_maps_are_keyed_by_required_scalars(path: str, node: dict[str, Any]) -> None:
    if node.get("x-kubernetes-list-type") != "map":
        return
    items = node["items"]
    keys = node["x-kubernetes-list-map-keys"]
    for key in keys:
        assert key in items.get("required", []) or "default" in items["properties"][key]
        assert items["properties"][key]["type"] in {"string", "integer"}


def test_free_form_fields_are_only_the_pod_template_internals() -> None:
    free_form = sorted(
        path for path, node in EVERY_NODE if node.get("x-kubernetes-preserve-unknown-fields")
    )
    assert free_form == [
        "AgentPool.spec.template.spec",
        "AgentPool.spec.template.spec.containers[*]",
        "Swarm.spec.pools[*].spec.template.spec",
        "Swarm.spec.pools[*].spec.template.spec.containers[*]",
    ]


@pytest.mark.parametrize(("path", "node"), EVERY_NODE, ids=IDS)
def test_cel_rules_carry_messages(path: str, node: dict[str, Any]) -> None:
    for rule in node.get("x-kubernetes-validations", []):
        assert rule["rule"].strip()
        assert len(rule["message"]) >= 20, f"{path}: {rule['message']!r} explains too little"
        assert set(rule) <= {"rule", "message", "fieldPath", "reason", "optionalOldSelf"}


@pytest.mark.parametrize("info", KINDS, ids=lambda info: info.kind)
def test_status_follows_kubernetes_conventions(info: KindInfo) -> None:
    status = openapi_schema(info)["properties"]["status"]
    assert "default" not in status, "status appears only once the operator writes it"
    assert status["properties"]["observedGeneration"]["type"] == "integer"
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    condition = conditions["items"]
    assert set(condition["required"]) == {"type", "status", "lastTransitionTime", "reason"}
    assert condition["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert condition["properties"]["lastTransitionTime"]["format"] == "date-time"


@pytest.mark.parametrize("info", KINDS, ids=lambda info: info.kind)
def test_names_subresources_and_columns(info: KindInfo) -> None:
    crd = crd_manifest(info)
    names = crd["spec"]["names"]
    assert names["categories"] == ["swarmops"]
    assert not set(names["shortNames"]) & (BUILT_IN_SHORT_NAMES | BUILT_IN_RESOURCES)
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    for column in version["additionalPrinterColumns"]:
        path = column["jsonPath"]
        if path.startswith((".spec.", ".status.")) and "[" not in path:
            assert resolve(info, path)["type"] == column["type"], path
    for selectable in version.get("selectableFields", []):
        assert resolve(info, selectable["jsonPath"])["type"] in {"string", "integer", "boolean"}


def test_short_names_are_unique_across_kinds() -> None:
    short_names = [name for info in KINDS for name in info.short_names]
    assert len(short_names) == len(set(short_names))


def test_agent_pool_scale_subresource_points_at_real_fields() -> None:
    info = next(info for info in KINDS if info.kind == "AgentPool")
    scale = crd_manifest(info)["spec"]["versions"][0]["subresources"]["scale"]
    assert scale == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert resolve(info, ".spec.replicas")["type"] == "integer"
    assert resolve(info, ".status.replicas")["type"] == "integer"
    assert resolve(info, ".status.selector")["type"] == "string"


def test_agent_pool_contract_the_operator_codes_against() -> None:
    info = next(info for info in KINDS if info.kind == "AgentPool")
    replicas = resolve(info, ".spec.replicas")
    assert (replicas["default"], replicas["minimum"]) == (1, 0)
    assert resolve(info, ".spec.template.spec")["required"] == ["containers"]
    warm_size = resolve(info, ".spec.warmPool.size")
    assert (warm_size["default"], warm_size["minimum"]) == (0, 0)
    assert resolve(info, ".spec.capabilities")["items"]["type"] == "string"
    status = resolve(info, ".status")["properties"]
    for field in (
        "replicas",
        "readyReplicas",
        "warm",
        "warmReady",
        "claimed",
        "unschedulable",
        "currentRevision",
        "selector",
        "observedGeneration",
        "conditions",
    ):
        assert field in status, field


def test_metadata_restricts_only_the_name() -> None:
    for info in KINDS:
        metadata = openapi_schema(info)["properties"]["metadata"]
        assert metadata == {
            "type": "object",
            "properties": {"name": metadata["properties"]["name"]},
        }
        assert metadata["properties"]["name"]["maxLength"] == info.name_max_length
