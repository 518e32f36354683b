"""GPU scheduling: what spec.gpu adds to the pod template, and how it merges with the user's."""

from __future__ import annotations

import copy
import datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from swarmops.api import AgentPool
from swarmops.api.agentpool import GpuRequirements
from swarmops.core.expectations import NONE
from swarmops.core.gpu import (
    GPU_HEALTH_LABEL,
    GPU_MEMORY_LABEL,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    GPU_TAINT_KEY,
    SWARMOPS_GPU_TAINTS,
    GpuRequest,
    gpu_pod_template,
    gpu_toleration,
    required_expressions,
)
from swarmops.core.pool import desired_template, plan_pool
from swarmops.core.revision import template_revision
from swarmops.core.spread import HOSTNAME_LABEL, with_hostname_spread
from swarmops.core.testing import T0, make_pool

REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"
H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-40GB"


def with_gpu(pool: AgentPool, **gpu: Any) -> AgentPool:
    body = pool.to_wire()
    body["spec"]["gpu"] = gpu
    return AgentPool.from_body(body)


def base_template(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "agent"}},
        "spec": {"containers": [{"name": "agent", "image": "agent:1"}], **spec},
    }


def gpu(**fields: Any) -> GpuRequirements:
    return GpuRequirements.model_validate(fields)


def required_terms(template: dict[str, Any]) -> list[dict[str, Any]]:
    terms: list[dict[str, Any]] = template["spec"]["affinity"]["nodeAffinity"][REQUIRED][
        "nodeSelectorTerms"
    ]
    return terms


# --- the request in pod form -------------------------------------------------------------------


def test_no_gpu_or_count_zero_leaves_the_template_as_it_was() -> None:
    template = base_template()
    assert gpu_pod_template(template, None) == template
    assert gpu_pod_template(template, gpu(count=0)) == template


def test_whole_gpus_with_product_and_memory() -> None:
    result = gpu_pod_template(
        base_template(), gpu(count=2, products=[H100, A100], minMemoryMiB=40960)
    )
    spec = result["spec"]
    assert spec["containers"][0]["resources"] == {
        "limits": {GPU_RESOURCE: "2"},
        "requests": {GPU_RESOURCE: "2"},
    }
    assert required_terms(result) == [
        {
            "matchExpressions": [
                {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": [A100, H100]},
                {"key": GPU_MEMORY_LABEL, "operator": "Gt", "values": ["40959"]},
                {
                    "key": GPU_HEALTH_LABEL,
                    "operator": "NotIn",
                    "values": ["degraded", "critical", "unknown"],
                },
            ]
        }
    ]
    assert spec["affinity"]["nodeAffinity"][PREFERRED] == [
        {
            "weight": 100,
            "preference": {
                "matchExpressions": [
                    {"key": GPU_HEALTH_LABEL, "operator": "NotIn", "values": ["warn"]}
                ]
            },
        }
    ]
    assert spec["tolerations"] == [
        {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
    ]
    # Spreading over nodes is every pool's (core/spread.py), not a GPU matter.
    assert "topologySpreadConstraints" not in spec


def test_a_mig_profile_requests_the_mig_resource_instead() -> None:
    result = gpu_pod_template(base_template(), gpu(count=3, migProfile="1g.10gb"))
    resources = result["spec"]["containers"][0]["resources"]
    assert resources == {
        "limits": {"nvidia.com/mig-1g.10gb": "3"},
        "requests": {"nvidia.com/mig-1g.10gb": "3"},
    }
    # Any product, any memory: only the health requirement is left.
    assert [e["key"] for e in required_terms(result)[0]["matchExpressions"]] == [GPU_HEALTH_LABEL]


def test_the_users_resources_tolerations_and_preferences_are_kept() -> None:
    user_toleration = {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    user_preference = {
        "weight": 5,
        "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
    }
    template = base_template(
        containers=[
            {"name": "sidecar", "image": "s:1"},
            {
                "name": "agent",
                "image": "a:1",
                "resources": {"limits": {"memory": "1Gi", GPU_RESOURCE: "7"}},
            },
        ],
        tolerations=[user_toleration],
        affinity={
            "nodeAffinity": {PREFERRED: [user_preference]},
            "podAntiAffinity": {"x": "kept"},
        },
        topologySpreadConstraints=[
            {"maxSkew": 2, "topologyKey": HOSTNAME_LABEL, "whenUnsatisfiable": "DoNotSchedule"}
        ],
    )
    result = gpu_pod_template(template, gpu(count=1))
    spec = result["spec"]
    # The container that already names the GPU resource gets the count; spec.gpu wins.
    assert "resources" not in spec["containers"][0]
    assert spec["containers"][1]["resources"] == {
        "limits": {"memory": "1Gi", GPU_RESOURCE: "1"},
        "requests": {GPU_RESOURCE: "1"},
    }
    assert spec["tolerations"] == [user_toleration, gpu_toleration()]
    assert spec["affinity"]["nodeAffinity"][PREFERRED][0] == user_preference
    assert spec["affinity"]["podAntiAffinity"] == {"x": "kept"}
    assert spec["topologySpreadConstraints"] == template["spec"]["topologySpreadConstraints"]


def test_our_requirements_are_added_to_each_of_the_users_terms() -> None:
    zone_a = {"key": "zone", "operator": "In", "values": ["a"]}
    by_field = {"key": "metadata.name", "operator": "In", "values": ["n1"]}
    template = base_template(
        affinity={
            "nodeAffinity": {
                REQUIRED: {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [zone_a]},
                        {"matchFields": [by_field]},
                        {},  # matches nothing, and must keep matching nothing
                    ]
                }
            }
        }
    )
    request = gpu(count=1, products=[H100])
    ours = required_expressions(GpuRequest.of(request))  # type: ignore[arg-type]
    terms = required_terms(gpu_pod_template(template, request))
    assert terms == [
        {"matchExpressions": [zone_a, *ours]},
        {"matchFields": [by_field], "matchExpressions": ours},
        {},
    ]


# --- properties --------------------------------------------------------------------------------

tokens = st.sampled_from([H100, A100, "NVIDIA-L4", "NVIDIA-B200"])
gpu_requirements = st.builds(
    lambda count, products, memory, mig: gpu(
        count=count,
        products=products,
        **({"minMemoryMiB": memory} if memory else {}),
        **({"migProfile": mig} if mig else {}),
    ),
    count=st.integers(1, 16),
    products=st.lists(tokens, max_size=3, unique=True),
    memory=st.none() | st.integers(1, 200_000),
    mig=st.none() | st.sampled_from(["1g.10gb", "3g.40gb", "7g.80gb"]),
)
expressions = st.lists(
    st.fixed_dictionaries(
        {
            "key": st.sampled_from(["zone", "rack", "team"]),
            "operator": st.sampled_from(["In", "NotIn"]),
            "values": st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=2),
        }
    ),
    max_size=2,
)
user_templates = st.builds(
    lambda terms, tolerations, limits, containers: base_template(
        containers=[
            {"name": f"c{i}", "image": "x:1", "resources": {"limits": limits}}
            for i in range(containers)
        ],
        tolerations=tolerations,
        affinity={
            "nodeAffinity": {REQUIRED: {"nodeSelectorTerms": terms}} if terms else {},
        },
    ),
    terms=st.lists(st.builds(lambda e: {"matchExpressions": e}, expressions), max_size=3),
    tolerations=st.lists(
        st.fixed_dictionaries({"key": st.sampled_from(["a", "b"]), "operator": st.just("Exists")}),
        max_size=2,
    ),
    limits=st.dictionaries(st.sampled_from(["cpu", "memory"]), st.sampled_from(["1", "2"])),
    containers=st.integers(1, 3),
)


