"""Binding a warm pod to a claim: the choice, the patches, and that no interleaving of
claims, stale caches, operator processes and pool writes ever binds one pod twice.

The apiserver is modelled by a small RFC 6902 applier over a dict store: a patch's
`test` ops hold against the latest stored object or nothing changes (its 422), and a
successful patch moves the resourceVersion. The e2e tests do the same on the real one.
"""

from __future__ import annotations

import copy
import datetime
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmops.api import AgentClaim, AgentPool
from swarmops.core.agentenv import agent_pod
from swarmops.core.claims import (
    BOUND_AT_ANNOTATION,
    RETAIN_FINALIZER,
    WARM_HIT_ANNOTATION,
    bind_patch,
    claim_owner_reference,
    cold_start_manifest,
    cold_start_name,
    finalizer_patch,
    missing_capabilities,
    observe_claimed_pod,
    pool_revision,
    release_patch,
    required_revision,
)
from swarmops.core.pods import (
    CLAIM_LABEL,
    POOL_LABEL,
    REVISION_LABEL,
    STATE_LABEL,
    ObservedPod,
    PodState,
    observe_pod,
)
from swarmops.core.pool import desired_template
from swarmops.core.testing import POOL_UID, T0, make_claim, make_pod, make_pool
from swarmops.core.warmpods import choose_warm_pod

WARM, CLAIMED, ACTIVE = PodState.WARM, PodState.CLAIMED, PodState.ACTIVE
NOW = T0 + datetime.timedelta(hours=1)


# --- a model of the apiserver's JSON patch ---------------------------------------------------


class PatchFailed(Exception):
    """A `test` op failed or a path does not exist: the apiserver's 422."""


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _split(path: str) -> list[str]:
    if not path.startswith("/"):
        raise PatchFailed(f"bad pointer {path!r}")
    return [_unescape(part) for part in path[1:].split("/")]


def _parent(doc: Any, path: str) -> tuple[Any, str]:
    tokens = _split(path)
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchFailed(f"missing {path}")
            node = node[token]
        elif isinstance(node, list):
            index = int(token)
            if not 0 <= index < len(node):
                raise PatchFailed(f"missing {path}")
            node = node[index]
        else:
            raise PatchFailed(f"missing {path}")
    return node, tokens[-1]


def _get(doc: Any, path: str) -> Any:
    parent, key = _parent(doc, path)
    if isinstance(parent, dict):
        if key not in parent:
            raise PatchFailed(f"missing {path}")
        return parent[key]
    index = int(key)
    if not 0 <= index < len(parent):
        raise PatchFailed(f"missing {path}")
    return parent[index]


def apply_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """The patched copy of `doc`; raises PatchFailed and leaves `doc` as it was."""
    result = copy.deepcopy(doc)
    for op in ops:
        kind, path = op["op"], op["path"]
        if kind == "test":
            if _get(result, path) != op["value"]:
                raise PatchFailed(f"testing value {path} failed")
            continue
        parent, key = _parent(result, path)
        if kind == "add":
            if isinstance(parent, dict):
                parent[key] = copy.deepcopy(op["value"])
            elif key == "-":
                parent.append(copy.deepcopy(op["value"]))
            else:
                parent.insert(int(key), copy.deepcopy(op["value"]))
        elif kind == "replace":
            _get(result, path)
            if isinstance(parent, dict):
                parent[key] = copy.deepcopy(op["value"])
            else:
                parent[int(key)] = copy.deepcopy(op["value"])
        elif kind == "remove":
            _get(result, path)
            if isinstance(parent, dict):
                del parent[key]
            else:
                del parent[int(key)]
        else:
            raise PatchFailed(f"unsupported op {kind}")
    return result


