"""Whether any GPU node can ever host a pool's pod, what the pool then reports, and the Events."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmops.api import AgentPool
from swarmops.api.agentpool import GpuRequirements
from swarmops.api.common import Condition, ConditionStatus, ConditionType
from swarmops.core.conditions import find_condition, set_condition
from swarmops.core.expectations import NONE
from swarmops.core.gpu import (
    DEGRADED_TAINT,
    GPU_HEALTH_LABEL,
    GPU_RESOURCE,
    UNHEALTHY_TAINT,
    GpuHealth,
    GpuRequest,
    gpu_pod_template,
)
from swarmops.core.gpu_fit import (
    GPU_REQUEST_SATISFIABLE,
    UNSATISFIABLE_GPU_REQUEST,
    GpuNode,
    fit_event,
    node_fits,
    observe_gpu_node,
    unsatisfiable,
)
from swarmops.core.pool import plan_pool
from swarmops.core.testing import T0, make_pod, make_pool
from swarmops.testbed.nodes import A100, H100, GPUProduct, gpu_node

NOW = T0 + datetime.timedelta(hours=1)
HOPPER = observe_gpu_node(gpu_node("kwok-gpu-hopper-0", H100))
AMPERE = observe_gpu_node(gpu_node("kwok-gpu-ampere-0", A100))
TESTBED = [HOPPER, AMPERE]


def request(**fields: Any) -> GpuRequest:
    parsed = GpuRequest.of(GpuRequirements.model_validate(fields))
    assert parsed is not None
    return parsed


def tainted(body: dict[str, Any], key: str, effect: str = "NoSchedule") -> dict[str, Any]:
    body["spec"]["taints"] = [*body["spec"].get("taints", []), {"key": key, "effect": effect}]
    return body


# --- parsing ------------------------------------------------------------------------------------


def test_a_testbed_gpu_node_is_parsed_from_its_gfd_labels_and_allocatable() -> None:
    expected = GpuNode(
        name="kwok-gpu-hopper-0",
        product="NVIDIA-H100-80GB-HBM3",
        memory_mib=81559,
        resources=((GPU_RESOURCE, 8),),
        excluded_by=None,
    )
    assert expected == HOPPER


def test_mig_resources_are_kept_and_other_resources_dropped() -> None:
    body = gpu_node("mig", A100)
    body["status"]["allocatable"].update({"nvidia.com/mig-1g.10gb": "7", "example.com/x": "3"})
    assert observe_gpu_node(body).resources == ((GPU_RESOURCE, 4), ("nvidia.com/mig-1g.10gb", 7))


@pytest.mark.parametrize(
    ("body", "excluded_by"),
    [
        (tainted(gpu_node("n", H100), UNHEALTHY_TAINT), f"taint {UNHEALTHY_TAINT}:NoSchedule"),
        (
            tainted(gpu_node("n", H100), DEGRADED_TAINT, "NoExecute"),
            f"taint {DEGRADED_TAINT}:NoExecute",
        ),
        (tainted(gpu_node("n", H100), UNHEALTHY_TAINT, "PreferNoSchedule"), None),
        (tainted(gpu_node("n", H100), "someone.else/broken"), None),
    ],
)
def test_swarmops_taints_exclude_a_node(body: dict[str, Any], excluded_by: str | None) -> None:
    assert observe_gpu_node(body).excluded_by == excluded_by


@pytest.mark.parametrize(
    ("health", "excluded"),
    [
        ("ok", False),
        ("unmonitored", False),
        ("warn", False),
        ("degraded", True),
        ("critical", True),
        ("unknown", True),
    ],
)
def test_the_health_label_excludes_a_node_unless_ok_or_warn(health: str, excluded: bool) -> None:
    body = gpu_node("n", H100)
    body["metadata"]["labels"][GPU_HEALTH_LABEL] = health
    assert (observe_gpu_node(body).excluded_by is not None) == excluded


# --- the verdict on the test bed's nodes ----------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"count": 1},
        {"count": 8, "products": ["NVIDIA-H100-80GB-HBM3"]},
        {"count": 4, "products": ["NVIDIA-A100-SXM4-40GB"]},
        {"count": 1, "minMemoryMiB": 81559},
        {"count": 2, "products": ["NVIDIA-B200", "NVIDIA-A100-SXM4-40GB"]},
    ],
)
def test_requests_the_testbed_can_host(fields: dict[str, Any]) -> None:
    assert unsatisfiable(request(**fields), TESTBED) is None


def test_more_gpus_than_any_node_has() -> None:
    message = unsatisfiable(request(count=16), TESTBED)
    assert message == (
        "no node offers 16 GPUs per pod; GPU products on nodes: "
        "NVIDIA-A100-SXM4-40GB (40960 MiB, 4 per node, 1 node), "
        "NVIDIA-H100-80GB-HBM3 (81559 MiB, 8 per node, 1 node)"
    )


def test_an_unknown_product() -> None:
    message = unsatisfiable(request(count=1, products=["NVIDIA-B200"]), TESTBED)
    assert message is not None
    assert message.startswith("no node offers 1 GPU of NVIDIA-B200 per pod; GPU products on nodes")


def test_too_little_memory_and_mig() -> None:
    assert unsatisfiable(request(count=1, products=[A100.product], minMemoryMiB=40961), TESTBED)
    message = unsatisfiable(request(count=1, migProfile="1g.10gb"), TESTBED)
    assert message is not None
    assert "1 MIG slice 1g.10gb (nvidia.com/mig-1g.10gb) per pod" in message


def test_no_gpu_nodes_at_all() -> None:
    assert unsatisfiable(request(count=1), []) == (
        "no node offers 1 GPU per pod; no GPU nodes are known "
        "(none is labelled nvidia.com/gpu.present=true)"
    )


def test_a_node_swarmops_excluded_does_not_count_and_says_so() -> None:
    sick = observe_gpu_node(tainted(gpu_node("kwok-gpu-hopper-0", H100), UNHEALTHY_TAINT))
    message = unsatisfiable(request(count=8), [sick, AMPERE])
    assert message is not None
    assert "NVIDIA-H100-80GB-HBM3 (81559 MiB, 8 per node, 1 node, 1 excluded by SwarmOps" in message


def test_nothing_asked_is_never_unsatisfiable() -> None:
    assert unsatisfiable(None, []) is None


# --- properties, and agreement with the scheduler's own rules ----------------------------------

products = st.sampled_from(["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-40GB", "NVIDIA-L4", "X"])
nodes = st.builds(
    lambda i, product, memory, count, mig, taint, health: _node_body(
        f"n{i}", GPUProduct(product, memory, count, "x"), mig=mig, taint=taint, health=health
    ),
    i=st.integers(0, 99),
    product=products,
    memory=st.integers(1, 200_000),
    count=st.integers(0, 16),
    mig=st.none() | st.tuples(st.sampled_from(["1g.10gb", "3g.40gb"]), st.integers(1, 7)),
    taint=st.none() | st.sampled_from([UNHEALTHY_TAINT, DEGRADED_TAINT, "other/taint"]),
    health=st.none() | st.sampled_from([str(h) for h in GpuHealth]),
)
requirements = st.builds(
    lambda count, wanted, memory, mig: GpuRequirements.model_validate(
        {
            "count": count,
            "products": wanted,
            **({"minMemoryMiB": memory} if memory else {}),
            **({"migProfile": mig} if mig else {}),
        }
    ),
    count=st.integers(1, 16),
    wanted=st.lists(products, max_size=2, unique=True),
    memory=st.none() | st.integers(1, 200_000),
    mig=st.none() | st.sampled_from(["1g.10gb", "3g.40gb"]),
)


def _node_body(
    name: str,
    product: GPUProduct,
    *,
    mig: tuple[str, int] | None,
    taint: str | None,
    health: str | None,
) -> dict[str, Any]:
    body = gpu_node(name, product)
    if mig is not None:
        body["status"]["allocatable"][f"nvidia.com/mig-{mig[0]}"] = str(mig[1])
    if taint is not None:
        tainted(body, taint)
    if health is not None:
        body["metadata"]["labels"][GPU_HEALTH_LABEL] = health
    return body


def scheduler_admits(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """The kube-scheduler's filters that matter here, written from the API's rules:
    NodeAffinity (In, NotIn, Gt), NodeResourcesFit (limits of extended resources) and
    TaintToleration (NoSchedule and NoExecute taints need a toleration)."""
    labels = node["metadata"]["labels"]
    allocatable = node["status"]["allocatable"]

    def matches(expression: Mapping[str, Any]) -> bool:
        value = labels.get(expression["key"])
        match expression["operator"]:
            case "In":
                return value in expression["values"]
            case "NotIn":
                return value not in expression["values"]
            case "Gt":
                return value is not None and int(value) > int(expression["values"][0])
        raise AssertionError(expression)

    terms = pod_spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    if not any(all(matches(e) for e in term.get("matchExpressions", [])) for term in terms):
        return False
    for container in pod_spec["containers"]:
        for resource, amount in container.get("resources", {}).get("limits", {}).items():
            if int(allocatable.get(resource, "0")) < int(amount):
                return False

    def tolerated(taint: Mapping[str, Any]) -> bool:
        return any(
            t.get("key") == taint["key"]
            and t.get("operator") == "Exists"
            and t.get("effect") in (None, taint["effect"])
            for t in pod_spec.get("tolerations", [])
        )

    return all(
        tolerated(taint)
        for taint in node["spec"].get("taints", [])
        if taint["effect"] in ("NoSchedule", "NoExecute")
    )


@given(st.lists(nodes, max_size=6), requirements)
def test_the_verdict_agrees_with_the_scheduler_on_the_pods_we_build(
    bodies: list[dict[str, Any]], requirements: GpuRequirements
) -> None:
    template = {"spec": {"containers": [{"name": "a", "image": "a"}]}}
    spec = gpu_pod_template(template, requirements)["spec"]
    gpu_request = GpuRequest.of(requirements)
    assert gpu_request is not None
    for body in bodies:
        # "other/taint" is nobody's we know: the scheduler keeps pods off it, the
        # feasibility check does not (a cordon or a maintenance taint passes).
        if any(t["key"] == "other/taint" for t in body["spec"].get("taints", [])):
            continue
        assert node_fits(gpu_request, observe_gpu_node(body)) == scheduler_admits(spec, body)
    parsed = [observe_gpu_node(body) for body in bodies]
    verdict = unsatisfiable(gpu_request, parsed)
    assert (verdict is None) == any(node_fits(gpu_request, node) for node in parsed)


@given(st.lists(nodes, max_size=6), nodes, requirements)
def test_a_new_node_never_makes_a_request_unsatisfiable(
    bodies: list[dict[str, Any]], extra: dict[str, Any], requirements: GpuRequirements
) -> None:
    gpu_request = GpuRequest.of(requirements)
    before = [observe_gpu_node(body) for body in bodies]
    if unsatisfiable(gpu_request, before) is None:
        assert unsatisfiable(gpu_request, [*before, observe_gpu_node(extra)]) is None


@given(st.lists(nodes, min_size=1, max_size=6), requirements)
def test_the_message_names_what_was_asked_and_what_exists(
    bodies: list[dict[str, Any]], requirements: GpuRequirements
) -> None:
    parsed = [observe_gpu_node(body) for body in bodies]
    message = unsatisfiable(GpuRequest.of(requirements), parsed)
    if message is None:
        return
    for product in requirements.products:
        assert product in message.split(";")[0]
    for node in parsed:
        assert f"{node.product} (" in message
    assert len(message) < 2048


# --- in the pool's status, and the Events ------------------------------------------------------


def gpu_pool(replicas: int = 2, **gpu: Any) -> AgentPool:
    body = make_pool(replicas=replicas).to_wire()
    body["spec"]["gpu"] = gpu
    return AgentPool.from_body(body)


def conditions_of(pool: AgentPool, pods: Any = (), gpu_nodes: Any = TESTBED) -> list[Condition]:
    return plan_pool(pool, pods, NONE, now=NOW, gpu_nodes=gpu_nodes).status.conditions


def test_an_unsatisfiable_request_degrades_the_pool_and_still_creates_pods() -> None:
    pool = gpu_pool(count=16)
    plan = plan_pool(pool, [], NONE, now=NOW, gpu_nodes=TESTBED)
    assert len(plan.creates) == 2  # Pending pods are what a cluster autoscaler acts on
    degraded = find_condition(plan.status.conditions, ConditionType.DEGRADED)
    ready = find_condition(plan.status.conditions, ConditionType.READY)
    assert degraded is not None and ready is not None
    assert (degraded.status, degraded.reason) == (ConditionStatus.TRUE, UNSATISFIABLE_GPU_REQUEST)
    assert degraded.message.startswith("no node offers 16 GPUs per pod")
    assert (ready.status, ready.reason) == (ConditionStatus.FALSE, UNSATISFIABLE_GPU_REQUEST)


def test_the_verdict_wins_over_unschedulable_pods_and_clears_when_a_node_fits() -> None:
    pool = gpu_pool(replicas=1, count=1, products=["NVIDIA-B200"])
    pending = [make_pod("p", None, ready=False, node=None, unschedulable="0/7 nodes")]
    degraded = find_condition(conditions_of(pool, pending), ConditionType.DEGRADED)
    assert degraded is not None and degraded.reason == UNSATISFIABLE_GPU_REQUEST
    b200 = observe_gpu_node(gpu_node("b", GPUProduct("NVIDIA-B200", 183359, 8, "blackwell")))
    degraded = find_condition(conditions_of(pool, gpu_nodes=[*TESTBED, b200]), "Degraded")
    assert degraded is not None
    assert (degraded.status, degraded.reason) == (ConditionStatus.FALSE, "AsExpected")


def test_without_node_access_nothing_is_judged() -> None:
    degraded = find_condition(conditions_of(gpu_pool(count=16), gpu_nodes=None), "Degraded")
    assert degraded is not None and degraded.status == ConditionStatus.FALSE


def test_a_pool_without_gpus_is_never_judged() -> None:
    degraded = find_condition(conditions_of(make_pool(), gpu_nodes=[]), "Degraded")
    assert degraded is not None and degraded.status == ConditionStatus.FALSE


def degraded(
    reason: str, message: str, status: ConditionStatus = ConditionStatus.TRUE
) -> list[Condition]:
    return set_condition([], ConditionType.DEGRADED, status, reason, message, now=NOW)


def test_one_warning_per_change_of_the_verdict_and_a_note_when_it_clears() -> None:
    fine = degraded("AsExpected", "", ConditionStatus.FALSE)
    bad = degraded(UNSATISFIABLE_GPU_REQUEST, "no node offers 16 GPUs per pod; ...")
    worse = degraded(UNSATISFIABLE_GPU_REQUEST, "no node offers 16 GPUs per pod; other nodes")
    first = fit_event(fine, bad)
    assert first is not None and (first.reason, first.warning) == (UNSATISFIABLE_GPU_REQUEST, True)
    assert fit_event(bad, bad) is None  # every later reconcile: no Event
    assert fit_event([], bad) is not None  # a new pool
    changed = fit_event(bad, worse)
    assert changed is not None and changed.message.endswith("other nodes")
    cleared = fit_event(worse, fine)
    assert cleared is not None and (cleared.reason, cleared.warning) == (
        GPU_REQUEST_SATISFIABLE,
        False,
    )
    assert fit_event(fine, fine) is None
    assert fit_event(fine, degraded("Unschedulable", "0/7 nodes")) is None
