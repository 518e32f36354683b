"""The cluster as observed: the Redis pods from Kubernetes, each reachable node's own view,
and one consolidated picture (who owns which slot, who follows whom) that the plan reads.

Node IDs are the identity; pod IPs only say where to reach a node now. A pod is tied to a
node ID by asking the node itself (``myself``), never by matching addresses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from swarmops.core.rediscluster.names import parse_pod_name
from swarmops.core.rediscluster.slots import SLOT_COUNT, SlotRange, expand, to_ranges
from swarmops.core.rediscluster.topology import NodeEntry


@dataclass(frozen=True, slots=True)
class RedisPod:
    """A Redis pod as Kubernetes reports it."""

    name: str
    uid: str
    shard: int
    ordinal: int
    ip: str | None
    running: bool  # the redis container runs (its process is alive)
    ready: bool
    terminating: bool
    revision: str | None  # controller-revision-hash: which StatefulSet revision it runs
    role_label: str | None = None  # the swarmops.dev/redis-role label it carries now


@dataclass(frozen=True)
class NodeView:
    """What one reachable Redis node says about itself and the cluster."""

    pod: str
    nodes: Mapping[str, NodeEntry]
    cluster_state: str
    keys: int
    loading: bool = False
    master_link_up: bool | None = None  # replicas: the replication link to the master
    replication_offset: int = 0

    @cached_property
    def myself(self) -> NodeEntry:
        return next(entry for entry in self.nodes.values() if entry.myself)

    @property
    def node_id(self) -> str:
        return self.myself.node_id


@dataclass(frozen=True, slots=True)
class ShardSet:
    """A shard's StatefulSet as observed: its size and the revision pods should run."""

    shard: int
    replicas: int
    update_revision: str | None


@dataclass(frozen=True)
class Observation:
    """Everything one reconcile saw, at one moment."""

    cluster: str  # the RedisCluster's name
    pods: Sequence[RedisPod]
    views: Mapping[str, NodeView]  # by pod name, reachable nodes only
    unreachable: Mapping[str, str] = field(default_factory=dict)  # pod name -> why
    statefulsets: Mapping[int, ShardSet] = field(default_factory=dict)
    # Node ID -> pod, as the last status recorded it: places nodes we cannot reach now.
    recorded: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OpenSlot:
    """A slot some node marks migrating or importing."""

    slot: int
    owner: str | None
    migrating: Mapping[str, str]  # node -> destination it migrates to
    importing: Mapping[str, str]  # node -> source it imports from