class Store:
    """Pods by name, as etcd behind the apiserver holds them."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self._version = 0

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = self._next_version()
        self.objects[stored["metadata"]["name"]] = stored
        return copy.deepcopy(stored)

    def patch(self, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        if name not in self.objects:
            raise PatchFailed(f"{name} not found")
        patched = apply_patch(self.objects[name], ops)
        patched["metadata"]["resourceVersion"] = self._next_version()
        self.objects[name] = patched
        return copy.deepcopy(patched)

    def touch(self, name: str) -> None:
        """A write by someone else (a status update): only the resourceVersion moves."""
        self.objects[name]["metadata"]["resourceVersion"] = self._next_version()


def test_the_model_refuses_a_failed_test_and_keeps_the_object() -> None:
    store = Store()
    store.create({"metadata": {"name": "p", "labels": {"a": "1"}}})
    with pytest.raises(PatchFailed):
        store.patch(
            "p",
            [
                {"op": "replace", "path": "/metadata/labels/a", "value": "2"},
                {"op": "test", "path": "/metadata/labels/a", "value": "1"},
            ],
        )
    assert store.objects["p"]["metadata"]["labels"] == {"a": "1"}
    assert store.objects["p"]["metadata"]["resourceVersion"] == "1"


# --- builders --------------------------------------------------------------------------------


def pod_body(
    name: str,
    *,
    state: str = "warm",
    ready: bool = True,
    node: str | None = "node-a",
    age: int = 0,
    owner: str = POOL_UID,
    pool: str = "agents",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    created = T0 - datetime.timedelta(seconds=age)
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "team",
        "uid": f"uid-{name}",
        "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "labels": {"app": "agent", POOL_LABEL: pool, STATE_LABEL: state, REVISION_LABEL: "r1"},
        "ownerReferences": [
            {
                "apiVersion": "swarmops.dev/v1alpha1",
                "kind": "AgentPool",
                "name": pool,
                "uid": owner,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    spec: dict[str, Any] = {"containers": [{"name": "agent", "image": "agent:1"}]}
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec,
        "status": {
            "phase": "Running" if ready else "Pending",
            "podIP": "10.0.0.7" if ready else None,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def pool_with(
    *, capabilities: tuple[str, ...] = (), update_policy: str = "OnReplenish"
) -> AgentPool:
    body = make_pool(replicas=0, warm=4).model_dump(mode="json", by_alias=True, exclude_none=True)
    body["spec"]["capabilities"] = list(capabilities)
    body["spec"]["warmPool"]["updatePolicy"] = update_policy
    return AgentPool.from_body(body)


def claim(name: str = "session", *, uid: str = "uid-claim", **fields: Any) -> AgentClaim:
    return make_claim(name, uid=uid, **fields)


def choose(pods: list[ObservedPod], **kwargs: Any) -> str | None:
    chosen = choose_warm_pod(pods, pool_name="agents", pool_uid=POOL_UID, **kwargs)
    return None if chosen is None else chosen.name


# --- choosing --------------------------------------------------------------------------------


def test_only_ready_warm_pods_of_the_pool_itself_are_handed_out() -> None:
    pods = [
        make_pod("active", ACTIVE, age=99),
        make_pod("claimed", CLAIMED, owner="uid-other-claim", age=98),
        make_pod("starting", WARM, ready=False, age=97),
        make_pod("leaving", WARM, terminating=True, age=96),
        make_pod("other-pool", WARM, pool="other", age=95),
        make_pod("old-incarnation", WARM, owner="uid-earlier-pool", age=94),
        make_pod("ok", WARM, age=1),
    ]
    assert choose(pods) == "ok"
    assert choose(pods[:-1]) is None


def test_the_oldest_ready_pod_goes_first() -> None:
    pods = [make_pod("young", WARM, age=1), make_pod("old", WARM, age=50)]
    assert choose(pods) == "old"


def test_claims_spread_over_nodes_before_age_counts() -> None:
    pods = [
        make_pod("busy-node-old", WARM, age=100, node="n1"),
        make_pod("c1", CLAIMED, owner="uid-x", node="n1"),
        make_pod("free-node-young", WARM, age=1, node="n2"),
    ]
    assert choose(pods) == "free-node-young"


def test_reserved_pods_are_skipped_and_count_as_load_on_their_node() -> None:
    pods = [
        make_pod("w1", WARM, age=100, node="n1"),
        make_pod("w2", WARM, age=50, node="n1"),
        make_pod("w3", WARM, age=10, node="n2"),
    ]
    assert choose(pods) == "w1"
    # w1 is being bound by this process: n1 carries one claim now, so n2 goes next.
    assert choose(pods, reserved={"uid-w1"}) == "w3"
    assert choose(pods, reserved={"uid-w1"}, skip={"uid-w3"}) == "w2"
    assert choose(pods, reserved={"uid-w1", "uid-w2", "uid-w3"}) is None


def test_stale_warm_pods_are_refused_only_under_recreate() -> None:
    pods = [make_pod("stale", WARM, age=9, revision="old"), make_pod("fresh", WARM, revision="r")]
    on_replenish = pool_with()
    recreate = pool_with(update_policy="Recreate")
    assert required_revision(on_replenish, "r") is None
    assert choose(pods, revision=required_revision(on_replenish, "r")) == "stale"
    assert required_revision(recreate, "r") == "r"
    assert choose(pods, revision="r") == "fresh"
    assert pool_revision(recreate) == pool_revision(on_replenish)  # the policy is no template


TOKENS = st.sampled_from(["python", "browser", "gpu", "shell", "sql", "rust"])


@given(offered=st.sets(TOKENS), asked=st.sets(TOKENS))
def test_a_claim_matches_a_pool_exactly_when_it_asks_for_a_subset(
    offered: set[str], asked: set[str]
) -> None:
    pool = pool_with(capabilities=tuple(sorted(offered)))
    missing = missing_capabilities(pool, claim(capabilities=tuple(sorted(asked))))
    assert (not missing) == (asked <= offered)
    assert missing == sorted(asked - offered)


# --- the bind patch ----------------------------------------------------------------------------


def bind(store: Store, name: str, who: AgentClaim, seen: dict[str, Any]) -> dict[str, Any]:
    return store.patch(name, bind_patch(observe_pod(seen), who, now=NOW))


def test_a_bind_relabels_the_pod_and_moves_its_ownership_to_the_claim() -> None:
    store = Store()
    seen = store.create(pod_body("p1", annotations={"note": "hi"}))
    who = claim()
    bound = bind(store, "p1", who, seen)
    metadata = bound["metadata"]
    assert metadata["labels"][STATE_LABEL] == "claimed"
    assert metadata["labels"][CLAIM_LABEL] == "session"
    assert metadata["labels"][POOL_LABEL] == "agents"  # the pool still counts it
    assert metadata["ownerReferences"] == [claim_owner_reference(who)]
    assert metadata["ownerReferences"][0]["uid"] == "uid-claim"
    assert metadata["annotations"]["note"] == "hi"
    assert metadata["annotations"][WARM_HIT_ANNOTATION] == "true"
    claimed = observe_claimed_pod(bound)
    assert claimed.claim == "session" and claimed.owned_by("uid-claim")
    assert claimed.bound_at == NOW and claimed.warm_hit is True
    assert claimed.pod_ip == "10.0.0.7" and claimed.pod.state is CLAIMED


def test_a_bind_adds_the_annotations_map_when_the_pod_has_none() -> None:
    store = Store()
    seen = store.create(pod_body("p1"))
    bound = bind(store, "p1", claim(), seen)
    assert bound["metadata"]["annotations"][BOUND_AT_ANNOTATION] == "2026-01-01T01:00:00.000Z"


def test_a_pod_is_never_bound_twice_nor_from_a_stale_view() -> None:
    store = Store()
    seen = store.create(pod_body("p1"))
    bind(store, "p1", claim("first", uid="uid-1"), seen)
    # The same view again (a second claim racing on a stale cache): the test ops fail.
    with pytest.raises(PatchFailed):
        bind(store, "p1", claim("second", uid="uid-2"), seen)
    # Even a fresh view of the claimed pod: its state label is no longer warm.
    with pytest.raises(PatchFailed):
        bind(store, "p1", claim("second", uid="uid-2"), store.objects["p1"])
    assert store.objects["p1"]["metadata"]["labels"][CLAIM_LABEL] == "first"


def test_a_pod_that_changed_since_it_was_seen_is_refused() -> None:
    store = Store()
    seen = store.create(pod_body("p1"))
    store.touch("p1")  # e.g. marked for deletion by the pool: the resourceVersion moved
    with pytest.raises(PatchFailed):
        bind(store, "p1", claim(), seen)
    # A pod of the same name created since is another pod: its uid differs.
    store.objects["p1"]["metadata"]["uid"] = "uid-new"
    view = copy.deepcopy(store.objects["p1"])
    view["metadata"]["uid"] = "uid-p1"
    with pytest.raises(PatchFailed):
        bind(store, "p1", claim(), view)


def promote(store: Store, seen: dict[str, Any]) -> dict[str, Any]:
    """The pool's promotion of a warm pod, as handlers/pools.py writes it."""
    label = "/metadata/labels/" + STATE_LABEL.replace("/", "~1")
    return store.patch(
        seen["metadata"]["name"],
        [
            {"op": "test", "path": "/metadata/uid", "value": seen["metadata"]["uid"]},
            {"op": "test", "path": label, "value": "warm"},
            {"op": "replace", "path": label, "value": "active"},
        ],
    )


