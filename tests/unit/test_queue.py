"""The coalescing work queue: one run per key at a time, bursts collapse, failures back off."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest

from swarmops.handlers.queue import WorkQueue


async def wait_for(predicate: Callable[[], bool]) -> None:
    """Poll a condition the queue's workers change, with a deadline."""
    async with asyncio.timeout(5.0):
        while not predicate():  # noqa: ASYNC110 - the workers set no event we could await
            await asyncio.sleep(0.001)


def test_a_burst_for_one_key_collapses_and_never_overlaps() -> None:
    async def scenario() -> tuple[Counter[str], int]:
        runs: Counter[str] = Counter()
        running: set[str] = set()
        overlaps = 0
        release = asyncio.Event()

        async def work(key: str) -> float | None:
            nonlocal overlaps
            if key in running:
                overlaps += 1
            running.add(key)
            runs[key] += 1
            await release.wait()
            running.discard(key)
            return None

        queue: WorkQueue[str] = WorkQueue(work, workers=4)
        queue.start()
        for _ in range(100):
            queue.add("pool-a")  # queued: all collapse into one run
        await wait_for(lambda: runs["pool-a"] == 1)
        for _ in range(100):
            queue.add("pool-a")  # while running: exactly one more run afterwards
        queue.add("pool-b")
        await wait_for(lambda: runs["pool-b"] == 1)
        release.set()
        await wait_for(lambda: runs["pool-a"] == 2)
        await queue.wait_idle()
        await queue.stop()
        return runs, overlaps

    runs, overlaps = asyncio.run(scenario())
    assert runs == Counter({"pool-a": 2, "pool-b": 1})
    assert overlaps == 0


def test_failures_retry_until_success() -> None:
    async def scenario() -> int:
        attempts = 0

        async def work(key: str) -> float | None:
            nonlocal attempts
            attempts += 1
            if attempts < 4:
                raise RuntimeError("apiserver unavailable")
            return None

        queue: WorkQueue[str] = WorkQueue(work, workers=1, min_backoff=0.001, max_backoff=0.002)
        queue.start()
        queue.add("pool")
        await wait_for(lambda: attempts == 4)
        await queue.wait_idle()
        await queue.stop()
        return attempts

    assert asyncio.run(scenario()) == 4


def test_backoff_doubles_and_is_capped() -> None:
    async def work(key: str) -> float | None:
        return None

    queue: WorkQueue[str] = WorkQueue(work, min_backoff=0.5, max_backoff=3.0)
    assert [queue.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_requested_resync_runs_later_and_an_event_runs_it_sooner() -> None:
    async def scenario() -> int:
        runs = 0

        async def work(key: str) -> float | None:
            nonlocal runs
            runs += 1
            return 3600.0  # resync in an hour

        queue: WorkQueue[str] = WorkQueue(work, workers=1)
        queue.start()
        queue.add("pool")
        await wait_for(lambda: runs == 1)
        queue.add("pool")  # an event does not wait for the resync timer
        await wait_for(lambda: runs == 2)
        queue.forget("pool")
        await queue.stop()
        return runs

    assert asyncio.run(scenario()) == 2


def test_add_after_keeps_the_earliest_deadline() -> None:
    async def scenario() -> int:
        runs = 0

        async def work(key: str) -> float | None:
            nonlocal runs
            runs += 1
            return None

        queue: WorkQueue[str] = WorkQueue(work, workers=1)
        queue.start()
        queue.add_after("pool", 0.01)
        queue.add_after("pool", 3600)  # later: does not push the earlier one back
        await wait_for(lambda: runs == 1)
        await queue.stop()
        return runs

    assert asyncio.run(scenario()) == 1


def test_stop_cancels_running_work() -> None:
    async def scenario() -> bool:
        cancelled = False
        started = asyncio.Event()

        async def work(key: str) -> float | None:
            nonlocal cancelled
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled = True
                raise
            return None

        queue: WorkQueue[str] = WorkQueue(work, workers=2)
        queue.start()
        queue.add("pool")
        await started.wait()
        await queue.stop()
        assert not queue.started
        return cancelled

    assert asyncio.run(scenario())


@pytest.mark.parametrize("workers", [1, 3])
def test_many_keys_are_all_reconciled(workers: int) -> None:
    async def scenario() -> set[int]:
        done: set[int] = set()

        async def work(key: int) -> float | None:
            await asyncio.sleep(0)
            done.add(key)
            return None

        queue: WorkQueue[int] = WorkQueue(work, workers=workers)
        queue.start()
        for key in range(50):
            queue.add(key)
        await wait_for(lambda: len(done) == 50)
        await queue.wait_idle()
        await queue.stop()
        return done

    assert asyncio.run(scenario()) == set(range(50))
