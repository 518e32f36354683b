"""Claims and warm pool benchmark: claim latency, warm hits, double binds, the highest
sustained claim rate, pool fill speed and the operator's peak memory.

Brings up its own test bed (kwok CPU nodes enough for the pods: 500 pods a node), or
reuses a running one (--kubeconfig), runs the real operator as a subprocess
(`python -m swarmops run --namespace <ns>`) so its memory can be sampled (psutil, RSS
peak every 0.2 s), and measures, in one namespace of its own:

1. fill: an AgentPool with `--pool-size` warm pods (and `--refill-rate`) is created;
   `fill_pods_per_s` = pool size / (pool created → the last warm pod seen Ready), with
   when the last pod was created, scheduled and Ready (`fill_stages_last_s`).
2. ramp: steps of `--ramp` rates, `--step-seconds` each, on the fresh system (a steady
   phase past capacity leaves minutes of backlog); before each step the benchmark waits
   until every earlier claim is finished and deleted and the warm pool is full again. A
   step is sustained when its claims were sent at ≥ 95 % of the rate, all bound, with
   P99 ≤ 500 ms. The ramp goes on until two steps in a row fail (one P99 spike on a
   shared machine is not the end of the curve); `max_sustained_claims_per_s` is the
   highest rate that was sustained.
3. steady: claims at `--rate` a second for `--duration` seconds (open loop: claim i is
   sent at start + i/rate, whatever happened to the ones before). Each claim has
   `lifetime.ttlSecondsAfterBound: --ttl` and `shutdownPolicy: Delete`, so its pod is
   deleted at the ttl and claimed pods do not pile up; the benchmark deletes each claim
   object once it is Released (a user cleaning up), so the claims do not pile up
   either. Latency = the claim's create request sent → its Bound status seen on a watch
   (the apiserver's `creationTimestamp` has whole seconds, which would add up to 999
   ms; the request is sent before the object exists, so this is an upper bound of the
   true time); a claim never seen Bound counts as infinitely slow. The
   `creationTimestamp` figures are reported too, and the operator's own histogram
   (`swarmops_claim_bind_duration_seconds`: first watch event of the claim in the
   operator → pod bound), the apiserver's writes by verb and resource, and the CPU each
   process used, over this phase only (`--profile DIR`: py-spy on the operator).

Double binds are counted from the pods: a pod ever seen carrying two claims (label or
controller ownerReference), and a pod named by two claims' status.

Prints one JSON object. Quick run:
    python bench/claims.py --pool-size 200 --rate 50 --duration 10 --ramp 50,100
Full run (the issue's figures): python bench/claims.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
import math
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from swarmops.kube.auth import load_connection_info
from swarmops.testbed.binaries import ensure_binaries, repository_root
from swarmops.testbed.cluster import TestBed, TestBedConfig
from swarmops.testbed.processes import free_port, wait_until

log = logging.getLogger("bench.claims")

POOL = "bench"
PODS_PER_NODE = 500
SUSTAINED_P99_MS = 500.0
SUSTAINED_SEND_RATIO = 0.95
GROUP, VERSION = "swarmops.dev", "v1alpha1"


# --- measurements ----------------------------------------------------------------------------


@dataclass
class ClaimRecord:
    sent: float  # perf_counter when the create request went out
    phase: str = "steady"
    created_ok: bool = False
    bound_seen: float | None = None  # perf_counter when the watch showed Bound
    bound_wall: float | None = None  # time.time() at the same moment
    creation_timestamp: float | None = None  # epoch seconds (whole seconds)
    warm_hit: bool | None = None
    pod: str | None = None
    failed: str | None = None
    deleted: bool = False

    @property
    def latency_ms(self) -> float | None:
        return None if self.bound_seen is None else (self.bound_seen - self.sent) * 1000

    @property
    def from_creation_ms(self) -> float | None:
        if self.bound_wall is None or self.creation_timestamp is None:
            return None
        return (self.bound_wall - self.creation_timestamp) * 1000


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: every figure is a measured one). An
    infinite value (a claim never seen Bound) at that rank gives None."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    value = ordered[rank - 1]
    return None if math.isinf(value) else round(value, 1)


def latency_summary(records: Iterable[ClaimRecord], prefix: str = "") -> dict[str, Any]:
    chosen = [r for r in records if r.created_ok]
    # A claim not (yet) Bound counts as infinitely slow, not as absent.
    latencies = [math.inf if r.latency_ms is None else r.latency_ms for r in chosen]
    creation = [r.from_creation_ms for r in chosen if r.from_creation_ms is not None]
    return {
        f"{prefix}claims": len(chosen),
        f"{prefix}bound": sum(r.latency_ms is not None for r in chosen),
        f"{prefix}claim_p50_ms": percentile(latencies, 50),
        f"{prefix}claim_p90_ms": percentile(latencies, 90),
        f"{prefix}claim_p99_ms": percentile(latencies, 99),
        f"{prefix}claim_max_ms": percentile(latencies, 100),
        f"{prefix}from_creation_timestamp_p50_ms": percentile(creation, 50),
        f"{prefix}from_creation_timestamp_p99_ms": percentile(creation, 99),
    }


class PeakRss(threading.Thread):
    """Samples a process's RSS until stopped; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.last = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                self.last = self.process.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, self.last)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


