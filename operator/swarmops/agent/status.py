"""Who is alive: read the agents' heartbeats of a queue (pool) from Redis."""

from __future__ import annotations

from swarmops.agent.keys import QueueKeys
from swarmops.agent.queue import now_ms
from swarmops.agent.redisconn import RedisClient


async def alive_agents(redis: RedisClient, queue: str) -> dict[str, dict[str, str]]:
    """Agents of `queue` whose heartbeat has not expired, with what they last reported
    (state idle/busy/draining, role, claim, current task, tasks done)."""
    keys = QueueKeys(queue)
    names = [str(n) for n in await redis.zrangebyscore(keys.agents, now_ms(), "+inf")]
    if not names:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.agent(name))
        beats = await pipe.execute()
    return {
        name: {str(k): str(v) for k, v in beat.items()}
        for name, beat in zip(names, beats, strict=True)
        if beat
    }
