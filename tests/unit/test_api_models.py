"""The models parse what the apiserver returns, write camelCase without nulls, round-trip, and
refuse in Python what the CRD refuses at admission."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from swarmops.api import (
    KINDS,
    AgentClaim,
    AgentPool,
    AgentPoolSpec,
    ConditionType,
    RedisCluster,
    Swarm,
    kind_info,
    parse,
)
from swarmops.api.agentpool import CanaryStep, CanaryStrategy, GpuRequirements, Rollout, WarmPool
from swarmops.api.common import CustomResource
from swarmops.api.testing import STRATEGIES

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "manifests" / "examples"
INVALID = REPO_ROOT / "tests" / "e2e" / "invalid"

MINIMAL_POOL: dict[str, Any] = {
    "apiVersion": "swarmops.dev/v1alpha1",
    "kind": "AgentPool",
    "metadata": {"name": "coder"},
    "spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "agent:1"}]}}},
}


class FrozenBody(Mapping[str, Any]):
    """A read-only mapping like kopf's ``body``: not a dict."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


@pytest.mark.parametrize("kind", [info.kind for info in KINDS])
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_wire_round_trip(kind: str, data: st.DataObject) -> None:
    obj = data.draw(STRATEGIES[kind])
    wire = obj.to_wire()

    again = kind_info(kind).model.from_body(wire)

    assert again == obj
    assert again.to_wire() == wire
    assert None not in _values(wire), "null values are never written"
    assert not any("_" in key for key in _keys(wire["spec"])), "snake_case leaked to the wire"


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            # Label and annotation keys and redis.conf directives are data, not field names.
            if key not in {"labels", "annotations", "config", "nodeSelector"}:
                yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


def _values(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield item
            yield from _values(item)
    elif isinstance(value, list):
        for item in value:
            yield item
            yield from _values(item)


def test_defaults_of_a_minimal_pool() -> None:
    pool = AgentPool.from_body(MINIMAL_POOL)
    assert pool.spec.replicas == 1
    assert pool.spec.warm_pool.size == 0
    assert pool.spec.capabilities == []
    assert pool.spec.template.spec.containers[0].image == "agent:1"
    assert pool.status.replicas == 0
    assert pool.status.conditions == []


def test_server_populated_metadata_and_kopf_annotations_are_tolerated() -> None:
    body = {
        **MINIMAL_POOL,
        "metadata": {
            "name": "coder",
            "namespace": "team-a",
            "uid": "4c1e2f8e-0000-4000-8000-000000000000",
            "resourceVersion": "1234",
            "generation": 3,
            "creationTimestamp": "2026-01-02T03:04:05Z",
            "finalizers": ["kopf.zalando.org/KopfFinalizerMarker"],
            "annotations": {"kopf.zalando.org/last-handled-configuration": "{}"},
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            "selfLink": "/apis/swarmops.dev/v1alpha1/namespaces/team-a/agentpools/coder",
        },
        "status": {"observedGeneration": 2, "replicas": 1},
    }

    pool = AgentPool.from_body(FrozenBody(body))

    assert pool.metadata.generation == 3
    assert pool.metadata.resource_version == "1234"
    assert pool.metadata.finalizers == ["kopf.zalando.org/KopfFinalizerMarker"]
    assert pool.status.observed_generation == 2


def test_pod_template_keeps_fields_it_does_not_model() -> None:
    body = {**MINIMAL_POOL}
    body["spec"] = {
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "agent",
                        "image": "agent:1",
                        "env": [{"name": "A", "value": "1"}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
                    }
                ],
                "nodeSelector": {"disk": "ssd"},
                "terminationGracePeriodSeconds": 90,
            }
        }
    }

    wire = AgentPool.from_body(body).to_wire()["spec"]["template"]["spec"]

    assert wire["nodeSelector"] == {"disk": "ssd"}
    assert wire["terminationGracePeriodSeconds"] == 90
    assert wire["containers"][0]["readinessProbe"]["httpGet"]["port"] == 8080


def test_python_names_and_wire_names_are_both_accepted() -> None:
    by_name = WarmPool(size=2, max_size=4, refill_rate=10)
    by_alias = WarmPool.model_validate({"size": 2, "maxSize": 4, "refillRate": 10})
    assert by_name == by_alias
    assert by_name.to_wire()["maxSize"] == 4
    gpu = GpuRequirements.model_validate({"count": 1, "minMemoryMiB": 40000})
    assert gpu.to_wire()["minMemoryMiB"] == 40000