class CpuShare:
    """CPU seconds used by every process on the machine over an interval, by role: the
    test bed's components by name, the operator and this benchmark by pid, the rest as
    "other" (on a shared machine, other work competes for the same cores)."""

    COMPONENTS = ("kube-apiserver", "etcd", "kube-scheduler", "kube-controller-manager", "kwok")

    def __init__(self, operator_pid: int) -> None:
        self.operator_pid = operator_pid
        self.before: dict[int, tuple[str, float]] = {}
        self.started = 0.0

    def _snapshot(self) -> dict[int, tuple[str, float]]:
        found: dict[int, tuple[str, float]] = {}
        for process in psutil.process_iter(["pid", "name", "cpu_times"]):
            times = process.info.get("cpu_times")
            if times is None:
                continue
            found[process.info["pid"]] = (self._role(process.info), times.user + times.system)
        return found

    def _role(self, info: dict[str, Any]) -> str:
        if info["pid"] == self.operator_pid:
            return "operator"
        if info["pid"] == os.getpid():
            return "benchmark"
        name = str(info.get("name") or "")
        return next((c for c in self.COMPONENTS if name.startswith(c)), "other")

    def start(self) -> None:
        self.before = self._snapshot()
        self.started = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        after = self._snapshot()
        wall = time.perf_counter() - self.started
        used: dict[str, float] = defaultdict(float)
        for pid, (role, seconds) in after.items():
            used[role] += seconds - self.before.get(pid, (role, 0.0))[1]
        return {
            "wall_seconds": round(wall, 1),
            "cores_busy": {
                role: round(value / wall, 2)
                for role, value in sorted(used.items(), key=lambda kv: -kv[1])
            },
            "load_average_1m": round(os.getloadavg()[0], 2),
        }


# --- the API, the bench's own (aiohttp: creates and watches on one event loop) ---------------