def test_a_promotion_and_a_bind_of_one_pod_exclude_each_other() -> None:
    store = Store()
    seen = store.create(pod_body("p1"))
    promote(store, seen)
    with pytest.raises(PatchFailed):
        bind(store, "p1", claim(), seen)
    store = Store()
    seen = store.create(pod_body("p1"))
    bind(store, "p1", claim(), seen)
    with pytest.raises(PatchFailed):
        promote(store, seen)


# --- cold starts, releases and the finalizer -------------------------------------------------


def test_a_cold_start_is_the_pools_pod_born_claimed_and_owned_by_the_claim() -> None:
    pool = pool_with()
    who = claim(uid="0a1b2c3d-4e5f-6789-abcd-ef0123456789")
    manifest = cold_start_manifest(pool, who, now=NOW)
    metadata = manifest["metadata"]
    assert metadata["name"] == cold_start_name(who) == "session-0a1b2c3d"
    assert "generateName" not in metadata
    assert metadata["labels"] == {
        "app": "agent",
        POOL_LABEL: "agents",
        REVISION_LABEL: pool_revision(pool),
        STATE_LABEL: "claimed",
        CLAIM_LABEL: "session",
    }
    assert metadata["ownerReferences"] == [claim_owner_reference(who)]
    assert metadata["annotations"] == {
        "note": "hi",
        BOUND_AT_ANNOTATION: "2026-01-01T01:00:00.000Z",
        WARM_HIT_ANNOTATION: "false",
    }
    # The template's spec, with the agent's environment (core/agentenv.py).
    assert manifest["spec"] == agent_pod(pool, desired_template(pool))["spec"]
    assert observe_claimed_pod(manifest).warm_hit is False


