"""The claim handlers' edges: a claim's body is parsed once per watch event, into the model
or an InvalidObject that says what is wrong (managedFields, which nothing reads, skipped);
pod events reach the pool and claim controllers through one kopf handler, and keep the
controller's per-pool warm-pod index current."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import kopf

from swarmops.api import AgentClaim
from swarmops.core.pods import ObservedPod, PodState
from swarmops.core.testing import POOL_UID, make_pod
from swarmops.handlers.claims import ClaimController, parse_claim
from swarmops.handlers.context import Services
from swarmops.handlers.objects import InvalidObject
from swarmops.kube.auth import Credentials
from swarmops.metrics import Metrics
from swarmops.runtime import build_registry
from swarmops.settings import Settings


def body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "AgentClaim",
        "metadata": {
            "name": "session",
            "namespace": "team",
            "uid": "uid-1",
            "generation": 2,
            "managedFields": [
                {
                    "manager": "swarmops",
                    "operation": "Update",
                    "subresource": "status",
                    "fieldsV1": {"f:status": {"f:phase": {}}},
                }
            ],
        },
        "spec": {"poolRef": {"name": "agents"}, **spec},
        "status": {"phase": "Pending"},
    }


def test_a_claim_parses_the_same_with_or_without_its_managed_fields() -> None:
    raw = body(capabilities=["python"])
    parsed = parse_claim(kopf.Body(cast(kopf.RawBody, raw)))
    bare = {**raw, "metadata": {k: v for k, v in raw["metadata"].items() if k != "managedFields"}}
    assert isinstance(parsed, AgentClaim)
    assert parsed == AgentClaim.from_body(bare) == AgentClaim.from_body(raw)
    assert parsed.spec.capabilities == ["python"]
    assert "managedFields" in raw["metadata"]  # the event's body is left as it was


def test_an_invalid_claim_says_where_and_what() -> None:
    parsed = parse_claim(kopf.Body(cast(kopf.RawBody, body(whenNoWarmPod="Sometimes"))))
    assert isinstance(parsed, InvalidObject)
    assert (parsed.namespace, parsed.name, parsed.uid, parsed.generation) == (
        "team",
        "session",
        "uid-1",
        2,
    )
    assert parsed.message.startswith("spec.whenNoWarmPod: ")


def test_pod_events_reach_pools_claims_and_swarms_through_one_kopf_handler() -> None:
    registry = build_registry()
    # kopf has no public way to list handlers by resource; its registry keeps them here.
    modules = [
        handler.fn.__module__
        for handler in registry._watching.get_all_handlers()
        if handler.selector is not None and handler.selector.any_name == "pods"
    ]
    assert modules.count("swarmops.handlers.pools") == 1
    assert "swarmops.handlers.claims" not in modules
    assert "swarmops.handlers.swarms" not in modules


AGENTS = ("team", "agents")


def claim_controller(pool_pods: dict[tuple[str, str], list[ObservedPod]]) -> ClaimController:
    """A controller over plain dicts for kopf's indices; nothing here reaches the network."""
    services = Services(
        settings=Settings(namespaces=("team",)), credentials=Credentials(lambda: cast(Any, None))
    )
    return ClaimController(
        client=cast(Any, None),
        events=cast(Any, None),
        metrics=Metrics(),
        services=services,
        claims=cast(Any, {}),
        claim_pods=cast(Any, {}),
        pools=cast(Any, {}),
        pool_pods=cast(Any, pool_pods),
    )


def event(controller: ClaimController, pod: ObservedPod, *, deleted: bool = False) -> None:
    labels = {"swarmops.dev/pool": pod.pool or ""}
    controller.pod_changed(pod, labels, {"metadata": {"labels": labels}}, deleted)


def next_pod(controller: ClaimController, pool: tuple[str, str] = AGENTS) -> str | None:
    chosen = controller._warm_pods(pool).choose(pool_uid=POOL_UID)
    return None if chosen is None else chosen.name


def test_the_warm_index_is_built_from_kopfs_index_then_kept_by_pod_events() -> None:
    old = make_pod("old", PodState.WARM, age=9)
    young = make_pod("young", PodState.WARM, age=1)
    index: dict[tuple[str, str], list[ObservedPod]] = {AGENTS: [old, young]}
    controller = claim_controller(index)
    # Events before the pool's first bind are kopf's index's business alone.
    event(controller, make_pod("early", PodState.WARM, age=50))
    assert next_pod(controller) == "old"  # built from the index, as it stands
    event(controller, replace(old, state=PodState.CLAIMED, resource_version="2"))
    assert next_pod(controller) == "young"
    event(controller, make_pod("older", PodState.WARM, age=20))
    assert next_pod(controller) == "older"
    # A pod moved to another pool leaves this one's index; a deleted one, too.
    event(controller, replace(make_pod("older", PodState.WARM, age=20), pool="other"))
    assert next_pod(controller) == "young"
    event(controller, young, deleted=True)
    assert next_pod(controller) is None
    # The pool deleted: its index goes, and is built afresh from kopf's at the next bind.
    controller.pool_changed(AGENTS, deleted=True)
    index[AGENTS] = [make_pod("new", PodState.WARM)]
    assert next_pod(controller) == "new"
