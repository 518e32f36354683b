"""The agent runtime: what an agent image runs (`swarmops agent --handler module:function`)
and the small client API to hand it work. docs/agent-runtime.md describes the contract.

    from swarmops.agent import Priority, TaskQueue, connect, redis_config

    redis = await connect(redis_config(os.environ))
    queue = TaskQueue(redis, "workers")
    key = await queue.submit({"value": 7}, Priority.P0, idempotency_key="job-7")
    results = await queue.wait([key], seconds=30)

Names are loaded lazily, so the operator importing `swarmops.agent.contract` (and the
CLI) does not pay for the runtime's imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from swarmops.agent.config import AgentConfig, ConfigError, RedisConfig, redis_config
    from swarmops.agent.contract import Assignment, ClaimInfo, PodRole, claim_queue
    from swarmops.agent.queue import QueueStats, TaskQueue, TaskResult
    from swarmops.agent.redisconn import RedisClient, connect
    from swarmops.agent.scheduling import AgentState, Priority
    from swarmops.agent.status import alive_agents
    from swarmops.agent.worker import Agent, Retry, Task

_EXPORTS = {
    "AgentConfig": "config",
    "ConfigError": "config",
    "RedisConfig": "config",
    "redis_config": "config",
    "Assignment": "contract",
    "ClaimInfo": "contract",
    "PodRole": "contract",
    "claim_queue": "contract",
    "QueueStats": "queue",
    "TaskQueue": "queue",
    "TaskResult": "queue",
    "RedisClient": "redisconn",
    "connect": "redisconn",
    "AgentState": "scheduling",
    "Priority": "scheduling",
    "alive_agents": "status",
    "Agent": "worker",
    "Retry": "worker",
    "Task": "worker",
}

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentState",
    "Assignment",
    "ClaimInfo",
    "ConfigError",
    "PodRole",
    "Priority",
    "QueueStats",
    "RedisClient",
    "RedisConfig",
    "Retry",
    "Task",
    "TaskQueue",
    "TaskResult",
    "alive_agents",
    "claim_queue",
    "connect",
    "redis_config",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"swarmops.agent.{module}"), name)