class Api:
    def __init__(self, kubeconfig: Path) -> None:
        info = load_connection_info(kubeconfig, None, {})
        self.session = aiohttp.ClientSession(
            base_url=info.server.rstrip("/") + "/",
            connector=aiohttp.TCPConnector(ssl=info.ssl_context(), limit=0),
            headers=info.http_headers(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        async with self.session.request(
            method,
            path.lstrip("/"),
            json=body,
            params=params,
            timeout=aiohttp.ClientTimeout(total=60),
        ) as response:
            text = await response.text()
            try:
                payload = json.loads(text) if text else None
            except ValueError:
                payload = text
            return response.status, payload

    async def text(self, path: str) -> str:
        async with self.session.get(path.lstrip("/")) as response:
            return await response.text()

    async def watch(
        self,
        path: str,
        on_event: Callable[[str, dict[str, Any]], None],
        *,
        label_selector: str | None = None,
        stop: asyncio.Event,
    ) -> None:
        """List, then watch from the list's version, reconnecting, until `stop`."""
        params = {"labelSelector": label_selector} if label_selector else {}
        status, listing = await self.call("GET", path, params=params)
        if status != 200:
            raise RuntimeError(f"list {path}: {status} {listing}")
        for item in listing.get("items") or []:
            on_event("ADDED", item)
        version = listing["metadata"]["resourceVersion"]
        while not stop.is_set():
            query = {
                **params,
                "watch": "1",
                "resourceVersion": version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": "300",
            }
            try:
                async with self.session.get(
                    path.lstrip("/"), params=query, timeout=aiohttp.ClientTimeout(total=None)
                ) as response:
                    async for line in response.content:
                        if stop.is_set():
                            return
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        kind, body = event["type"], event["object"]
                        if kind == "ERROR":
                            raise RuntimeError(f"watch {path}: {body}")
                        version = body["metadata"]["resourceVersion"]
                        if kind != "BOOKMARK":
                            on_event(kind, body)
            except (TimeoutError, aiohttp.ClientError) as error:
                log.warning("watch %s broke (%s); resuming", path, error)


def claims_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/agentclaims"
    return base if name is None else f"{base}/{name}"


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def is_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


# --- the benchmark -----------------------------------------------------------------------------


@dataclass
class Observed:
    """Everything the watches saw."""

    claims: dict[str, ClaimRecord] = field(default_factory=dict)
    # Pod uid -> claims it was ever seen carrying (label or controller ownerReference).
    pod_claims: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # Pod name -> claims whose status named it.
    named_by: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # Claim -> uids of the pods seen carrying it.
    claim_pods: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    warm_ready: set[str] = field(default_factory=set)
    released: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    ready_changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_claim(self, kind: str, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        record = self.claims.get(name)
        if record is None:
            return
        if kind == "DELETED":
            record.deleted = True
            return
        status = body.get("status") or {}
        phase = status.get("phase")
        pod = status.get("podName")
        if pod:
            self.named_by[pod].add(name)
        if phase in ("Bound", "Released") and record.bound_seen is None:
            record.bound_seen = time.perf_counter()
            record.bound_wall = time.time()
            record.creation_timestamp = parse_time(body["metadata"].get("creationTimestamp"))
            record.warm_hit = status.get("warmHit")
            record.pod = pod
        if phase == "Failed" and record.failed is None:
            record.failed = next(
                (c.get("reason") for c in status.get("conditions") or [] if c["type"] == "Bound"),
                "Failed",
            )
        if phase in ("Released", "Failed"):
            self.released.put_nowait(name)

    def on_claimed_pod(self, kind: str, body: dict[str, Any]) -> None:
        metadata = body["metadata"]
        uid = metadata["uid"]
        seen = self.pod_claims[uid]
        label = (metadata.get("labels") or {}).get("swarmops.dev/claim")
        if label:
            seen.add(label)
            self.claim_pods[label].add(uid)
        for ref in metadata.get("ownerReferences") or []:
            if ref.get("kind") == "AgentClaim" and ref.get("controller"):
                seen.add(ref["name"])
                self.claim_pods[ref["name"]].add(uid)

    def on_pool_pod(self, kind: str, body: dict[str, Any]) -> None:
        metadata = body["metadata"]
        warm = (metadata.get("labels") or {}).get("swarmops.dev/state") == "warm"
        if kind != "DELETED" and warm and is_ready(body) and not metadata.get("deletionTimestamp"):
            self.warm_ready.add(metadata["uid"])
        else:
            self.warm_ready.discard(metadata["uid"])
        self.ready_changed.set()

    def double_binds(self) -> list[str]:
        """Pods bound to two claims: seen carrying two (by uid), or named by two claims'
        status. A name is not an identity: pods are named `<pool>-<5 random chars>`, and
        over thousands of pods a name comes back for a new pod after the old one is gone
        (a birthday collision); two claims naming one name are a double bind unless the
        pods watch saw them on two different pods (two uids)."""
        found = [
            f"pod {uid} carried {sorted(claims)}"
            for uid, claims in self.pod_claims.items()
            if len(claims) > 1
        ]
        for name, claims in self.named_by.items():
            if len(claims) < 2:
                continue
            uids = [self.claim_pods.get(claim, set()) for claim in claims]
            distinct = all(uids) and all(
                not (a & b) for i, a in enumerate(uids) for b in uids[i + 1 :]
            )
            if not distinct:
                found.append(f"pod name {name} named by {sorted(claims)}")
        return found


def pool_manifest(namespace: str, size: int, refill_rate: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentPool",
        "metadata": {"name": POOL, "namespace": namespace},
        "spec": {
            "replicas": 0,
            "warmPool": {"size": size, "refillRate": refill_rate},
            "template": {
                "spec": {
                    "nodeSelector": {"swarmops.dev/node-kind": "cpu"},
                    "containers": [{"name": "agent", "image": "swarmops/agent:bench"}],
                }
            },
        },
    }


def claim_manifest(name: str, ttl: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentClaim",
        "metadata": {"name": name},
        "spec": {
            "poolRef": {"name": POOL},
            "whenNoWarmPod": "ColdStart",
            "lifetime": {"ttlSecondsAfterBound": ttl, "shutdownPolicy": "Delete"},
        },
    }


class Bench:
    def __init__(self, api: Api, namespace: str, args: argparse.Namespace) -> None:
        self.api = api
        self.namespace = namespace
        self.args = args
        self.seen = Observed()
        self.stop = asyncio.Event()
        self.background: list[asyncio.Task[None]] = []
        self.create_errors: Counter[str] = Counter()

    def start_watches(self) -> None:
        ns = self.namespace
        self.background += [
            asyncio.create_task(
                self.api.watch(claims_path(ns), self.seen.on_claim, stop=self.stop)
            ),
            asyncio.create_task(
                self.api.watch(
                    pods_path(ns),
                    self.seen.on_claimed_pod,
                    label_selector=f"swarmops.dev/pool={POOL},swarmops.dev/state=claimed",
                    stop=self.stop,
                )
            ),
            asyncio.create_task(
                self.api.watch(
                    pods_path(ns),
                    self.seen.on_pool_pod,
                    label_selector=f"swarmops.dev/pool={POOL},swarmops.dev/state=warm",
                    stop=self.stop,
                )
            ),
            asyncio.create_task(self.delete_released()),
        ]

    async def delete_released(self) -> None:
        """Delete claims once Released or Failed: the records of finished sessions."""
        in_flight: set[asyncio.Task[Any]] = set()
        while not self.stop.is_set():
            name = await self.seen.released.get()
            while len(in_flight) >= 32:
                _, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.create_task(self.api.call("DELETE", claims_path(self.namespace, name)))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

    # --- phases ---

    async def fill(self) -> dict[str, Any]:
        size = self.args.pool_size
        started = time.perf_counter()
        status, body = await self.api.call(
            "POST",
            f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/agentpools",
            pool_manifest(self.namespace, size, self.args.refill_rate),
        )
        if status >= 300:
            raise RuntimeError(f"creating the pool: {status} {body}")
        created_wall = time.time()
        await self.wait_warm(size, within=max(120.0, size / 5))
        seconds = time.perf_counter() - started
        return {
            "fill_pods": size,
            "fill_seconds": round(seconds, 2),
            "fill_pods_per_s": round(size / seconds, 1),
            "refill_rate_setting": self.args.refill_rate,
            "fill_stages_last_s": await self.fill_stages(created_wall),
        }

    async def fill_stages(self, started_wall: float) -> dict[str, float | None]:
        """When the last pod was created, scheduled and Ready, in seconds after the pool
        was created (the apiserver's timestamps: whole seconds): which stage lags."""
        status, listing = await self.api.call(
            "GET", pods_path(self.namespace), params={"labelSelector": f"swarmops.dev/pool={POOL}"}
        )
        created, scheduled, ready = [], [], []
        for pod in listing.get("items") or [] if status == 200 else []:
            created.append(parse_time(pod["metadata"].get("creationTimestamp")))
            for condition in (pod.get("status") or {}).get("conditions") or []:
                moment = parse_time(condition.get("lastTransitionTime"))
                if condition.get("type") == "PodScheduled":
                    scheduled.append(moment)
                elif condition.get("type") == "Ready":
                    ready.append(moment)

        def last(values: list[float | None]) -> float | None:
            known = [v for v in values if v is not None]
            return round(max(known) - started_wall, 1) if known else None

        return {"created": last(created), "scheduled": last(scheduled), "ready": last(ready)}

    async def wait_warm(self, count: int, within: float) -> None:
        deadline = time.perf_counter() + within
        while len(self.seen.warm_ready) < count:
            self.seen.ready_changed.clear()
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(
                    f"only {len(self.seen.warm_ready)}/{count} warm pods Ready after {within}s"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.seen.ready_changed.wait(), timeout=left)

    async def send_claims(self, rate: float, seconds: float, label: str) -> dict[str, Any]:
        """Open loop: claim i goes out at start + i/rate. Returns the achieved send rate."""
        count = max(1, round(rate * seconds))
        started = time.perf_counter()
        tasks: list[asyncio.Task[None]] = []
        for index in range(count):
            due = started + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            name = f"{label}-{index:06d}"
            self.seen.claims[name] = ClaimRecord(sent=time.perf_counter(), phase=label)
            tasks.append(asyncio.create_task(self.create_claim(name)))
        sent_in = time.perf_counter() - started
        await asyncio.gather(*tasks)
        return {"target_rate": rate, "sent": count, "send_rate": round(count / sent_in, 1)}

    async def create_claim(self, name: str) -> None:
        try:
            status, body = await self.api.call(
                "POST", claims_path(self.namespace), claim_manifest(name, self.args.ttl)
            )
        except (TimeoutError, aiohttp.ClientError) as error:
            self.create_errors[type(error).__name__] += 1
            return
        if status >= 300:
            self.create_errors[str(status)] += 1
            log.warning("claim %s: %s %s", name, status, str(body)[:200])
        else:
            self.seen.claims[name].created_ok = True

    async def wait_bound(self, label: str, within: float) -> None:
        deadline = time.perf_counter() + within
        while time.perf_counter() < deadline:
            pending = [
                r
                for r in self.seen.claims.values()
                if r.phase == label and r.created_ok and r.bound_seen is None and not r.failed
            ]
            if not pending:
                return
            await asyncio.sleep(0.1)

    async def quiesce(self, size: int, within: float) -> float:
        """Until every claim sent so far is finished and deleted and the warm pool is full
        again (the next phase starts from a quiet system); returns the seconds waited."""
        started = time.perf_counter()
        deadline = started + within
        while time.perf_counter() < deadline:
            live = sum(1 for r in self.seen.claims.values() if r.created_ok and not r.deleted)
            if not live and len(self.seen.warm_ready) >= size:
                break
            await asyncio.sleep(0.5)
        return round(time.perf_counter() - started, 1)

    async def scrape(self, url: str) -> str:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return await response.text()


# --- /metrics parsing --------------------------------------------------------------------------

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    found = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match["name"] == name:
            labels = dict(_LABEL.findall(match["labels"] or ""))
            found.append((labels, float(match["value"])))
    return found


def histogram_quantiles(
    before: str, after: str, name: str, where: Callable[[dict[str, str]], bool]
) -> dict[str, Any]:
    """Quantiles of a Prometheus histogram over the interval between two scrapes,
    interpolated within buckets as PromQL's histogram_quantile does."""
    buckets: dict[float, float] = defaultdict(float)
    for text, sign in ((after, 1.0), (before, -1.0)):
        for labels, sample in samples(text, f"{name}_bucket"):
            if where(labels):
                buckets[float(labels["le"])] += sign * sample
    ordered = sorted(buckets.items())
    total = ordered[-1][1] if ordered else 0.0
    result: dict[str, Any] = {"count": int(total)}
    for q in (50, 90, 99):
        if total <= 0:
            result[f"p{q}_ms"] = None
            continue
        rank = q / 100 * total
        lower_bound, lower_count = 0.0, 0.0
        value: float | None = None
        for bound, count in ordered:
            if count >= rank:
                if math.isinf(bound):
                    value = lower_bound
                    result[f"p{q}_beyond_last_bucket"] = True
                else:
                    width = count - lower_count
                    share = (rank - lower_count) / width if width else 1.0
                    value = lower_bound + (bound - lower_bound) * share
                break
            lower_bound, lower_count = bound, count
        result[f"p{q}_ms"] = None if value is None else round(value * 1000, 1)
    return result


def counter_delta(before: str, after: str, name: str, key: str) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for text, sign in ((after, 1.0), (before, -1.0)):
        for labels, value in samples(text, name):
            totals[labels.get(key, "")] += sign * value
    return {k: v for k, v in totals.items() if v}


def request_mix(before: str, after: str) -> dict[str, int]:
    """apiserver_request_total over the interval, by verb and resource (all clients)."""
    totals: dict[str, float] = defaultdict(float)
    for text, sign in ((after, 1.0), (before, -1.0)):
        for labels, value in samples(text, "apiserver_request_total"):
            resource = labels.get("resource", "")
            if labels.get("subresource"):
                resource += "/" + labels["subresource"]
            if resource in ("leases", "") or labels.get("verb") in ("WATCH", "LIST", "GET"):
                continue
            totals[f"{labels.get('verb')} {resource}"] += sign * value
    return {k: int(v) for k, v in sorted(totals.items(), key=lambda kv: -kv[1]) if v >= 1}


# --- orchestration -----------------------------------------------------------------------------


def nodes_needed(args: argparse.Namespace) -> int:
    top_rate = float(max([args.rate, *args.ramp]) if not args.skip_ramp else args.rate)
    # Claimed pods live about ttl seconds (+ the delete's lag); warm pods stay.
    claimed = top_rate * (args.ttl + 3)
    needed: int = math.ceil((int(args.pool_size) + claimed) * 1.2 / PODS_PER_NODE)
    return max(3, needed)


def start_operator(
    kubeconfig: Path, namespace: str, log_path: Path, workers: int | None
) -> tuple[subprocess.Popen[bytes], str]:
    metrics, health = free_port(), free_port()
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
    if workers:
        command += ["--workers", str(workers)]
    with log_path.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{metrics}"

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited: see {log_path}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
                return int(response.status) == 200
        except OSError:
            return False

    wait_until(ready, timeout=60, what="the operator to be ready")
    return process, url


async def run_phases(
    kubeconfig: Path,
    namespace: str,
    metrics_url: str,
    operator_pid: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    operator = psutil.Process(operator_pid)
    api = Api(kubeconfig)
    bench = Bench(api, namespace, args)
    result: dict[str, Any] = {}
    try:
        bench.start_watches()
        await asyncio.sleep(0.5)  # the watches are listing
        log.info("fill: %d warm pods at refillRate %d", args.pool_size, args.refill_rate)
        result["operator_rss_mb_before_fill"] = round(operator.memory_info().rss / 2**20, 1)
        result |= await bench.fill()
        result["operator_rss_mb_after_fill"] = round(operator.memory_info().rss / 2**20, 1)
        log.info("fill: %s", {k: v for k, v in result.items() if k.startswith("fill")})

        # Ramp first, on a fresh system (a steady phase past capacity leaves minutes of
        # backlog behind): stepped rates until P99 passes 500 ms.
        steps: list[dict[str, Any]] = []
        sustained = 0.0
        if not args.skip_ramp:
            for rate in args.ramp:
                waited = await bench.quiesce(args.pool_size, within=600)
                log.info("quiet after %ss", waited)
                label = f"ramp{int(rate)}"
                log.info("ramp: %s claims/s for %ss", rate, args.step_seconds)
                sent = await bench.send_claims(rate, args.step_seconds, label)
                await bench.wait_bound(label, within=60)
                records = [r for r in bench.seen.claims.values() if r.phase == label]
                summary = latency_summary(records)
                all_bound = summary["bound"] == summary["claims"]
                p99 = summary["claim_p99_ms"]
                ok = (
                    all_bound
                    and p99 is not None
                    and p99 <= SUSTAINED_P99_MS
                    and sent["send_rate"] >= SUSTAINED_SEND_RATIO * rate
                )
                step = {
                    "rate": rate,
                    "send_rate": sent["send_rate"],
                    "claims": summary["claims"],
                    "bound": summary["bound"],
                    "p50_ms": summary["claim_p50_ms"],
                    "p99_ms": p99,
                    "warm_hits": sum(r.warm_hit is True for r in records),
                    "sustained": ok,
                }
                steps.append(step)
                log.info("ramp: %s", step)
                if ok:
                    sustained = rate
                elif len(steps) >= 2 and not steps[-2]["sustained"]:
                    break  # two failing steps in a row: past capacity for good
        result["max_sustained_claims_per_s"] = sustained
        result["ramp"] = steps
        if not args.skip_steady:
            waited = await bench.quiesce(args.pool_size, within=900)
            log.info("quiet after %ss", waited)
            result |= await steady_phase(bench, api, metrics_url, operator_pid, args)
        # Let the last ttls expire, so every claimed pod is looked at for double binds.
        await asyncio.sleep(min(args.ttl + 2, 10))
        doubles = bench.seen.double_binds()
        result["double_binds"] = len(doubles)
        result["double_binds_examples"] = doubles[:5]
        result["pod_names_reused"] = sum(
            1 for claims in bench.seen.named_by.values() if len(claims) > 1
        )
        result["claimed_pods_observed"] = len(bench.seen.pod_claims)
    finally:
        bench.stop.set()
        for task in bench.background:
            task.cancel()
        await asyncio.gather(*bench.background, return_exceptions=True)
        await api.close()
    return result


async def steady_phase(
    bench: Bench, api: Api, metrics_url: str, operator_pid: int, args: argparse.Namespace
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    # Steady: --rate claims a second for --duration seconds.
    operator_before = await bench.scrape(f"{metrics_url}/metrics")
    apiserver_before = await api.text("/metrics")
    cpu = CpuShare(operator_pid)
    cpu.start()
    profiler = start_profiler(operator_pid, args.profile)
    log.info("steady: %s claims/s for %ss", args.rate, args.duration)
    sent = await bench.send_claims(args.rate, args.duration, "steady")
    await bench.wait_bound("steady", within=600)
    result["steady_cpu"] = cpu.stop()
    if profiler is not None:
        result["profile"] = stop_profiler(profiler, args.profile)
    operator_after = await bench.scrape(f"{metrics_url}/metrics")
    apiserver_after = await api.text("/metrics")
    steady = [r for r in bench.seen.claims.values() if r.phase == "steady"]
    result |= latency_summary(steady)
    result |= {
        "steady_send_rate": sent["send_rate"],
        "warm_hits": sum(r.warm_hit is True for r in steady),
        "warm_misses": sum(r.warm_hit is False for r in steady),
        "failed": dict(Counter(r.failed for r in steady if r.failed)),
        "create_errors": dict(bench.create_errors),
    }
    name = "swarmops_claim_bind_duration_seconds"
    result["operator_bind_histogram_warm"] = histogram_quantiles(
        operator_before, operator_after, name, lambda labels: labels.get("warm") == "true"
    )
    result["operator_bind_histogram_all"] = histogram_quantiles(
        operator_before, operator_after, name, lambda labels: True
    )
    result["operator_reconcile_seconds_claims"] = histogram_quantiles(
        operator_before,
        operator_after,
        "swarmops_reconcile_duration_seconds",
        lambda labels: labels.get("kind") == "AgentClaim",
    )
    result["operator_pod_writes"] = counter_delta(
        operator_before, operator_after, "swarmops_pod_operations_total", "operation"
    )
    result["apiserver_writes_during_steady"] = request_mix(apiserver_before, apiserver_after)
    log.info(
        "steady: %s",
        {k: result[k] for k in ("claim_p50_ms", "claim_p90_ms", "claim_p99_ms", "warm_hits")},
    )

    return result


def start_profiler(pid: int, folder: Path | None) -> subprocess.Popen[bytes] | None:
    """py-spy (a sampling profiler, `pip install py-spy`) on the operator, if asked."""
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    py_spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "100",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(folder / "operator-steady.txt"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_profiler(profiler: subprocess.Popen[bytes], folder: Path | None) -> str:
    profiler.send_signal(2)  # SIGINT: py-spy writes its output and exits
    profiler.wait(30)
    return str(folder / "operator-steady.txt") if folder else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", type=Path, help="reuse this running test bed")
    parser.add_argument("--state", type=Path, help="test bed state folder (default: temporary)")
    parser.add_argument("--nodes", type=int, help="kwok CPU nodes (default: enough for the pods)")
    parser.add_argument("--pool-size", type=int, default=1000)
    parser.add_argument("--refill-rate", type=int, default=1000, help="warmPool.refillRate")
    parser.add_argument("--rate", type=float, default=100.0, help="steady claims a second")
    parser.add_argument("--duration", type=float, default=60.0, help="steady seconds")
    parser.add_argument("--ttl", type=int, default=5, help="claims' ttlSecondsAfterBound")
    parser.add_argument(
        "--ramp",
        type=lambda text: [float(part) for part in text.split(",") if part],
        default=[5.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0],
        help="ramp rates, comma-separated",
    )
    parser.add_argument("--step-seconds", type=float, default=15.0)
    parser.add_argument("--skip-ramp", action="store_true")
    parser.add_argument("--skip-steady", action="store_true")
    parser.add_argument("--workers", type=int, help="the operator's --workers")
    parser.add_argument("--keep", action="store_true", help="leave the namespace in place")
    parser.add_argument(
        "--profile", type=Path, help="py-spy the operator during the steady phase, into DIR"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )

    with contextlib.ExitStack() as stack:
        if args.kubeconfig is not None:
            kubeconfig = args.kubeconfig
            bed = None
            node_count = None
        else:
            state = args.state or Path(stack.enter_context(tempfile.TemporaryDirectory()))
            node_count = args.nodes or nodes_needed(args)
            config = TestBedConfig(cpu_nodes=node_count, gpu_products=(), process_node=False)
            bed = TestBed(state, config)
            log.info("starting a test bed with %d kwok CPU nodes in %s", node_count, state)
            bed.start()
            stack.callback(bed.stop)
            kubeconfig = bed.kubeconfig
            crds = repository_root() / "crds"
            bed.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
            bed.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(crds))
        kubectl = _kubectl(bed, kubeconfig)
        namespace = f"bench-claims-{secrets.token_hex(3)}"
        kubectl("create", "namespace", namespace)
        wait_until(
            lambda: (
                kubectl("get", "serviceaccount", "default", "-n", namespace, check=False).returncode
                == 0
            ),
            timeout=30,
            what="the namespace's default service account",
        )
        if not args.keep:
            stack.callback(
                lambda: kubectl("delete", "namespace", namespace, "--wait=false", check=False)
            )
        log_path = Path(tempfile.gettempdir()) / f"{namespace}-operator.log"
        process, metrics_url = start_operator(kubeconfig, namespace, log_path, args.workers)
        sampler = PeakRss(process.pid)
        sampler.start()

        def stop_operator() -> None:
            sampler.stop()
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()

        stack.callback(stop_operator)
        started = time.perf_counter()
        result = asyncio.run(run_phases(kubeconfig, namespace, metrics_url, process.pid, args))
        sampler.stop()
        cpu = psutil.Process(process.pid).cpu_times()
        result |= {
            "operator_peak_rss_mb": round(sampler.peak / 2**20, 1),
            "operator_final_rss_mb": round(sampler.last / 2**20, 1),
            "operator_cpu_seconds": round(cpu.user + cpu.system, 1),
            "run_seconds": round(time.perf_counter() - started, 1),
            "settings": {
                "pool_size": args.pool_size,
                "refill_rate": args.refill_rate,
                "rate": args.rate,
                "duration": args.duration,
                "ttl": args.ttl,
                "ramp": args.ramp,
                "step_seconds": args.step_seconds,
                "kwok_cpu_nodes": node_count,
                "workers": args.workers or "the operator's default",
            },
            "machine": {
                "cpus": os.cpu_count(),
                "processor": platform.processor() or platform.machine(),
                "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                "python": platform.python_version(),
            },
            "operator_log": str(log_path),
        }
    print(json.dumps(result, indent=2, sort_keys=False))
    return 0


def _kubectl(
    bed: TestBed | None, kubeconfig: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        if bed is not None:
            return bed.kubectl(*args, check=check)
        return subprocess.run(
            [str(ensure_binaries() / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
            check=check,
            capture_output=True,
            text=True,
        )

    return run


if __name__ == "__main__":
    sys.exit(main())