@given(user_templates, gpu_requirements)
def test_the_merge_keeps_the_users_template_and_adds_ours(
    template: dict[str, Any], requirements: GpuRequirements
) -> None:
    before = copy.deepcopy(template)
    result = gpu_pod_template(template, requirements)
    assert template == before  # the input is not changed
    assert gpu_pod_template(result, requirements) == result  # idempotent
    request = GpuRequest.of(requirements)
    assert request is not None
    ours = required_expressions(request)
    node_affinity = before["spec"]["affinity"]["nodeAffinity"]
    user_terms = node_affinity.get(REQUIRED, {}).get("nodeSelectorTerms", [])
    terms = required_terms(result)
    if not user_terms:
        assert terms == [{"matchExpressions": ours}]
    assert len(terms) == max(1, len(user_terms))
    for term, user_term in zip(terms, user_terms, strict=False):
        if user_term["matchExpressions"]:
            wanted = [*user_term["matchExpressions"], *ours]
            assert all(e in term["matchExpressions"] for e in wanted)
        else:
            assert term == user_term  # an empty term matches nothing, before and after
    spec = result["spec"]
    assert all(t in spec["tolerations"] for t in before["spec"]["tolerations"])
    # Never a toleration of a taint SwarmOps owns.
    assert not any(t.get("key") in SWARMOPS_GPU_TAINTS for t in spec["tolerations"])
    holders = [
        c
        for c in spec["containers"]
        if request.resource in c.get("resources", {}).get("limits", {})
    ]
    assert len(holders) == 1
    assert holders[0]["resources"]["limits"][request.resource] == str(request.count)
    assert holders[0]["resources"]["requests"][request.resource] == str(request.count)
    for container, original in zip(spec["containers"], before["spec"]["containers"], strict=True):
        for name, value in original["resources"]["limits"].items():
            assert container["resources"]["limits"][name] == value


# --- in the pool's pods ------------------------------------------------------------------------


def test_the_gpu_request_is_part_of_the_revision() -> None:
    plain = make_pool()
    one = with_gpu(plain, count=1, products=[H100])
    two = with_gpu(plain, count=2, products=[H100])
    off = with_gpu(plain, count=0)
    revisions = {template_revision(desired_template(p)) for p in (plain, one, two)}
    assert len(revisions) == 3
    # No request: the template (and the revision of existing pools) is what it was.
    assert template_revision(desired_template(off)) == template_revision(desired_template(plain))
    assert desired_template(plain) == with_hostname_spread(plain.spec.template.to_wire(), "agents")


def test_created_pods_carry_the_gpu_request() -> None:
    pool = with_gpu(make_pool(replicas=1), count=2, products=[A100])
    now = T0 + datetime.timedelta(hours=1)
    plan = plan_pool(pool, [], NONE, now=now)
    spec = plan.creates[0].manifest["spec"]
    assert spec["containers"][0]["resources"]["limits"] == {GPU_RESOURCE: "2"}
    assert gpu_toleration() in spec["tolerations"]
    assert required_terms(plan.creates[0].manifest)[0]["matchExpressions"][0]["values"] == [A100]
