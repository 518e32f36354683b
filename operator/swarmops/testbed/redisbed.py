"""RedisClusters on the test bed, for the end-to-end fault suite and the benchmark.

`apply_cluster` writes a RedisCluster whose pods land on the process node (the placement
is added here; the shipped example has none); the helpers read it back, find its pods'
addresses and its generated password, and run a `KeyWriter` in a thread of its own so
a synchronous test can keep writing while it injects faults.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

import yaml

from swarmops.core.rediscluster import names
from swarmops.testbed.procnode.nodespec import POD_PLACEMENT
from swarmops.testbed.redisload import KeyWriter, LoadReport

T = TypeVar("T")


class Kubectl(Protocol):
    """What these helpers need of a test bed: kubectl against it (`cluster.TestBed` is one)."""

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]: ...


def cluster_manifest(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """A RedisCluster placed on the process node (real redis-server processes)."""
    body: dict[str, Any] = {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "RedisCluster",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "shards": 3,
            "replicasPerShard": 1,
            "nodeSelector": dict(POD_PLACEMENT["nodeSelector"]),
            "tolerations": [dict(t) for t in POD_PLACEMENT["tolerations"]],
            **spec,
        },
    }
    return body


def apply_cluster(testbed: Kubectl, body: Mapping[str, Any]) -> None:
    testbed.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(dict(body)))


def get_cluster(testbed: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    result = testbed.kubectl("get", "rediscluster", name, "-n", namespace, "-o", "json")
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def condition(body: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for item in (body.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return None


def is_ready(body: Mapping[str, Any]) -> bool:
    ready = condition(body, "Ready")
    generation = (body.get("metadata") or {}).get("generation")
    status = body.get("status") or {}
    return (
        ready is not None
        and ready.get("status") == "True"
        and status.get("observedGeneration") == generation
    )


def wait_for(
    what: str, check: Callable[[], T | None], *, timeout: float, interval: float = 0.25
) -> T:
    """Poll until `check` returns something truthy (returned); fail with `what`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as error:  # a transient kubectl or Redis error: poll again
            last_error = error
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}") from last_error
        time.sleep(interval)


def wait_ready(
    testbed: Kubectl, namespace: str, name: str, *, timeout: float = 120
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = get_cluster(testbed, namespace, name)
        return body if is_ready(body) else None

    return wait_for(f"RedisCluster {name} to be Ready", check, timeout=timeout)


def pods(testbed: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    listing = json.loads(
        testbed.kubectl(
            "get", "pods", "-n", namespace, "-l", f"{names.CLUSTER_LABEL}={name}", "-o", "json"
        ).stdout
    )
    items: list[dict[str, Any]] = listing["items"]
    return items


def pod_ips(testbed: Kubectl, namespace: str, name: str) -> list[str]:
    return [
        pod["status"]["podIP"]
        for pod in pods(testbed, namespace, name)
        if (pod.get("status") or {}).get("podIP") and not pod["metadata"].get("deletionTimestamp")
    ]


def password(testbed: Kubectl, namespace: str, secret: str, key: str = "password") -> str:
    body = json.loads(
        testbed.kubectl("get", "secret", secret, "-n", namespace, "-o", "json").stdout
    )
    return base64.b64decode(body["data"][key]).decode()


def nodes_by_pod(body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {node["podName"]: node for node in (body.get("status") or {}).get("nodes") or []}


class BackgroundWriter:
    """A `KeyWriter` on an event loop of its own thread, driven from synchronous code."""

    def __init__(
        self,
        seeds: Callable[[], list[str]],
        secret: str | None,
        *,
        rate: float = 200,
        tls_ca: str | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="redis-writer", daemon=True
        )
        self._thread.start()
        self._seeds = seeds
        self._cached: list[str] = []
        self.writer = KeyWriter(self._current_seeds, secret, rate=rate, tls_ca=tls_ca)

    def _current_seeds(self) -> list[str]:
        # kubectl from inside the writer's loop would block it: seeds are refreshed by
        # the synchronous side (`refresh`) and read here.
        return list(self._cached)

    def refresh(self) -> None:
        self._cached = self._seeds()

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout)

    def seed(self, count: int) -> None:
        self.refresh()
        self._run(self.writer.seed(count))

    def start(self) -> None:
        self._loop.call_soon_threadsafe(self.writer.start)

    def stop_and_verify(self) -> LoadReport:
        self.refresh()
        self._run(self.writer.stop())
        return self._run(self.writer.verify(within=60))

    def close(self) -> None:
        try:
            self._run(self.writer.close(), timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