def test_a_release_keeps_the_pod_but_cuts_it_loose_from_claim_and_pool() -> None:
    store = Store()
    seen = store.create(pod_body("p1"))
    bound = bind(store, "p1", claim(), seen)
    released = store.patch("p1", release_patch(observe_claimed_pod(bound), "uid-claim"))
    metadata = released["metadata"]
    assert metadata["ownerReferences"] == []
    assert POOL_LABEL not in metadata["labels"] and STATE_LABEL not in metadata["labels"]
    assert metadata["labels"][CLAIM_LABEL] == "session"  # whose agent it was
    # Twice is refused, not harmful: the claim's reference is gone.
    with pytest.raises(PatchFailed):
        store.patch("p1", release_patch(observe_claimed_pod(bound), "uid-claim"))


@pytest.mark.parametrize("others", [[], ["example.com/other"]])
def test_the_retain_finalizer_is_added_and_removed_without_touching_others(
    others: list[str],
) -> None:
    store = Store()
    body: dict[str, Any] = {"metadata": {"name": "session", "uid": "uid-claim"}}
    if others:
        body["metadata"]["finalizers"] = list(others)
    store.create(body)
    patch = finalizer_patch(claim(finalizers=tuple(others)), present=True)
    assert patch is not None
    added = store.patch("session", patch)
    assert added["metadata"]["finalizers"] == [*others, RETAIN_FINALIZER]
    assert finalizer_patch(claim(finalizers=(*others, RETAIN_FINALIZER)), present=True) is None
    patch = finalizer_patch(claim(finalizers=(*others, RETAIN_FINALIZER)), present=False)
    assert patch is not None
    removed = store.patch("session", patch)
    assert removed["metadata"].get("finalizers") == others
    assert finalizer_patch(claim(finalizers=tuple(others)), present=False) is None


def test_a_finalizer_added_by_someone_else_meanwhile_is_never_dropped() -> None:
    store = Store()
    store.create({"metadata": {"name": "session", "uid": "uid-claim", "finalizers": ["a/b"]}})
    patch = finalizer_patch(claim(finalizers=("a/b",)), present=True)
    store.objects["session"]["metadata"]["finalizers"].append("c/d")
    with pytest.raises(PatchFailed):
        store.patch("session", patch or [])
    assert store.objects["session"]["metadata"]["finalizers"] == ["a/b", "c/d"]


# --- every interleaving ------------------------------------------------------------------------

