"""Sample handlers shipped with the runtime, for the examples, the tests and benchmarks.

    swarmops agent --handler swarmops.agent.examples:echo
    swarmops agent --handler swarmops.agent.examples:work \\
        --warmup swarmops.agent.examples:warmup --on-claim swarmops.agent.examples:greet
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from swarmops.agent.contract import ClaimInfo
from swarmops.agent.worker import Retry, Task

logger = logging.getLogger("swarmops.agent.examples")


def echo(task: Task) -> dict[str, Any]:
    """Return the payload as it came, with who answered (a plain function: runs in a
    worker thread)."""
    return {"echo": task.payload, "agent": task.agent}


def executions_key(task: Task) -> str:
    return f"{task.queue_keys.tag}:executions"


async def work(task: Task) -> dict[str, Any]:
    """A deterministic workload: payload `{"value": n, "sleep": seconds, "fail": bool,
    "retry_until": k}` (raise Retry until the task's k-th delivery).

    Returns `{"value": n, "square": n*n}` after sleeping. It counts every execution in
    the hash `swarmops:{<queue>}:executions` (field: the idempotency key), which is not
    the effect but a witness: a task reclaimed from a killed agent runs twice there,
    while its result (the effect) exists once.
    """
    payload = task.payload if isinstance(task.payload, dict) else {"value": task.payload}
    if task.redis is not None:
        await task.redis.hincrby(executions_key(task), task.key, 1)
    seconds = float(payload.get("sleep") or 0)
    if seconds:
        await asyncio.sleep(seconds)
    if task.deliveries < int(payload.get("retry_until") or 0):
        raise Retry(f"delivery {task.deliveries}: asked to retry")
    if payload.get("fail"):
        raise ValueError(f"asked to fail: {task.key}")
    value = int(payload.get("value") or 0)
    return {"value": value, "square": value * value, "agent": task.agent}


def warmup() -> None:
    """Stand in for loading a model: sleeps SWARMOPS_EXAMPLE_WARMUP_SECONDS (default 0)."""
    seconds = float(os.environ.get("SWARMOPS_EXAMPLE_WARMUP_SECONDS") or 0)
    if seconds:
        logger.info("loading (%.1f s)", seconds)
        time.sleep(seconds)


def greet(claim: ClaimInfo) -> None:
    logger.info(
        "dedicated to claim %s/%s with parameters %s", claim.namespace, claim.name, claim.parameters
    )
