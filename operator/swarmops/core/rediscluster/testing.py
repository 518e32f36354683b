"""Builders of simulated Redis Cluster snapshots, for tests of the plan.

A `SimNode` is one Redis node and its pod. `observation` renders every reachable node's
``CLUSTER NODES`` text (so the parser is exercised too) and the pods Kubernetes would
list, and `cluster` builds the RedisCluster they belong to.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from swarmops.api.rediscluster import RedisCluster
from swarmops.core.rediscluster import names
from swarmops.core.rediscluster.observed import NodeView, Observation, RedisPod, ShardSet
from swarmops.core.rediscluster.slots import SlotRange, even_split
from swarmops.core.rediscluster.topology import parse_nodes

NAME = "rc"
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def node_id(label: str) -> str:
    """A stable 40-hex node ID for a readable label."""
    return hashlib.sha1(label.encode()).hexdigest()


@dataclass
class SimNode:
    shard: int
    ordinal: int
    id: str = ""
    role: str = "master"  # master | replica
    master: str | None = None
    slots: tuple[SlotRange, ...] = ()
    epoch: int = 1
    keys: int = 0
    migrating: dict[int, str] = field(default_factory=dict)
    importing: dict[int, str] = field(default_factory=dict)
    reachable: bool = True  # answers the operator
    flagged: str | None = None  # how peers flag it: "fail", "fail?" or None
    pod: bool = True  # its pod exists
    running: bool = True
    terminating: bool = False
    ready: bool = True
    link_up: bool = True
    offset: int = 1000
    revision: str = "r1"
    ip: str = ""
    seen_at: str | None = None  # the address peers know it by, when stale
    state: str = "ok"  # cluster_state it reports

    def __post_init__(self) -> None:
        if not self.id:
            self.id = node_id(f"{self.shard}-{self.ordinal}")
        if not self.ip:
            self.ip = f"10.0.{self.shard}.{self.ordinal + 10}"

    @property
    def pod_name(self) -> str:
        return names.pod_name(NAME, self.shard, self.ordinal)

    def line(self, *, myself: bool, flag: str | None) -> str:
        flags = ["myself"] if myself else []
        flags.append("master" if self.role == "master" else "slave")
        if flag and not myself:
            flags.append(flag)
        address = self.ip if myself or self.seen_at is None else self.seen_at
        tokens = [str(r) for r in self.slots]
        if myself:
            tokens += [f"[{s}->-{peer}]" for s, peer in sorted(self.migrating.items())]
            tokens += [f"[{s}-<-{peer}]" for s, peer in sorted(self.importing.items())]
        return " ".join(
            [
                self.id,
                f"{address}:6379@16379",
                ",".join(flags),
                self.master or "-",
                "0",
                "0",
                str(self.epoch),
                "connected" if myself or not flag else "disconnected",
                *tokens,
            ]
        )


def healthy(shards: int = 3, replicas: int = 1, *, keys: int = 10) -> list[SimNode]:
    """A formed cluster: the even split on ordinal 0 of each shard, replicas following."""
    nodes = []
    for shard, share in enumerate(even_split(shards)):
        master = SimNode(shard, 0, slots=(share,), keys=keys, epoch=shard + 1)
        nodes.append(master)
        for ordinal in range(1, replicas + 1):
            nodes.append(
                SimNode(
                    shard, ordinal, role="replica", master=master.id, keys=keys, epoch=shard + 1
                )
            )
    return nodes


def blank(shards: int = 3, replicas: int = 1) -> list[SimNode]:
    """Fresh pods: empty masters that know only themselves (see `observation(alone=...)`)."""
    return [SimNode(s, o, epoch=0) for s in range(shards) for o in range(replicas + 1)]


def find(nodes: Iterable[SimNode], shard: int, ordinal: int) -> SimNode:
    return next(n for n in nodes if n.shard == shard and n.ordinal == ordinal)


def observation(
    nodes: Sequence[SimNode],
    *,
    alone: bool = False,
    unknown_to: Mapping[str, Iterable[str]] | None = None,
    revisions: Mapping[int, str] | None = None,
    sizes: Mapping[int, int] | None = None,
    recorded: Mapping[str, str] | None = None,
    ghosts: Sequence[SimNode] = (),
) -> Observation:
    """What the operator would observe. `alone`: every node knows only itself;
    `unknown_to`: node ID -> pod names whose views lack it; `ghosts`: nodes peers still
    list that no pod runs any more."""
    hidden = {k: set(v) for k, v in (unknown_to or {}).items()}
    views: dict[str, NodeView] = {}
    everyone = [*nodes, *ghosts]
    for viewer in nodes:
        if not viewer.reachable or not viewer.pod or not viewer.running:
            continue
        lines = [viewer.line(myself=True, flag=None)]
        if not alone:
            for other in everyone:
                if other is viewer or viewer.pod_name in hidden.get(other.id, set()):
                    continue
                lines.append(other.line(myself=False, flag=other.flagged))
        views[viewer.pod_name] = NodeView(
            pod=viewer.pod_name,
            nodes=parse_nodes("\n".join(lines)),
            cluster_state=viewer.state,
            keys=viewer.keys,
            master_link_up=viewer.link_up if viewer.role == "replica" else None,
            replication_offset=viewer.offset,
        )
    pods = [
        RedisPod(
            name=n.pod_name,
            uid=f"uid-{n.pod_name}",
            shard=n.shard,
            ordinal=n.ordinal,
            ip=n.ip if n.running else None,
            running=n.running,
            ready=n.ready and n.running and n.reachable,
            terminating=n.terminating,
            revision=n.revision,
        )
        for n in nodes
        if n.pod
    ]
    shard_ids = sorted({n.shard for n in nodes})
    counts = {s: sum(1 for n in nodes if n.shard == s and n.pod) for s in shard_ids}
    sets = {
        s: ShardSet(s, (sizes or {}).get(s, counts[s]), (revisions or {}).get(s, "r1"))
        for s in shard_ids
    }
    return Observation(
        cluster=NAME,
        pods=pods,
        views=views,
        statefulsets=sets,
        recorded=dict(recorded or {}),
    )


def cluster(
    shards: int = 3,
    replicas: int = 1,
    *,
    bootstrapped: bool = True,
    persistence: bool = False,
    status: Mapping[str, Any] | None = None,
    **spec: Any,
) -> RedisCluster:
    body: dict[str, Any] = {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "RedisCluster",
        "metadata": {"name": NAME, "namespace": "team", "uid": "uid-rc", "generation": 2},
        "spec": {"shards": shards, "replicasPerShard": replicas, **spec},
        "status": dict(status or {}),
    }
    if persistence:
        body["spec"]["persistence"] = {"size": "1Gi"}
    if bootstrapped:
        body["status"].setdefault("bootstrappedAt", T0.isoformat())
    return RedisCluster.from_body(body)