class ClusterPicture:
    """The consolidated cluster: one answer to "who is node X, who owns slot n".

    Built from the reachable nodes' views; where they disagree, a node's own word about
    itself wins for its role, master and open slots, and the claim with the highest
    config epoch wins a slot (as Redis itself settles it).
    """

    def __init__(self, observation: Observation) -> None:
        self.observation = observation
        self.pods: dict[str, RedisPod] = {pod.name: pod for pod in observation.pods}
        self.views = {
            name: view
            for name, view in observation.views.items()
            if name in self.pods and not view.loading
        }
        self.node_of_pod: dict[str, str] = {name: view.node_id for name, view in self.views.items()}
        self.pod_of_node: dict[str, str] = {}
        for name, node_id in sorted(self.node_of_pod.items()):
            self.pod_of_node.setdefault(node_id, name)
        self.entries = self._merge_entries()
        self.owners = self._slot_owners()

    # --- nodes ------------------------------------------------------------------------------

    def _merge_entries(self) -> dict[str, NodeEntry]:
        merged: dict[str, NodeEntry] = {}
        for name in sorted(self.views):
            for node_id, entry in self.views[name].nodes.items():
                if node_id in self.pod_of_node:
                    continue  # its own word is taken below
                merged.setdefault(node_id, entry)
        for node_id, name in self.pod_of_node.items():
            merged[node_id] = self.views[name].myself
        return merged

    def failed(self, node_id: str) -> bool:
        """Whether the views that know the node flag it as failed (or do not know where
        it is); a node we reach ourselves is never failed."""
        if node_id in self.pod_of_node:
            return False
        opinions = [view.nodes[node_id] for view in self.views.values() if node_id in view.nodes]
        if not opinions:
            return True
        down = sum(1 for e in opinions if e.failed or e.no_address or e.suspected)
        return down * 2 > len(opinions)

    def pod_name_of(self, node_id: str) -> str | None:
        """The pod a node runs in: now, or as last recorded when it cannot be reached."""
        return self.pod_of_node.get(node_id) or self.observation.recorded.get(node_id)

    def shard_of(self, node_id: str) -> int | None:
        """The shard a node serves: its pod's, else the one its last recorded pod was in,
        else the shard of the nodes that replicate it (a master we cannot reach is placed
        by its replicas)."""
        pod = self.pod_of_node.get(node_id)
        if pod is not None:
            return self.pods[pod].shard
        recorded = self.observation.recorded.get(node_id)
        if recorded is not None:
            if recorded in self.pods:
                return self.pods[recorded].shard
            # The pod may be gone; its name still says the shard.
            placed = parse_pod_name(self.observation.cluster, recorded)
            if placed is not None:
                return placed[0]
        shards = Counter(
            self.pods[self.pod_of_node[replica]].shard
            for replica in self.replicas_of(node_id)
            if replica in self.pod_of_node
        )
        return shards.most_common(1)[0][0] if shards else None

    def flagged(self, node_id: str) -> bool:
        """Whether any reachable node sees this node as failing, unreachable or unplaced."""
        return any(
            e.failed or e.suspected or e.no_address or e.in_handshake
            for view in self.views.values()
            if (e := view.nodes.get(node_id)) is not None and not e.myself
        )

    def master_of(self, node_id: str) -> str | None:
        entry = self.entries.get(node_id)
        return entry.master_id if entry is not None and entry.is_replica else None

    def replicas_of(self, node_id: str) -> list[str]:
        return sorted(
            other
            for other, entry in self.entries.items()
            if entry.is_replica and entry.master_id == node_id
        )

    def known_to(self, pod: str, node_id: str) -> bool:
        view = self.views.get(pod)
        return view is not None and node_id in view.nodes

    # --- slots ------------------------------------------------------------------------------

    def _epoch(self, node_id: str) -> int:
        if node_id in self.pod_of_node:
            return self.entries[node_id].config_epoch
        return max(
            (
                view.nodes[node_id].config_epoch
                for view in self.views.values()
                if node_id in view.nodes
            ),
            default=0,
        )

    def _slot_owners(self) -> list[str | None]:
        per_view: list[list[str | None]] = []
        for name in sorted(self.views):
            owners: list[str | None] = [None] * SLOT_COUNT
            for entry in self.views[name].nodes.values():
                for r in entry.slots:
                    owners[r.start : r.end + 1] = [entry.node_id] * len(r)
            per_view.append(owners)
        if not per_view:
            return [None] * SLOT_COUNT
        first = per_view[0]
        if all(other == first for other in per_view[1:]):
            return list(first)
        epochs: dict[str, int] = {}
        resolved: list[str | None] = []
        for slot in range(SLOT_COUNT):
            claims: Counter[str] = Counter(
                owner for owners in per_view if (owner := owners[slot]) is not None
            )
            if not claims:
                resolved.append(None)
                continue
            if len(claims) == 1:
                resolved.append(next(iter(claims)))
                continue
            for node_id in claims:
                if node_id not in epochs:
                    epochs[node_id] = self._epoch(node_id)
            resolved.append(max(claims, key=lambda n: (epochs[n], claims[n], n)))
        return resolved

    @cached_property
    def slots_by_node(self) -> dict[str, tuple[SlotRange, ...]]:
        collected: dict[str, list[int]] = {}
        for slot, owner in enumerate(self.owners):
            if owner is not None:
                collected.setdefault(owner, []).append(slot)
        return {node_id: to_ranges(slots) for node_id, slots in collected.items()}

    def slot_count(self, node_id: str) -> int:
        return sum(len(r) for r in self.slots_by_node.get(node_id, ()))

    @cached_property
    def uncovered(self) -> tuple[SlotRange, ...]:
        return to_ranges(slot for slot, owner in enumerate(self.owners) if owner is None)

    @property
    def slots_assigned(self) -> int:
        return SLOT_COUNT - sum(len(r) for r in self.uncovered)

    @property
    def slots_ok(self) -> int:
        return sum(
            self.slot_count(node_id)
            for node_id in self.slots_by_node
            if node_id in self.pod_of_node and not self.failed(node_id)
        )

    @cached_property
    def open_slots(self) -> list[OpenSlot]:
        migrating: dict[int, dict[str, str]] = {}
        importing: dict[int, dict[str, str]] = {}
        for node_id in self.pod_of_node:
            entry = self.entries[node_id]
            for slot, peer in entry.migrating.items():
                migrating.setdefault(slot, {})[node_id] = peer
            for slot, peer in entry.importing.items():
                importing.setdefault(slot, {})[node_id] = peer
        return [
            OpenSlot(slot, self.owners[slot], migrating.get(slot, {}), importing.get(slot, {}))
            for slot in sorted(set(migrating) | set(importing))
        ]

    # --- shards -----------------------------------------------------------------------------

    def shard_nodes(self, shard: int) -> list[str]:
        """Node IDs of the reachable pods of a shard, by pod ordinal."""
        pods = sorted(
            (pod for pod in self.pods.values() if pod.shard == shard and pod.name in self.views),
            key=lambda pod: pod.ordinal,
        )
        return [self.node_of_pod[pod.name] for pod in pods]

    def owned_by_shard(self) -> dict[int, list[int]]:
        """Slots per shard, for the slots whose owner we can place in a shard."""
        owned: dict[int, list[int]] = {}
        for node_id, ranges in self.slots_by_node.items():
            shard = self.shard_of(node_id)
            if shard is not None:
                owned.setdefault(shard, []).extend(expand(ranges))
        return {shard: sorted(slots) for shard, slots in owned.items()}

    def anchor(self) -> str | None:
        """The reachable node to introduce others from: one that owns the most slots, else
        the one that knows the most nodes (ties: the first pod by name)."""
        if not self.views:
            return None
        return min(
            self.views,
            key=lambda name: (
                -self.slot_count(self.node_of_pod[name]),
                -len(self.views[name].nodes),
                name,
            ),
        )


def reachable(pods: Iterable[RedisPod], picture: ClusterPicture) -> list[RedisPod]:
    return [pod for pod in pods if pod.name in picture.views]
