"""A Redis client from the agent's RedisConfig: one server or a Redis Cluster.

`connect` asks the server whether it is a cluster node (INFO cluster) unless told, so
the same SWARMOPS_REDIS_URL works for a single redis-server in development and for a
RedisCluster's client Service in production. Commands retry briefly on connection
errors: a failover in the cluster takes a few seconds, and the worker loop backs off
on its own beyond that.
"""

from __future__ import annotations

import ssl
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from swarmops.agent.config import RedisConfig

CONNECT_TIMEOUT = 2.0
# Above the longest blocking read (block_seconds is at most 60 s) plus slack.
SOCKET_TIMEOUT = 65.0

RedisClient = aioredis.Redis | RedisCluster


def _options(config: RedisConfig) -> dict[str, Any]:
    options: dict[str, Any] = {
        "password": config.password,
        "decode_responses": True,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
    }
    if config.username:
        options["username"] = config.username
    if config.url.startswith("rediss://"):
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        if config.ca_file:
            options["ssl_ca_certs"] = config.ca_file
    return options


async def connect(config: RedisConfig, *, client_name: str = "swarmops-agent") -> RedisClient:
    options = _options(config)
    cluster = config.cluster
    if cluster is None:
        probe = aioredis.Redis.from_url(config.url, **options)
        try:
            info = await probe.info("cluster")
        finally:
            await probe.aclose()
        cluster = bool(int(info.get("cluster_enabled", 0)))
    if cluster:
        return RedisCluster.from_url(
            config.url, retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 6), **options
        )
    return aioredis.Redis.from_url(
        config.url,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        client_name=client_name,
        **options,
    )