def test_parse_dispatches_on_kind() -> None:
    assert isinstance(parse(MINIMAL_POOL), AgentPool)
    with pytest.raises(KeyError, match="SwarmOps serves"):
        parse({**MINIMAL_POOL, "kind": "Deployment"})
    with pytest.raises(ValueError, match="no kind"):
        parse({"spec": {}})
    with pytest.raises(ValidationError):
        AgentClaim.from_body(MINIMAL_POOL)


def test_condition_lookup() -> None:
    pool = AgentPool.from_body(
        {
            **MINIMAL_POOL,
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "AllReady",
                        "lastTransitionTime": "2026-01-02T03:04:05Z",
                    }
                ]
            },
        }
    )
    ready = pool.status.condition(ConditionType.READY)
    assert ready is not None and ready.reason == "AllReady"
    assert pool.status.condition(ConditionType.DEGRADED) is None


# --- Python mirrors of the CEL rules -------------------------------------------------------


def test_canary_weights_must_increase() -> None:
    CanaryStrategy(
        steps=[
            CanaryStep(set_weight=10),
            CanaryStep.model_validate({"pause": {}}),
            CanaryStep(set_weight=50),
        ]
    )
    with pytest.raises(ValidationError, match="increase strictly"):
        CanaryStrategy(steps=[CanaryStep(set_weight=50), CanaryStep(set_weight=50)])


def test_rollout_must_be_able_to_progress() -> None:
    Rollout(max_surge=0, max_unavailable="10%")
    with pytest.raises(ValidationError, match="both be zero"):
        Rollout(max_surge="0%", max_unavailable=0)
    with pytest.raises(ValidationError, match="percentage"):
        Rollout(max_surge="101%")


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        (kind, path)
        for path in sorted(INVALID.glob("*.yaml"))
        for kind in [yaml.safe_load_all(path.read_text()).__next__()["kind"]]
    ],
    ids=lambda value: value.stem if isinstance(value, Path) else value,
)
def test_models_refuse_what_admission_refuses(kind: str, path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    model = kind_info(kind).model
    if len(documents) == 2:
        # Transition rules need the old object; the models can only check each side.
        for document in documents:
            model.from_body(document)
        return
    if "# model-accepts:" in text:
        model.from_body(documents[0])
        return
    with pytest.raises(ValidationError):
        model.from_body(documents[0])


def test_invalid_corpus_is_well_formed() -> None:
    kinds_covered = set()
    for path in sorted(INVALID.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
        assert 1 <= len(documents) <= 2, path.name
        assert "# expect:" in text, f"{path.name} says nothing about the expected message"
        kinds_covered.add(documents[0]["kind"])
    assert kinds_covered == {info.kind for info in KINDS}


# --- Examples and docs ---------------------------------------------------------------------


def _examples() -> list[Path]:
    return sorted(EXAMPLES.glob("*.yaml"))


def test_there_is_one_example_per_kind() -> None:
    kinds = [yaml.safe_load(path.read_text())["kind"] for path in _examples()]
    assert sorted(kinds) == sorted(info.kind for info in KINDS)


@pytest.mark.parametrize("path", _examples(), ids=lambda path: path.stem)
def test_examples_parse(path: Path) -> None:
    obj: CustomResource = parse(yaml.safe_load(path.read_text()))
    assert obj.metadata.name


@pytest.mark.parametrize("path", _examples(), ids=lambda path: path.stem)
def test_docs_show_each_example_verbatim(path: Path) -> None:
    docs = (REPO_ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert f"```yaml\n{path.read_text(encoding='utf-8')}```" in docs, (
        f"docs/api.md must carry manifests/examples/{path.name} verbatim"
    )


def test_example_swarm_and_cluster_are_complete_objects() -> None:
    swarm = Swarm.from_body(yaml.safe_load((EXAMPLES / "swarm.yaml").read_text()))
    assert [pool.name for pool in swarm.spec.pools] == ["planner", "workers", "reviewer"]
    assert swarm.spec.redis is not None and swarm.spec.redis.spec is not None
    cluster = RedisCluster.from_body(yaml.safe_load((EXAMPLES / "rediscluster.yaml").read_text()))
    assert cluster.spec.shards == 3
    spec = AgentPoolSpec.model_validate(
        yaml.safe_load((EXAMPLES / "agentpool.yaml").read_text())["spec"]
    )
    assert spec.rollout.canary is not None