Step = tuple[str, int, int]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, int, int, list[Step]]:
    pods = draw(st.integers(1, 6))
    processes = draw(st.integers(1, 3))
    claims = draw(st.integers(1, 10))
    process = st.integers(0, processes - 1)
    pod = st.integers(0, pods - 1)
    step = st.one_of(
        st.tuples(st.just("refresh"), process, pod),  # one pod's watch event reaches a cache
        st.tuples(st.just("resync"), process, st.just(0)),  # a whole cache catches up
        st.tuples(st.just("touch"), pod, st.just(0)),  # a status update moves the version
        st.tuples(st.just("promote"), process, pod),  # the pool promotes a warm pod
        st.tuples(st.just("bind"), process, st.integers(0, claims - 1)),
        st.tuples(st.just("restart"), process, st.just(0)),  # memory lost, cache re-listed
    )
    return pods, processes, claims, draw(st.lists(step, max_size=60))


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_no_interleaving_binds_one_pod_to_two_claims(
    scenario: tuple[int, int, int, list[Step]],
) -> None:
    """Claims reconciled by several operator processes at once, each from its own
    stale cache, against pool promotions and status churn: every pod is won at most
    once, and a won pod carries exactly the winner's label and ownerReference."""
    pod_count, process_count, claim_count, steps = scenario
    store = Store()
    for i in range(pod_count):
        store.create(pod_body(f"p{i}", age=i, node=f"n{i % 2}"))
    claims = [claim(f"c{i}", uid=f"uid-c{i}") for i in range(claim_count)]
    caches = [copy.deepcopy(store.objects) for _ in range(process_count)]
    reserved: list[set[str]] = [set() for _ in range(process_count)]
    bound: list[dict[str, str]] = [{} for _ in range(process_count)]  # claim -> pod
    wins: Counter[str] = Counter()
    winner: dict[str, str] = {}  # pod -> claim name
    promoted: set[str] = set()

    for kind, a, b in steps:
        if kind == "refresh":
            caches[a][f"p{b}"] = copy.deepcopy(store.objects[f"p{b}"])
        elif kind == "resync":
            caches[a] = copy.deepcopy(store.objects)
        elif kind == "restart":
            caches[a] = copy.deepcopy(store.objects)
            reserved[a].clear()
            bound[a].clear()
        elif kind == "touch":
            store.touch(f"p{a}")
        elif kind == "promote":
            seen = caches[a][f"p{b}"]
            if seen["metadata"]["labels"].get(STATE_LABEL) == "warm":
                try:
                    promote(store, seen)
                    promoted.add(f"p{b}")
                except PatchFailed:
                    pass
        else:
            who = claims[b]
            # What the handler knows of the claim's pod: its memory, or its cache.
            if who.metadata.name in bound[a] or any(
                p["metadata"]["labels"].get(CLAIM_LABEL) == who.metadata.name
                for p in caches[a].values()
            ):
                continue
            skip: set[str] = set()
            for _ in range(4):
                chosen = choose_warm_pod(
                    [observe_pod(p) for p in caches[a].values()],
                    pool_name="agents",
                    pool_uid=POOL_UID,
                    reserved=reserved[a],
                    skip=skip,
                )
                if chosen is None:
                    break
                reserved[a].add(chosen.uid)
                try:
                    store.patch(chosen.name, bind_patch(chosen, who, now=NOW))
                except PatchFailed:
                    reserved[a].discard(chosen.uid)
                    skip.add(chosen.uid)
                    continue
                wins[chosen.name] += 1
                winner[chosen.name] = who.metadata.name
                bound[a][who.metadata.name] = chosen.name
                break

    assert all(count == 1 for count in wins.values()), wins
    assert not promoted & set(winner)
    for name, body in store.objects.items():
        labels = body["metadata"]["labels"]
        if name in winner:
            assert labels[STATE_LABEL] == "claimed"
            assert labels[CLAIM_LABEL] == winner[name]
            assert [ref["name"] for ref in body["metadata"]["ownerReferences"]] == [winner[name]]
        else:
            assert labels[STATE_LABEL] in ("warm", "active") and CLAIM_LABEL not in labels
    # One process never binds one claim twice; only processes that overlap can, and the
    # reconcile then deletes the extra pod (see test_claim_plan.py).
    if process_count == 1:
        assert len(set(winner.values())) == len(winner)
