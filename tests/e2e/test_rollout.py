"""Canary rollouts on the real control plane: a healthy canary promoted through every step
from warm pods with a person's promote, a crash-looping canary (real processes on the
process node) rolled back, abort and retry, an operator killed mid-step that resumes at
the same step, a new template mid-rollout, an unschedulable canary that pauses, claimed
pods left alone, and drain-aware removal of active pods."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from swarmops.agent.contract import AGENT_PORT_NAME
from swarmops.core.pods import DRAIN_STARTED_ANNOTATION
from swarmops.core.rollout import ROLLOUT_ACTION_ANNOTATION
from swarmops.runtime import OperatorThread
from swarmops.testbed.agentbed import RedisServer, redis_server
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.processes import wait_until
from swarmops.testbed.procnode.nodespec import POD_PLACEMENT

POOL = "canary"
TIMEOUT = 120.0
CPU_NODES = {"swarmops.dev/node-kind": "cpu"}


# --- helpers ---------------------------------------------------------------------------------


def pool_manifest(
    namespace: str,
    *,
    replicas: int,
    warm: int,
    image: str = "swarmops/agent:1",
    steps: list[dict[str, Any]] | None = None,
    rollout: dict[str, Any] | None = None,
    pod_spec: dict[str, Any] | None = None,
    container: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec_rollout = dict(rollout or {})
    if steps is not None:
        spec_rollout["canary"] = {"steps": steps}
    return {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": POOL, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "warmPool": {"size": warm},
            "rollout": spec_rollout,
            "template": {
                "spec": {
                    "nodeSelector": CPU_NODES,
                    **(pod_spec or {}),
                    "containers": [{"name": "agent", "image": image, **(container or {})}],
                }
            },
        },
    }


def pods(testbed: TestBed, namespace: str) -> list[dict[str, Any]]:
    items = testbed.get_json("pods", "-n", namespace, "-l", f"swarmops.dev/pool={POOL}")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def of(
    found: list[dict[str, Any]], state: str, revision: str | None = None
) -> list[dict[str, Any]]:
    return [
        p
        for p in found
        if p["metadata"]["labels"]["swarmops.dev/state"] == state
        and (revision is None or p["metadata"]["labels"]["swarmops.dev/revision"] == revision)
        and DRAIN_STARTED_ANNOTATION not in (p["metadata"].get("annotations") or {})
    ]


def ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


def status(testbed: TestBed, namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = testbed.get_json("agentpool", POOL, "-n", namespace).get("status", {})
    return found


def rollout(testbed: TestBed, namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = status(testbed, namespace).get("rollout") or {}
    return found


def condition(testbed: TestBed, namespace: str, kind: str) -> dict[str, Any]:
    for item in status(testbed, namespace).get("conditions", []):
        if item["type"] == kind:
            return dict(item)
    return {}


def events(testbed: TestBed, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = testbed.get_json(
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.kind=AgentPool,involvedObject.name={POOL}",
    )["items"]
    return items


def act(testbed: TestBed, namespace: str, action: str) -> None:
    testbed.kubectl(
        "annotate",
        "agentpool",
        POOL,
        "-n",
        namespace,
        "--overwrite",
        f"{ROLLOUT_ACTION_ANNOTATION}={action}",
    )
    # The operator acts on it once and removes it.
    wait_until(
        lambda: (
            ROLLOUT_ACTION_ANNOTATION
            not in (
                testbed.get_json("agentpool", POOL, "-n", namespace)["metadata"].get("annotations")
                or {}
            )
        ),
        timeout=TIMEOUT,
        what=f"the operator to take the {action} action",
    )


def at(
    testbed: TestBed, namespace: str, *, phase: str, step: int | None = None
) -> Callable[[], bool]:
    def check() -> bool:
        found = rollout(testbed, namespace)
        return found.get("phase") == phase and (
            step is None or found.get("currentStepIndex") == step
        )

    return check


def settled(testbed: TestBed, namespace: str, active: int, warm: int) -> Callable[[], bool]:
    def check() -> bool:
        found = pods(testbed, namespace)
        current = status(testbed, namespace)
        return (
            len(of(found, "active")) == active
            and len(of(found, "warm")) == warm
            and all(ready(p) for p in of(found, "active") + of(found, "warm"))
            and (current.get("readyReplicas"), current.get("warmReady")) == (active, warm)
        )

    return check


def start_stable(testbed: TestBed, namespace: str, **kwargs: Any) -> str:
    """Apply the pool and wait until it is settled; its (stable) revision."""
    manifest = pool_manifest(namespace, **kwargs)
    testbed.apply(manifest)
    wait_until(
        settled(testbed, namespace, kwargs["replicas"], kwargs["warm"]),
        timeout=TIMEOUT,
        what="the stable pool to settle",
    )
    revision: str = status(testbed, namespace)["currentRevision"]
    return revision


def stored_revisions(testbed: TestBed, namespace: str) -> set[str]:
    items = testbed.get_json("controllerrevisions", "-n", namespace)["items"]
    return {item["metadata"]["name"] for item in items}


def claim(testbed: TestBed, namespace: str, name: str) -> str:
    """Bind a claim; the uid of the pod it got."""
    testbed.apply(
        {
            "apiVersion": "swarmops.dev/v1alpha1",
            "kind": "AgentClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"poolRef": {"name": POOL}, "whenNoWarmPod": "Wait"},
        },
    )

    def bound() -> bool:
        found = testbed.get_json("agentclaim", name, "-n", namespace).get("status", {})
        return bool(found.get("phase") == "Bound")

    wait_until(bound, timeout=TIMEOUT, what=f"claim {name} to be Bound")
    pod_name = testbed.get_json("agentclaim", name, "-n", namespace)["status"]["podName"]
    pod = testbed.get_json("pod", pod_name, "-n", namespace)
    return str(pod["metadata"]["uid"])


# --- scenarios -------------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_healthy_canary_is_promoted_through_every_step_from_warm_pods(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}, {"analysis": {}}]
    # Scaled up from warm pods, so that no active pod was ever created cold.
    stable = start_stable(testbed, namespace, replicas=0, warm=4, steps=steps)
    testbed.apply(pool_manifest(namespace, replicas=4, warm=2, steps=steps))
    wait_until(settled(testbed, namespace, 4, 2), timeout=TIMEOUT, what="4 active + 2 warm")
    claimed_uid = claim(testbed, namespace, "before")
    wait_until(settled(testbed, namespace, 4, 2), timeout=TIMEOUT, what="the warm refill")

    testbed.apply(pool_manifest(namespace, replicas=4, warm=2, steps=steps, image="agent:2"))
    wait_until(
        at(testbed, namespace, phase="Paused", step=1), timeout=TIMEOUT, what="the manual pause"
    )
    found = rollout(testbed, namespace)
    canary = found["canaryRevision"]
    assert found["pauseReason"] == "Manual" and found["stableRevision"] == stable
    assert canary != stable and status(testbed, namespace)["updateRevision"] == canary
    wait_until(
        lambda: (
            len(of(pods(testbed, namespace), "active", canary)) == 2
            and len(of(pods(testbed, namespace), "active", stable)) == 2
        ),
        timeout=TIMEOUT,
        what="2 canary and 2 stable active pods",
    )
    assert condition(testbed, namespace, "Progressing")["reason"] == "RolloutPaused"
    # Both templates are kept in ControllerRevisions owned by the pool meanwhile.
    assert stored_revisions(testbed, namespace) == {f"{POOL}-{stable}", f"{POOL}-{canary}"}
    owner = testbed.get_json("controllerrevision", f"{POOL}-{stable}", "-n", namespace)
    assert owner["metadata"]["ownerReferences"][0]["kind"] == "AgentPool"

    act(testbed, namespace, "promote")
    wait_until(at(testbed, namespace, phase="Completed"), timeout=TIMEOUT, what="the promotion")
    wait_until(settled(testbed, namespace, 4, 2), timeout=TIMEOUT, what="the pool to settle")
    found_pods = pods(testbed, namespace)
    assert len(of(found_pods, "active", canary)) == 4
    current = status(testbed, namespace)
    assert current["currentRevision"] == current["updateRevision"] == canary
    # Every active pod came from the warm pool: no pod was created as an active pod.
    created = [e["message"] for e in events(testbed, namespace) if e["reason"] == "PodsCreated"]
    assert created and not [m for m in created if "active" in m], created
    reasons = {e["reason"] for e in events(testbed, namespace)}
    assert {"RolloutStarted", "RolloutStepCompleted", "RolloutCompleted"} <= reasons
    # The claimed pod kept its revision and was never touched.
    claimed = [p for p in found_pods if p["metadata"]["uid"] == claimed_uid]
    assert claimed and claimed[0]["metadata"]["labels"]["swarmops.dev/revision"] == stable
    # Once stable, the old revision's stored template is deleted.
    wait_until(
        lambda: stored_revisions(testbed, namespace) == {f"{POOL}-{canary}"},
        timeout=TIMEOUT,
        what="only the new revision's template to be kept",
    )


@pytest.mark.e2e
def test_a_crash_looping_canary_is_rolled_back_and_retry_tries_again(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    # Real processes: the stable agent sleeps, the canary exits at once and is restarted
    # with back-off by the process node, as a kubelet would.
    placement = {**POD_PLACEMENT, "terminationGracePeriodSeconds": 1}
    steps: list[dict[str, Any]] = [
        {"setWeight": 50},
        {"analysis": {"podChecks": {"maxRestarts": 0}}},
    ]

    def manifest(command: str) -> dict[str, Any]:
        return pool_manifest(
            namespace,
            replicas=2,
            warm=1,
            image="ghcr.io/swarmops/swarmops:dev",
            steps=steps,
            pod_spec=placement,  # its nodeSelector replaces the kwok one
            container={"command": ["sh", "-c", command]},
        )

    testbed.apply(manifest("exec sleep 3600"))
    wait_until(settled(testbed, namespace, 2, 1), timeout=TIMEOUT, what="the stable pool")
    stable = status(testbed, namespace)["currentRevision"]
    before = pods(testbed, namespace)
    stable_uids = {p["metadata"]["uid"] for p in of(before, "active") + of(before, "warm")}

    testbed.apply(manifest("exit 1"))
    wait_until(at(testbed, namespace, phase="Aborted"), timeout=TIMEOUT, what="the rollback")
    degraded = condition(testbed, namespace, "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "RolloutAborted"
    assert "crash-looping" in degraded["message"] or "restarted" in degraded["message"]
    wait_until(
        lambda: (
            not [
                p
                for p in pods(testbed, namespace)
                if p["metadata"]["labels"]["swarmops.dev/revision"] != stable
            ]
            and settled(testbed, namespace, 2, 1)()
        ),
        timeout=TIMEOUT,
        what="the canary pods to go and the stable pool to settle",
    )
    # The stable pods were kept, or (when a canary pod was Ready for an instant before its
    # first crash and took one's place) restored from the stable warm pod: never cold-started.
    assert {p["metadata"]["uid"] for p in of(pods(testbed, namespace), "active")} <= stable_uids
    warnings = [e for e in events(testbed, namespace) if e["reason"] == "RolloutAborted"]
    assert warnings and warnings[0]["type"] == "Warning"

    act(testbed, namespace, "retry")
    assert "RolloutRetried" in {e["reason"] for e in events(testbed, namespace)}

    def rolled_back_twice() -> bool:
        found = events(testbed, namespace)
        aborts = sum(e.get("count", 1) for e in found if e["reason"] == "RolloutAborted")
        return rollout(testbed, namespace).get("phase") == "Aborted" and aborts >= 2

    # Still crashing: it fails again, the same way.
    wait_until(rolled_back_twice, timeout=TIMEOUT, what="the retried rollout to roll back again")


@pytest.mark.e2e
def test_an_operator_killed_mid_step_resumes_there_and_a_new_template_restarts_the_steps(
    testbed: TestBed,
    namespace: str,
    operator_factory: Callable[..., OperatorThread],
) -> None:
    steps: list[dict[str, Any]] = [
        {"setWeight": 25},
        {"pause": {"durationSeconds": 3600}},
        {"setWeight": 50},
    ]
    first = operator_factory(namespace)
    stable = start_stable(testbed, namespace, replicas=4, warm=1, steps=steps)
    testbed.apply(pool_manifest(namespace, replicas=4, warm=1, steps=steps, image="agent:2"))
    wait_until(
        at(testbed, namespace, phase="Progressing", step=1),
        timeout=TIMEOUT,
        what="the timed pause",
    )
    before = rollout(testbed, namespace)
    first.stop()

    operator_factory(namespace)
    # A typo is refused (an Event) and removed: once it is gone, the new operator has
    # reconciled the pool, and it is at the same step with the same clock.
    act(testbed, namespace, "not-an-action")
    after = rollout(testbed, namespace)
    assert after["currentStepIndex"] == 1
    assert after["stepStartedAt"] == before["stepStartedAt"]
    assert after["canaryRevision"] == before["canaryRevision"]
    assert "InvalidRolloutAction" in {e["reason"] for e in events(testbed, namespace)}

    # The stable template is read back from its ControllerRevision (the spec holds the
    # canary's): a lost stable warm pod is refilled from it.
    spare = of(pods(testbed, namespace), "warm", stable)
    assert len(spare) == 1
    testbed.kubectl("delete", "pod", spare[0]["metadata"]["name"], "-n", namespace)
    wait_until(
        lambda: (
            [p["metadata"]["uid"] for p in of(pods(testbed, namespace), "warm", stable) if ready(p)]
            not in ([], [spare[0]["metadata"]["uid"]])
        ),
        timeout=TIMEOUT,
        what="a new stable warm pod",
    )

    # A new template mid-rollout: back to step 0, the original stable stays stable.
    testbed.apply(pool_manifest(namespace, replicas=4, warm=1, steps=steps, image="agent:3"))
    wait_until(
        lambda: (
            rollout(testbed, namespace).get("canaryRevision")
            not in (None, before["canaryRevision"])
        ),
        timeout=TIMEOUT,
        what="the rollout to restart",
    )
    restarted = rollout(testbed, namespace)
    assert restarted["stableRevision"] == stable
    assert "RolloutRestarted" in {e["reason"] for e in events(testbed, namespace)}
    wait_until(
        lambda: not of(pods(testbed, namespace), "active", before["canaryRevision"]),
        timeout=TIMEOUT,
        what="the superseded canary's active pods to go",
    )

    act(testbed, namespace, "promote-full")
    wait_until(at(testbed, namespace, phase="Completed"), timeout=TIMEOUT, what="the promotion")
    wait_until(settled(testbed, namespace, 4, 1), timeout=TIMEOUT, what="the pool to settle")
    assert len(of(pods(testbed, namespace), "active", restarted["canaryRevision"])) == 4


@pytest.mark.e2e
def test_an_unschedulable_canary_pauses_with_the_schedulers_reason_then_abort_rolls_back(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"analysis": {}}]
    stable = start_stable(testbed, namespace, replicas=2, warm=1, steps=steps)
    nowhere = {"swarmops.dev/e2e-group": f"none-{secrets.token_hex(3)}"}
    testbed.apply(
        pool_manifest(
            namespace, replicas=2, warm=1, steps=steps, pod_spec={"nodeSelector": nowhere}
        ),
    )
    wait_until(at(testbed, namespace, phase="Paused"), timeout=TIMEOUT, what="the pause")
    found = rollout(testbed, namespace)
    assert found["pauseReason"] == "Unschedulable"
    assert "node" in found["message"]  # the scheduler's own words
    assert len(of(pods(testbed, namespace), "active", stable)) == 2
    assert condition(testbed, namespace, "Ready")["status"] == "True"

    act(testbed, namespace, "abort")
    wait_until(at(testbed, namespace, phase="Aborted"), timeout=TIMEOUT, what="the rollback")
    wait_until(
        lambda: (
            {p["metadata"]["labels"]["swarmops.dev/revision"] for p in pods(testbed, namespace)}
            == {stable}
            and settled(testbed, namespace, 2, 1)()
        ),
        timeout=TIMEOUT,
        what="only stable pods",
    )
    assert condition(testbed, namespace, "Degraded")["reason"] == "RolloutAborted"


@pytest.mark.e2e
def test_active_pods_of_agents_are_drained_before_they_are_removed(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> None:
    # kwok pods declare the agent port but run no agent: nobody says "idle", so the
    # drain lasts until its deadline.
    agent_port = {"ports": [{"name": AGENT_PORT_NAME, "containerPort": 8090}]}
    kwargs: dict[str, Any] = {"rollout": {"drainTimeoutSeconds": 8}, "container": agent_port}
    start_stable(testbed, namespace, replicas=2, warm=0, **kwargs)
    testbed.apply(pool_manifest(namespace, replicas=1, warm=0, **kwargs))

    def draining() -> list[dict[str, Any]]:
        return [
            p
            for p in pods(testbed, namespace)
            if DRAIN_STARTED_ANNOTATION in (p["metadata"].get("annotations") or {})
        ]

    wait_until(lambda: len(draining()) == 1, timeout=TIMEOUT, what="one pod to start draining")
    drained = draining()[0]["metadata"]["uid"]
    # It no longer counts as active, but it is still there.
    wait_until(
        lambda: status(testbed, namespace).get("replicas") == 1, timeout=TIMEOUT, what="1 active"
    )
    assert drained in {p["metadata"]["uid"] for p in pods(testbed, namespace)}
    assert "PodsDraining" in {e["reason"] for e in events(testbed, namespace)}
    wait_until(
        lambda: drained not in {p["metadata"]["uid"] for p in pods(testbed, namespace)},
        timeout=TIMEOUT,
        what="the drained pod to be deleted at its deadline",
    )
    assert len(of(pods(testbed, namespace), "active")) == 1


@pytest.fixture
def agent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as server:
        yield server


@pytest.mark.e2e
def test_an_idle_agent_is_removed_as_soon_as_it_says_so_not_at_the_deadline(
    testbed: TestBed, namespace: str, operator: OperatorThread, agent_redis: RedisServer
) -> None:
    # Real agents on the process node; idle ones answer `"idle": true` on /status.
    assert agent_redis.password
    testbed.kubectl(
        "create", "secret", "generic", "agent-redis", "-n", namespace,
        f"--from-literal=password={agent_redis.password}",
    )  # fmt: skip
    container = {
        "args": ["agent", "--handler", "swarmops.agent.examples:work"],
        "ports": [{"name": AGENT_PORT_NAME, "containerPort": 8090}],
        "env": [
            {"name": "SWARMOPS_REDIS_URL", "value": agent_redis.url},
            {
                "name": "SWARMOPS_REDIS_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "agent-redis", "key": "password"}},
            },
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": AGENT_PORT_NAME},
            "periodSeconds": 1,
        },
    }
    kwargs: dict[str, Any] = {
        "image": "ghcr.io/swarmops/swarmops:dev",
        "rollout": {"drainTimeoutSeconds": 3600},  # far beyond the test's patience
        "pod_spec": {**POD_PLACEMENT, "terminationGracePeriodSeconds": 5},
        "container": container,
    }
    start_stable(testbed, namespace, replicas=2, warm=0, **kwargs)
    before = {p["metadata"]["uid"] for p in of(pods(testbed, namespace), "active")}
    testbed.apply(pool_manifest(namespace, replicas=1, warm=0, **kwargs))
    wait_until(
        lambda: len(before & {p["metadata"]["uid"] for p in pods(testbed, namespace)}) == 1,
        timeout=TIMEOUT,
        what="the idle agent's pod to be deleted (the drain deadline is an hour away)",
    )
    reasons = {e["reason"] for e in events(testbed, namespace)}
    assert {"PodsDraining", "DrainedPodsDeleted"} <= reasons
    assert status(testbed, namespace)["replicas"] == 1
