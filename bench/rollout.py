"""Rollout benchmark: per-step overhead and cold starts of a healthy canary, and how fast a
failing Prometheus measurement turns into a finished rollback.

Brings up its own test bed (3 kwok CPU nodes) or reuses a running one (--kubeconfig), a
real Prometheus (Debian's /usr/bin/prometheus, scraping a metrics source this script
controls; swarmops.testbed.prometheus), and runs the real operator as a subprocess
(`python -m swarmops run --namespace <ns>`). The script watches the pool and its pods by
polling the apiserver every 50 ms, and measures, in one namespace of its own:

1. promotion: a pool of `--replicas` active and `--warm` warm pods gets a new template
   with canary steps `setWeight` `--weights` (no pauses, no analysis: every step's time
   is the engine's own). `step_overhead_s` is the median time from entering one step to
   entering the next (its `max` too); `rollout_s` from the template change to the new
   revision stable on every active pod. `pods_created` counts pods that appeared during
   the rollout (`canary_pods_created`: of the new revision); each replaced active pod
   needs exactly one, so `extra_cold_starts` = pods_created - replicas (target 0: canary
   pods come from prewarmed warm pods, promotion keeps them, nothing is started twice).
2. rollback: a new template whose analysis step measures
   `agent_errors_ratio{revision="{{revision}}"}` every second with `result < 0.05`; the
   source serves 0.5 for the canary revision, so the first measurement with data fails.
   The failing measurement's time is the metric's `lastMeasuredAt` in status (operator's
   clock: this machine's). `rollback_start_s`: from it to the first canary pod leaving
   (deleted, or marked for drain); `rollback_complete_s`: to no canary pod left and
   every active pod stable and Ready.

Prints one JSON object. Run: python bench/rollout.py   (quick: --replicas 10)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import logging
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmops.kube.auth import Credentials, load_connection_info
from swarmops.kube.client import KubeClient
from swarmops.kube.errors import NotFound
from swarmops.kube.resources import AGENTPOOLS, PODS
from swarmops.testbed.binaries import ensure_binaries, repository_root
from swarmops.testbed.cluster import TestBed, TestBedConfig
from swarmops.testbed.processes import free_port, wait_until
from swarmops.testbed.prometheus import Prometheus

log = logging.getLogger("bench.rollout")

POOL = "bench"
POLL_SECONDS = 0.05
METRIC = "agent_errors_ratio"
FAILING_VALUE = 0.5


def pool_manifest(
    namespace: str,
    *,
    replicas: int,
    warm: int,
    image: str,
    steps: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": POOL, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "warmPool": {"size": warm, "refillRate": 1000},
            "rollout": {"canary": {"steps": steps}},
            "template": {
                "spec": {
                    "nodeSelector": {"swarmops.dev/node-kind": "cpu"},
                    "containers": [{"name": "agent", "image": image}],
                }
            },
        },
    }


def failing_analysis(prometheus_url: str) -> list[dict[str, Any]]:
    return [
        {"setWeight": 50},
        {
            "analysis": {
                "metrics": [
                    {
                        "name": "errors",
                        "prometheus": {
                            "address": prometheus_url,
                            "query": f'{METRIC}{{revision="{{{{revision}}}}"}}',
                        },
                        "successCondition": "result < 0.05",
                        "intervalSeconds": 1,
                        "count": 60,
                    }
                ]
            }
        },
    ]


@dataclass
class Snapshot:
    at: float  # wall clock (time.time())
    pool: dict[str, Any]
    pods: list[dict[str, Any]]

    @property
    def status(self) -> dict[str, Any]:
        found: dict[str, Any] = self.pool.get("status") or {}
        return found

    @property
    def rollout(self) -> dict[str, Any]:
        found: dict[str, Any] = self.status.get("rollout") or {}
        return found

    def live(self, revision: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        def keep(pod: dict[str, Any]) -> bool:
            meta = pod["metadata"]
            labels = meta.get("labels") or {}
            return (
                not meta.get("deletionTimestamp")
                and "swarmops.dev/drain-started-at" not in (meta.get("annotations") or {})
                and (revision is None or labels.get("swarmops.dev/revision") == revision)
                and (state is None or labels.get("swarmops.dev/state") == state)
            )

        return [p for p in self.pods if keep(p)]


def is_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


@dataclass
class Watcher:
    """Polls the pool and its pods; remembers every pod ever seen and how it first looked."""

    client: KubeClient
    namespace: str
    first_seen: dict[str, tuple[float, str, str]] = field(default_factory=dict)

    async def snapshot(self) -> Snapshot:
        pool = await self.client.get(AGENTPOOLS, POOL, self.namespace)
        pods = await self.client.list(
            PODS, self.namespace, label_selector=f"swarmops.dev/pool={POOL}"
        )
        now = time.time()
        for pod in pods:
            meta = pod["metadata"]
            labels = meta.get("labels") or {}
            self.first_seen.setdefault(
                meta["uid"],
                (
                    now,
                    labels.get("swarmops.dev/revision", ""),
                    labels.get("swarmops.dev/state", ""),
                ),
            )
        return Snapshot(now, pool, pods)

    async def until(self, done: Any, within: float, what: str) -> list[Snapshot]:
        """Snapshots until `done(snapshot)`; all of them, the last one satisfying it."""
        seen: list[Snapshot] = []
        deadline = time.monotonic() + within
        while True:
            with contextlib.suppress(NotFound):
                snap = await self.snapshot()
                seen.append(snap)
                if done(snap):
                    return seen
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            await asyncio.sleep(POLL_SECONDS)


def settled(replicas: int, warm: int) -> Any:
    def check(snap: Snapshot) -> bool:
        status = snap.status
        return (
            status.get("currentRevision") == status.get("updateRevision") is not None
            and status.get("readyReplicas") == replicas
            and status.get("warmReady", 0) >= warm
            and len(snap.live(state="active")) == replicas
            and all(is_ready(p) for p in snap.live(state="active"))
        )

    return check


def parse_time(value: str) -> float:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def apply(client: KubeClient, manifest: dict[str, Any]) -> None:
    await client.apply(AGENTPOOLS, manifest, field_manager="bench")


async def promotion(
    client: KubeClient, watcher: Watcher, namespace: str, args: argparse.Namespace
) -> dict[str, Any]:
    steps = [{"setWeight": weight} for weight in args.weights]
    await apply(
        client,
        pool_manifest(
            namespace, replicas=args.replicas, warm=args.warm, image="agent:1", steps=steps
        ),
    )
    await watcher.until(settled(args.replicas, args.warm), 300, "the stable pool")
    before = set(watcher.first_seen)
    started = time.time()
    await apply(
        client,
        pool_manifest(
            namespace, replicas=args.replicas, warm=args.warm, image="agent:2", steps=steps
        ),
    )

    def completed(snap: Snapshot) -> bool:
        return (
            snap.rollout.get("phase") == "Completed"
            and snap.status.get("currentRevision") == snap.rollout.get("canaryRevision")
            and settled(args.replicas, 0)(snap)
        )

    seen = await watcher.until(completed, 300, "the promotion")
    canary = seen[-1].rollout.get("canaryRevision")
    entered: dict[int, float] = {}
    for snap in seen:
        if snap.rollout.get("phase") in ("Progressing", "Paused", "Completed"):
            entered.setdefault(int(snap.rollout.get("currentStepIndex", 0)), snap.at)
    ordered = [entered[i] for i in sorted(entered)]
    overheads = [later - earlier for earlier, later in itertools.pairwise(ordered)]
    created = {uid: first for uid, first in watcher.first_seen.items() if uid not in before}
    return {
        "rollout_s": round(seen[-1].at - started, 3),
        "steps": len(steps),
        "step_overhead_s": round(statistics.median(overheads), 3) if overheads else None,
        "step_overhead_max_s": round(max(overheads), 3) if overheads else None,
        "pods_created": len(created),
        "canary_pods_created": sum(1 for _, rev, _ in created.values() if rev == canary),
        "extra_cold_starts": len(created) - args.replicas,
    }


async def rollback(
    client: KubeClient,
    watcher: Watcher,
    prometheus: Prometheus,
    namespace: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    steps = failing_analysis(prometheus.url)
    await apply(
        client,
        pool_manifest(
            namespace, replicas=args.replicas, warm=args.warm, image="agent:2", steps=steps
        ),
    )
    await watcher.until(settled(args.replicas, args.warm), 300, "the stable pool")
    stable = (await watcher.snapshot()).status["currentRevision"]
    await apply(
        client,
        pool_manifest(
            namespace, replicas=args.replicas, warm=args.warm, image="agent:3", steps=steps
        ),
    )
    seen = await watcher.until(
        lambda s: s.status.get("updateRevision") not in (None, stable), 60, "the new revision"
    )
    canary = seen[-1].status["updateRevision"]
    prometheus.source.set(METRIC, FAILING_VALUE, {"revision": canary})

    def canary_on(snap: Snapshot) -> int:
        return len(snap.live(revision=canary, state="active"))

    await watcher.until(lambda s: canary_on(s) > 0, 300, "canary pods to be active")

    def rolled_back(snap: Snapshot) -> bool:
        return (
            snap.rollout.get("phase") == "Aborted"
            and not snap.live(revision=canary)
            and len(snap.live(revision=stable, state="active")) == args.replicas
            and all(is_ready(p) for p in snap.live(revision=stable, state="active"))
        )

    seen = await watcher.until(rolled_back, 300, "the rollback")
    aborted = next(s for s in seen if s.rollout.get("phase") == "Aborted")
    results = aborted.rollout.get("analysis") or []
    measured_at = parse_time(results[0]["lastMeasuredAt"])
    # Rollback begins when a canary pod that was live is live no more.
    began, live_before = seen[-1], set[str]()
    for snap in seen:
        live_now = {p["metadata"]["uid"] for p in snap.live(revision=canary)}
        if live_before - live_now:
            began = snap
            break
        live_before |= live_now
    peak = max(canary_on(s) for s in seen)
    return {
        "canary_pods": peak,
        "failing_value": results[0].get("lastValue"),
        "rollback_message": aborted.rollout.get("message"),
        "rollback_start_s": round(began.at - measured_at, 3),
        "aborted_status_seen_s": round(aborted.at - measured_at, 3),
        "rollback_complete_s": round(seen[-1].at - measured_at, 3),
    }


def start_operator(kubeconfig: Path, namespace: str, log_path: Path) -> subprocess.Popen[bytes]:
    health, metrics = free_port(), free_port()
    command = [
        sys.executable,
        "-m",
        "swarmops",
        "run",
        "--kubeconfig",
        str(kubeconfig),
        "--namespace",
        namespace,
        "--metrics-port",
        str(metrics),
        "--health-port",
        str(health),
    ]
    with log_path.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited: see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/readyz", timeout=1) as r:
                return int(r.status) == 200
        except OSError:
            return False

    wait_until(ready, timeout=60, what="the operator to be ready")
    return process


async def run(
    kubeconfig: Path, namespace: str, prometheus: Prometheus, args: argparse.Namespace
) -> dict[str, Any]:
    credentials = Credentials(lambda: load_connection_info(kubeconfig, None, {}))
    async with KubeClient(credentials) as client:
        watcher = Watcher(client, namespace)
        return {
            "promotion": await promotion(client, watcher, namespace, args),
            "rollback": await rollback(client, watcher, prometheus, namespace, args),
        }


def quiet(*command: str, check: bool = True) -> None:
    """Run a command with its output on stderr: stdout is the JSON result's."""
    subprocess.run(command, check=check, stdout=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", type=Path, help="reuse this running test bed")
    parser.add_argument("--state", type=Path, help="test bed state folder (default: temporary)")
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--warm", type=int, default=5)
    parser.add_argument(
        "--weights",
        type=lambda text: [int(part) for part in text.split(",") if part],
        default=[10, 25, 50, 75],
        help="setWeight steps, comma-separated",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if args.kubeconfig is not None:
            kubeconfig: Path = args.kubeconfig
            kubectl = [str(ensure_binaries() / "kubectl"), f"--kubeconfig={kubeconfig}"]
        else:
            bed = TestBed(
                args.state or work / "bed", TestBedConfig(gpu_products=(), process_node=False)
            )
            log.info("starting a test bed")
            bed.start()
            stack.callback(bed.stop)
            kubeconfig = bed.kubeconfig
            kubectl = [str(bed.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}"]
            crds = str(repository_root() / "crds")
            quiet(*kubectl, "apply", "--server-side", "--force-conflicts", "-f", crds)
            quiet(*kubectl, "wait", "--for=condition=Established", "--timeout=60s", "-f", crds)
        namespace = f"bench-rollout-{secrets.token_hex(3)}"
        quiet(*kubectl, "create", "namespace", namespace)
        stack.callback(
            lambda: quiet(*kubectl, "delete", "namespace", namespace, "--wait=false", check=False)
        )
        prometheus = Prometheus(work / "prometheus")
        prometheus.start()
        stack.callback(prometheus.close)
        log_path = Path(tempfile.gettempdir()) / f"{namespace}-operator.log"
        process = start_operator(kubeconfig, namespace, log_path)

        def stop_operator() -> None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()

        stack.callback(stop_operator)
        result = asyncio.run(run(kubeconfig, namespace, prometheus, args))
        result = {
            "replicas": args.replicas,
            "warm": args.warm,
            "weights": args.weights,
            "failing_measurement": "Prometheus (real PromQL, scraped metrics source)",
            **result["promotion"],
            **result["rollback"],
            "operator_log": str(log_path),
        }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
