"""Load for Redis fault tests and benchmarks: seeded keys and a continuous writer, and the
count of keys lost.

Every key is written once with a known value through redis-py's cluster client (which
follows MOVED and ASK as real clients do). A write counts as acknowledged when Redis
answered OK; at the end every acknowledged key must read back with its value. Seeded
keys are also waited on until every replica has them, so losing one is never excused
by asynchronous replication.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff

# redis-py's cluster client can raise AttributeError from inside while the topology
# changes under it (a node it cached is gone); for a writer that is one more failed write.
CLIENT_ERRORS = (
    AttributeError,
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
    OSError,
    TimeoutError,
    IndexError,
    KeyError,
)


@dataclass
class LoadReport:
    seeded: int = 0
    written: int = 0  # acknowledged by the continuous writer
    write_errors: int = 0
    lost_seeded: list[str] = field(default_factory=list)
    lost_written: list[str] = field(default_factory=list)

    @property
    def keys_lost(self) -> int:
        return len(self.lost_seeded) + len(self.lost_written)

    def summary(self) -> dict[str, Any]:
        return {
            "seeded": self.seeded,
            "written": self.written,
            "write_errors": self.write_errors,
            "lost_seeded": len(self.lost_seeded),
            "lost_written": len(self.lost_written),
            "examples": (self.lost_seeded + self.lost_written)[:5],
        }


class KeyWriter:
    """Seeds keys and writes new ones continuously; knows what Redis acknowledged."""

    def __init__(
        self,
        seeds: Callable[[], Sequence[str]],
        password: str | None,
        *,
        prefix: str = "key",
        rate: float = 200.0,
        port: int = 6379,
        tls_ca: str | None = None,
    ) -> None:
        self._seeds = seeds
        self._password = password
        self._prefix = prefix
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._port = port
        # TLS: the CA's PEM; nodes are reached by IP, so their names are not checked.
        self._tls: dict[str, Any] = (
            {"ssl": True, "ssl_ca_data": tls_ca, "ssl_check_hostname": False} if tls_ca else {}
        )
        self._client: RedisCluster | None = None
        self._counter = 0
        self.seeded: dict[str, str] = {}
        self.acked: dict[str, str] = {}
        self.errors = 0
        self.error_times: list[float] = []  # time.monotonic() of each failed write
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _cluster(self) -> RedisCluster:
        if self._client is None:
            nodes = [ClusterNode(ip, self._port) for ip in self._seeds()]
            client = RedisCluster(
                startup_nodes=nodes,
                password=self._password,
                socket_timeout=2,
                socket_connect_timeout=1,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
                require_full_coverage=False,
                **self._tls,
            )
            await client.initialize()
            self._client = client
        return self._client

    async def _reset(self) -> None:
        if self._client is not None:
            with contextlib.suppress(*CLIENT_ERRORS):
                await self._client.aclose()
        self._client = None

    def _next(self) -> tuple[str, str]:
        self._counter += 1
        return f"{self._prefix}:{self._counter}", f"value-{self._counter}"

    async def seed(self, count: int, *, within: float = 60.0) -> None:
        """Write `count` keys (retrying until each is acknowledged), then wait until every
        replica has them."""
        deadline = time.monotonic() + within
        pending = [self._next() for _ in range(count)]
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} seed keys not written in {within:.0f}s")
            try:
                client = await self._cluster()
                async with client.pipeline() as pipe:
                    for key, value in pending[:500]:
                        pipe.set(key, value)
                    await pipe.execute()
                for key, value in pending[:500]:
                    self.seeded[key] = value
                pending = pending[500:]
            except CLIENT_ERRORS:
                await self._reset()
                await asyncio.sleep(0.2)
        await self.wait_replicated(within=max(1.0, deadline - time.monotonic()))

    async def wait_replicated(self, *, within: float = 30.0) -> None:
        """Until every replica's offset reaches its master's, as read now."""
        deadline = time.monotonic() + within
        while True:
            if await self._replicated():
                return
            if time.monotonic() > deadline:
                raise TimeoutError("replicas did not catch up with their masters")
            await asyncio.sleep(0.1)

    async def _replicated(self) -> bool:
        for ip in self._seeds():
            node = aioredis.Redis(
                host=ip,
                port=self._port,
                password=self._password,
                socket_timeout=2,
                socket_connect_timeout=1,
                retry=Retry(NoBackoff(), 0),
                **self._tls,
            )
            try:
                info = await node.info("replication")
            except CLIENT_ERRORS:
                return False
            finally:
                await node.aclose()
            if info.get("role") != "master":
                continue
            offset = int(info.get("master_repl_offset", 0))
            for key, value in info.items():
                behind = isinstance(value, dict) and int(value.get("offset", 0)) < offset
                if key.startswith("slave") and behind:
                    return False
        return True

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="redis-writer")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        failures_in_a_row = 0
        while not self._stop.is_set():
            key, value = self._next()
            try:
                client = await self._cluster()
                if await client.set(key, value):
                    self.acked[key] = value
                failures_in_a_row = 0
            except CLIENT_ERRORS:
                self.errors += 1
                self.error_times.append(time.monotonic())
                failures_in_a_row += 1
                if failures_in_a_row >= 3:
                    # A client whose every seed moved away never recovers: start afresh
                    # from the pods' current addresses.
                    await self._reset()
                await asyncio.sleep(0.05)
            if self._interval:
                await asyncio.sleep(self._interval)

    async def verify(self, *, within: float = 30.0) -> LoadReport:
        """Read back every acknowledged key (retrying while the cluster settles)."""
        report = LoadReport(
            seeded=len(self.seeded), written=len(self.acked), write_errors=self.errors
        )
        deadline = time.monotonic() + within
        for expected, lost in (
            (self.seeded, report.lost_seeded),
            (self.acked, report.lost_written),
        ):
            keys = sorted(expected)
            while True:
                try:
                    missing = await self._missing(keys, expected)
                    break
                except CLIENT_ERRORS:
                    if time.monotonic() > deadline:
                        raise
                    await self._reset()
                    await asyncio.sleep(0.2)
            lost.extend(missing)
        return report

    async def _missing(self, keys: list[str], expected: dict[str, str]) -> list[str]:
        client = await self._cluster()
        missing = []
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            async with client.pipeline() as pipe:
                for key in chunk:
                    pipe.get(key)
                values = await pipe.execute()
            for key, value in zip(chunk, values, strict=True):
                if value is None or value.decode() != expected[key]:
                    missing.append(key)
        return missing

    async def close(self) -> None:
        await self.stop()
        await self._reset()
