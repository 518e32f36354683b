"""A coalescing work queue: level-triggered reconciles, one at a time per key.

Watch events only say "this key may need work". Any number of them while a key is
queued collapse into one reconcile; one arriving while the key is being reconciled
queues exactly one more run after it. Reconciles of different keys run concurrently
on a fixed number of workers. Failures retry with exponential backoff; success may
ask for a later re-run (periodic resync, or an expectation's deadline).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

K = TypeVar("K")

# Called with a key; returns seconds until the key should be looked at again (None: only on
# the next event). Raising schedules a retry with backoff.
Work = Callable[[K], Awaitable[float | None]]


class WorkQueue(Generic[K]):
    def __init__(
        self,
        work: Work[K],
        *,
        workers: int = 8,
        min_backoff: float = 0.5,
        max_backoff: float = 60.0,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self._work = work
        self._workers = workers
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._on_depth = on_depth
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._running: set[K] = set()
        self._rerun: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"swarmops-worker-{index}")
            for index in range(self._workers)
        ]

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    @property
    def started(self) -> bool:
        return bool(self._tasks) and not all(task.done() for task in self._tasks)

    def add(self, key: K) -> None:
        """Ask for a reconcile of `key` as soon as possible."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._running:
            self._rerun.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)
            self._idle.clear()
            self._report_depth()

    def add_after(self, key: K, delay: float) -> None:
        """Ask for a reconcile of `key` in `delay` seconds, unless one comes sooner."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        existing = self._timers.get(key)
        if existing is not None and existing.when() <= loop.time() + delay:
            return
        if existing is not None:
            existing.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def forget(self, key: K) -> None:
        """Drop scheduled re-runs and backoff state of a key whose object is gone."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._failures.pop(key, None)

    async def wait_idle(self) -> None:
        """Until nothing is queued or running (timers may still be pending)."""
        await self._idle.wait()

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the n-th failure in a row: doubling, capped."""
        return float(min(self._max_backoff, self._min_backoff * 2 ** (failures - 1)))

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def _report_depth(self) -> None:
        if self._on_depth is not None:
            self._on_depth(len(self._queued))

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._running.add(key)
            self._report_depth()
            try:
                delay = await self._work(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                backoff = self.backoff(failures)
                logger.exception(
                    "Reconcile of %s failed (attempt %d); retrying in %.1fs", key, failures, backoff
                )
                delay = backoff
            else:
                self._failures.pop(key, None)
            finally:
                self._running.discard(key)
                self._queue.task_done()
            if key in self._rerun:
                self._rerun.discard(key)
                self.add(key)
            elif delay is not None:
                self.add_after(key, delay)
            if not self._queued and not self._running:
                self._idle.set()
