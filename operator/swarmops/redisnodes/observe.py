"""Ask every Redis pod, at once, what it knows: one pipelined round trip per node."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import redis.exceptions

from swarmops.core.rediscluster.observed import NodeView, RedisPod
from swarmops.core.rediscluster.topology import TopologyError, parse_info, parse_nodes
from swarmops.redisnodes.connections import NodeConnections

#: Errors that mean "this node cannot tell us now"; anything else is a bug.
NODE_ERRORS = (redis.exceptions.RedisError, OSError, TimeoutError, TopologyError)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _info(value: object) -> dict[str, str]:
    """INFO as a flat dict of strings: redis-py parses INFO replies itself (into typed
    values); other paths hand back the raw text."""
    if isinstance(value, dict):
        return {str(key): str(item) for key, item in value.items()}
    return parse_info(_text(value))


async def observe_node(connections: NodeConnections, pod: RedisPod) -> NodeView:
    if not pod.ip:
        raise ConnectionError("the pod has no IP yet")
    client = connections.client(pod.ip)
    async with client.pipeline(transaction=False) as pipe:
        pipe.execute_command("CLUSTER", "NODES")
        pipe.execute_command("CLUSTER", "INFO")
        pipe.execute_command("DBSIZE")
        pipe.execute_command("INFO", "replication")
        pipe.execute_command("INFO", "persistence")
        nodes, info, keys, replication, persistence = await pipe.execute()
    replication_info = _info(replication)
    persistence_info = _info(persistence)
    role = replication_info.get("role")
    link = replication_info.get("master_link_status")
    offset_key = "slave_repl_offset" if role == "slave" else "master_repl_offset"
    return NodeView(
        pod=pod.name,
        nodes=parse_nodes(_text(nodes)),
        cluster_state=parse_info(_text(info)).get("cluster_state", "fail"),
        keys=int(keys),
        loading=persistence_info.get("loading") == "1",
        master_link_up=(link == "up") if role == "slave" else None,
        replication_offset=int(replication_info.get(offset_key, "0") or 0),
    )


async def observe_nodes(
    connections: NodeConnections, pods: Sequence[RedisPod]
) -> tuple[dict[str, NodeView], dict[str, str]]:
    """Views of the pods that answer, and why the others did not."""
    # Terminating pods too: a master in its grace period can still hand over cleanly.
    candidates = [pod for pod in pods if pod.ip and pod.running]
    results = await asyncio.gather(
        *(observe_node(connections, pod) for pod in candidates), return_exceptions=True
    )
    views: dict[str, NodeView] = {}
    unreachable: dict[str, str] = {}
    for pod, result in zip(candidates, results, strict=True):
        if isinstance(result, NodeView):
            views[pod.name] = result
        elif isinstance(result, NODE_ERRORS):
            unreachable[pod.name] = f"{type(result).__name__}: {result}"
        else:
            raise result
    for pod in pods:
        if pod.name not in views and pod.name not in unreachable:
            unreachable[pod.name] = "not running" if pod.ip else "no IP yet"
    return views, unreachable
