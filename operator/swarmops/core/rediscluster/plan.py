"""What to do next to a Redis Cluster: an ordered pipeline of small, idempotent phases over
one observed snapshot (pure).

Every reconcile observes the cluster afresh and runs the pipeline; the first phase with
work returns its actions, and the next reconcile looks again. So each step is decided
from what Redis says now, an operator killed halfway resumes where the cluster is, and
nothing depends on memory of earlier steps except the status' ``bootstrappedAt``.

The phases, in order:

1. **membership**: re-MEET known node IDs seen at a new address; FORGET nodes that are
   gone (never one that still owns slots: a failed master's replica must be promoted
   first); MEET new pods.
2. **failover**: a master whose pod is gone (deleted, replaced, not running) has its
   most up-to-date replica promoted (``CLUSTER FAILOVER FORCE``), without waiting for
   Redis' own failure detection.
3. **open slots**: a slot left migrating or importing (an interrupted reshard, a killed
   master) is finished towards its destination, or the stale mark is cleared.
4. **coverage**: unassigned slots get an owner (the even split at bootstrap).
5. **replicas**: every node of a shard that is not its master follows the master.
6. **shape**: a master on a pod the StatefulSet is about to drop fails over first.
7. **rebalance**: slots move, a batch at a time, to the even split over the wanted
   shards; shards being removed are drained to zero.
8. **roll**: pods on an old revision restart one at a time, replicas first, a master
   only after failing it over.

Hard rules the phases keep: never a FLUSHALL, CLUSTER RESET or re-creation of a node
that owns slots or holds keys; a new empty node never receives slots it did not have
(except when forming the cluster) and never feeds a replica that holds data.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from swarmops.api.common import Condition, ConditionStatus, ConditionType
from swarmops.api.rediscluster import (
    RedisCluster,
    RedisClusterConditionType,
    RedisClusterPhase,
    RedisClusterStatus,
    RedisNodeRole,
    RedisNodeStatus,
)
from swarmops.core.conditions import set_condition
from swarmops.core.rediscluster import names
from swarmops.core.rediscluster.observed import ClusterPicture, Observation, RedisPod
from swarmops.core.rediscluster.slots import (
    SLOT_COUNT,
    SlotRange,
    describe,
    even_split,
    rebalance,
    to_ranges,
)

#: Slots moved per reconcile; the next reconcile re-observes and moves the next batch.
MIGRATION_BATCH = 1024

# --- actions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Meet:
    """``CLUSTER MEET ip port`` sent to `pod`."""

    pod: str
    ip: str
    port: int
    node_id: str | None  # who we expect to find there (None: a new node)

    @property
    def key(self) -> str:
        return f"meet:{self.pod}:{self.ip}"


@dataclass(frozen=True)
class Forget:
    """``CLUSTER FORGET node_id`` sent to every pod in `pods`, within Redis' 60 s ban."""

    node_id: str
    pods: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"forget:{self.node_id}"


@dataclass(frozen=True)
class AddSlots:
    """``CLUSTER ADDSLOTSRANGE`` on `pod`."""

    pod: str
    ranges: tuple[SlotRange, ...]

    @property
    def key(self) -> str:
        return f"addslots:{self.pod}:{self.ranges[0] if self.ranges else ''}"


@dataclass(frozen=True)
class Replicate:
    """``CLUSTER REPLICATE master_id`` on `pod`."""

    pod: str
    master_id: str

    @property
    def key(self) -> str:
        return f"replicate:{self.pod}:{self.master_id}"


@dataclass(frozen=True)
class Failover:
    """``CLUSTER FAILOVER [FORCE]`` on the replica `pod` of `old_master`."""

    pod: str
    old_master: str
    force: bool
    reason: str

    @property
    def key(self) -> str:
        return f"failover:{self.old_master}"


@dataclass(frozen=True)
class CloseSlot:
    """Finish moving `slot` from the master on `owner_pod` to the one on `target_pod`
    (IMPORTING and MIGRATING set again where missing, remaining keys migrated, SETSLOT
    NODE everywhere); `clear_pods` drop stale marks. Without a target, the marks are
    cleared and the slot stays with its owner."""

    slot: int
    owner_pod: str
    owner_id: str
    target_pod: str | None
    target_id: str | None
    clear_pods: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"close:{self.slot}"


@dataclass(frozen=True)
class MoveSlots:
    """Migrate `slots` (with their keys) from the master on `source_pod` to `target_pod`."""

    source_pod: str
    source_id: str
    target_pod: str
    target_id: str
    slots: tuple[int, ...]

    @property
    def key(self) -> str:
        return f"move:{self.source_id}:{self.target_id}:{self.slots[0]}"


@dataclass(frozen=True)
class DeletePod:
    """Delete a pod to restart it on the StatefulSet's new revision."""

    pod: str
    uid: str
    reason: str

    @property
    def key(self) -> str:
        return f"delete:{self.pod}:{self.uid}"


Action = Meet | Forget | AddSlots | Replicate | Failover | CloseSlot | MoveSlots | DeletePod


@dataclass(frozen=True)
class Problem:
    """Something the operator cannot fix on its own; becomes Degraded and a Warning."""

    reason: str
    message: str


@dataclass(frozen=True)
class Notice:
    """A one-off Event the plan asks for (beyond those for executed actions)."""

    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class ClusterPlan:
    step: str  # the pipeline phase the actions come from ("ready" when none)
    actions: tuple[Action, ...]
    shard_sizes: dict[int, int]  # StatefulSets to keep, with their pod counts
    status: RedisClusterStatus
    problems: tuple[Problem, ...] = ()
    notices: tuple[Notice, ...] = ()
    requeue_after: float = 30.0


@dataclass
class _Context:
    cluster: RedisCluster
    observation: Observation
    picture: ClusterPicture
    in_flight: frozenset[str]
    wanted: int  # shards wanted
    pods_per_shard: int
    persistent: bool
    bootstrapped: bool
    problems: list[Problem] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    settling: str | None = None  # why a cluster with nothing to do is not ready yet

    def allowed(self, actions: Iterable[Action]) -> list[Action]:
        """Drop actions already sent and not yet visible (an expectation, not a lock)."""
        return [action for action in actions if action.key not in self.in_flight]


# --- the pipeline -----------------------------------------------------------------------------


def plan_cluster(
    cluster: RedisCluster,
    observation: Observation,
    *,
    now: datetime.datetime,
    in_flight: frozenset[str] = frozenset(),
) -> ClusterPlan:
    spec = cluster.spec
    picture = ClusterPicture(observation)
    ctx = _Context(
        cluster=cluster,
        observation=observation,
        picture=picture,
        in_flight=in_flight,
        wanted=spec.shards,
        pods_per_shard=1 + spec.replicas_per_shard,
        persistent=spec.persistence is not None,
        bootstrapped=cluster.status.bootstrapped_at is not None,
    )
    sizes = shard_sizes(ctx)
    step, actions = _pipeline(ctx, sizes)
    bootstrapped_at = cluster.status.bootstrapped_at
    if bootstrapped_at is None and _formed(ctx):
        bootstrapped_at = now
        ctx.notices.append(
            Notice("ClusterFormed", f"All {SLOT_COUNT} slots assigned; cluster_state is ok")
        )
    status = _status(ctx, sizes, step, actions, now=now, bootstrapped_at=bootstrapped_at)
    busy = bool(actions) or step not in ("ready",)
    return ClusterPlan(
        step=step,
        actions=tuple(actions),
        shard_sizes=sizes,
        status=status,
        problems=tuple(ctx.problems),
        notices=tuple(ctx.notices),
        requeue_after=_requeue(step, actions, busy),
    )


def _requeue(step: str, actions: Sequence[Action], busy: bool) -> float:
    if any(isinstance(a, MoveSlots | CloseSlot) for a in actions):
        return 0.0  # the next batch at once
    if actions:
        return 0.5  # give gossip a moment, then look at what changed
    if step == "degraded":
        return 5.0
    return 1.0 if busy else 30.0


def _pipeline(ctx: _Context, sizes: dict[int, int]) -> tuple[str, list[Action]]:
    picture = ctx.picture
    desired = _desired_pods(ctx, sizes)
    missing = [name for name in desired if name not in picture.views]
    if not ctx.bootstrapped and not picture.slots_by_node and (not desired or missing):
        return "waiting", []
    phases = (
        ("membership", _membership),
        ("failover", _failover_lost_masters),
        ("open-slots", _open_slots),
        ("coverage", _coverage),
        ("replicas", _replicas),
        ("shape", _shape),
        ("rebalance", _rebalance),
        ("roll", _roll),
    )
    for name, phase in phases:
        actions = ctx.allowed(phase(ctx, sizes))
        if actions:
            return name, actions
        if ctx.problems and name in ("membership", "failover", "coverage"):
            # Nothing below may run on a cluster that lost part of itself.
            return "degraded", []
    if ctx.problems:
        return "degraded", []
    ctx.settling = unsettled(ctx, sizes)
    if ctx.settling is not None:
        return "settling", []
    return "ready", []


def _desired_pods(ctx: _Context, sizes: dict[int, int]) -> list[str]:
    cluster = ctx.cluster.metadata.name
    return [
        names.pod_name(cluster, shard, ordinal)
        for shard, size in sorted(sizes.items())
        for ordinal in range(size)
    ]


def shard_sizes(ctx: _Context) -> dict[int, int]:
    """StatefulSets to keep and their sizes. A shard above the wanted count stays until
    none of its nodes owns a slot or holds a key; a StatefulSet keeps a pod that is a
    master with slots until it has failed over."""
    picture = ctx.picture
    existing = set(ctx.observation.statefulsets)
    sizes: dict[int, int] = {shard: ctx.pods_per_shard for shard in range(ctx.wanted)}
    for shard in sorted(existing):
        if shard < ctx.wanted:
            continue
        if not _shard_empty(ctx, shard):
            current = ctx.observation.statefulsets[shard].replicas
            sizes[shard] = max(current, 1)
    for shard, size in list(sizes.items()):
        for pod in picture.pods.values():
            if pod.shard != shard or pod.ordinal < size:
                continue
            node = picture.node_of_pod.get(pod.name)
            if node is not None and picture.slot_count(node) > 0:
                sizes[shard] = max(sizes[shard], pod.ordinal + 1)
    return sizes


def _shard_empty(ctx: _Context, shard: int) -> bool:
    """Whether a shard being removed has nothing left: no slot, no open slot, no key, and
    every one of its pods answers (so we know)."""
    picture = ctx.picture
    for node_id in picture.slots_by_node:
        if picture.shard_of(node_id) == shard:
            return False
    for slot in picture.open_slots:
        for node_id in (*slot.migrating, *slot.importing):
            if picture.shard_of(node_id) == shard:
                return False
    for pod in picture.pods.values():
        if pod.shard != shard:
            continue
        view = picture.views.get(pod.name)
        if view is None or view.keys > 0:
            return False
    return not picture.uncovered


# --- 1. membership ----------------------------------------------------------------------------


def _membership(ctx: _Context, sizes: dict[int, int]) -> list[Action]:
    return [*_remeet(ctx), *_forget(ctx, sizes), *_meet_new(ctx)]


def _remeet(ctx: _Context) -> list[Action]:
    """A node we reach at the pod's address, known to a peer at another address: tell the
    peer where it is now (after a restart, or all restarts, every address is stale)."""
    picture = ctx.picture
    actions: list[Action] = []
    for pod_name, node_id in sorted(picture.node_of_pod.items()):
        ip = picture.pods[pod_name].ip
        if not ip:
            continue
        for peer_pod, view in sorted(picture.views.items()):
            if peer_pod == pod_name:
                continue
            entry = view.nodes.get(node_id)
            if entry is None or entry.in_handshake:
                continue
            if entry.ip != ip or entry.port != names.CLIENT_PORT:
                actions.append(Meet(peer_pod, ip, names.CLIENT_PORT, node_id))
    return actions


def _forget(ctx: _Context, sizes: dict[int, int]) -> list[Action]:
    """Nodes that are gone for good: no pod runs them, the cluster flags them failed, and
    they own no slot. A failed master that still owns slots is kept: its replica must be
    promoted first (forgetting it would leave its slots unowned)."""
    picture = ctx.picture
    every_pod_answers = all(name in picture.views for name in _desired_pods(ctx, sizes))
    known: set[str] = set()
    for view in picture.views.values():
        known.update(node_id for node_id, e in view.nodes.items() if not e.in_handshake)
    actions: list[Action] = []
    for node_id in sorted(known - set(picture.pod_of_node)):
        if picture.slot_count(node_id) > 0:
            continue
        if any(picture.master_of(other) == node_id for other in picture.pod_of_node):
            continue  # its replicas follow it: re-point them first (replicas phase)
        if _replaced(ctx, node_id, sizes):
            pass  # its pod runs another node now: it cannot come back, flagged or not
        elif not (every_pod_answers and picture.failed(node_id)):
            continue
        pods = tuple(
            pod
            for pod, view in sorted(picture.views.items())
            if node_id in view.nodes and view.myself.master_id != node_id
        )
        if pods:
            actions.append(Forget(node_id, pods))
    return actions


def _replaced(ctx: _Context, node_id: str, sizes: dict[int, int]) -> bool:
    """Whether the pod that ran a node now runs another one, or is gone for good."""
    picture = ctx.picture
    pod_name = ctx.observation.recorded.get(node_id)
    if pod_name is None:
        return False
    current = picture.node_of_pod.get(pod_name)
    if current is not None:
        return current != node_id
    placed = names.parse_pod_name(ctx.cluster.metadata.name, pod_name)
    if placed is None:
        return False
    shard, ordinal = placed
    return pod_name not in picture.pods and ordinal >= sizes.get(shard, 0)


def _meet_new(ctx: _Context) -> list[Action]:
    picture = ctx.picture
    anchor = picture.anchor()
    if anchor is None:
        return []
    anchor_view = picture.views[anchor]
    actions: list[Action] = []
    for pod_name, node_id in sorted(picture.node_of_pod.items()):
        if pod_name == anchor or node_id in anchor_view.nodes:
            continue
        ip = picture.pods[pod_name].ip
        if not ip:
            continue
        view = picture.views[pod_name]
        if view.myself.slots and picture.slot_count(picture.node_of_pod[anchor]) > 0:
            # Two clusters that both own slots: joining them lets the higher epoch win
            # slots the other holds keys for. A person must decide.
            ctx.problems.append(
                Problem(
                    "SplitCluster",
                    f"pod {pod_name} (node {node_id[:8]}) owns slots "
                    f"{describe(view.myself.slots)} but is not part of the cluster that "
                    f"{anchor} belongs to; not joining them",
                )
            )
            continue
        actions.append(Meet(anchor, ip, names.CLIENT_PORT, None))
    if not actions and not ctx.bootstrapped and not picture.slots_by_node:
        # Forming: introduce every pair directly, not through gossip (a second or two),
        # so the full mesh the first slots wait for (see `_fully_meshed`) is there at once.
        for pod_name, view in sorted(picture.views.items()):
            for other, node_id in sorted(picture.node_of_pod.items()):
                ip = picture.pods[other].ip
                if other != pod_name and ip and node_id not in view.nodes:
                    actions.append(Meet(pod_name, ip, names.CLIENT_PORT, node_id))
    return actions


# --- 2. failover of lost masters ------------------------------------------------------------


def _gone_for_sure(ctx: _Context, node_id: str) -> bool:
    """Kubernetes says the node's process cannot be running anywhere: every pod of its
    shard is deleted, being deleted, not running, or answers as another node (a pod that
    lost its identity). A pod that runs but does not answer yet may be it, restarting."""
    picture = ctx.picture
    if node_id in picture.pod_of_node:
        return False
    shard = picture.shard_of(node_id)
    if shard is None:
        return False
    for pod in picture.pods.values():
        if pod.shard != shard or pod.terminating or not pod.running:
            continue
        if pod.name not in picture.views:
            return False
    return True


def _failover_lost_masters(ctx: _Context, sizes: dict[int, int]) -> list[Action]:
    picture = ctx.picture
    actions: list[Action] = []
    for master in sorted(picture.slots_by_node):
        pod_name = picture.pod_of_node.get(master)
        if pod_name is not None:
            if picture.pods[pod_name].terminating:
                # Still alive in its grace period: a plain failover hands over without
                # losing a write.
                replica = _in_sync_replica(ctx, master)
                if replica is not None:
                    actions.append(
                        Failover(replica, master, force=False, reason=f"{pod_name} is deleted")
                    )
            continue  # we reach it: alive
        if not _gone_for_sure(ctx, master):
            if picture.failed(master):
                # Redis flags it failed; its replicas elect one of themselves.
                candidates = _replicas_by_offset(ctx, master)
                if not candidates:
                    ctx.problems.append(_lost_shard(ctx, master))
            continue
        candidates = _replicas_by_offset(ctx, master)
        if not candidates:
            ctx.problems.append(_lost_shard(ctx, master))
            continue
        actions.append(
            Failover(candidates[0], master, force=True, reason="its master's pod is gone")
        )
    return actions


def _replicas_by_offset(ctx: _Context, master: str) -> list[str]:
    picture = ctx.picture
    pods = [
        picture.pod_of_node[node_id]
        for node_id in picture.replicas_of(master)
        if node_id in picture.pod_of_node
    ]
    return sorted(pods, key=lambda pod: (-picture.views[pod].replication_offset, pod))


def _lost_shard(ctx: _Context, master: str) -> Problem:
    picture = ctx.picture
    ranges = picture.slots_by_node.get(master, ())
    where = picture.pod_name_of(master) or "an unknown pod"
    if ctx.persistent:
        hint = "waiting for it to come back with its data"
    else:
        hint = (
            "without persistence its data is gone; the slots stay down until a person "
            "decides (the operator never gives them to an empty node)"
        )
    return Problem(
        "MasterLost",
        f"master {master[:8]} ({where}) of slots {describe(ranges)} is down and has no "
        f"replica to promote; {hint}",
    )


# --- 3. open slots ----------------------------------------------------------------------------


def _open_slots(ctx: _Context, sizes: dict[int, int]) -> list[Action]:
    picture = ctx.picture
    actions: list[Action] = []
    for opened in picture.open_slots:
        owner = opened.owner
        if owner is None or owner not in picture.pod_of_node:
            continue  # unowned: coverage; owner down: failover first
        owner_pod = picture.pod_of_node[owner]
        candidates: list[str] = []
        if owner in opened.migrating:
            candidates.append(opened.migrating[owner])
        candidates += [node for node in sorted(opened.importing) if node != owner]
        target = None
        for candidate in candidates:
            resolved = _live_master_for(ctx, candidate)
            if resolved is not None and resolved != owner:
                target = resolved
                break
        marked = set(opened.migrating) | set(opened.importing)
        clear = tuple(
            sorted(
                picture.pod_of_node[node]
                for node in marked
                if node not in (owner, target) and node in picture.pod_of_node
            )
        )
        actions.append(
            CloseSlot(
                slot=opened.slot,
                owner_pod=owner_pod,
                owner_id=owner,
                target_pod=picture.pod_of_node[target] if target else None,
                target_id=target,
                clear_pods=clear,
            )
        )
    return actions


def _live_master_for(ctx: _Context, node_id: str) -> str | None:
    """The live master standing for `node_id`: itself when reachable and a master, else
    the master of its shard now (its replica, promoted after it died)."""
    picture = ctx.picture
    entry = picture.entries.get(node_id)
    if node_id in picture.pod_of_node and entry is not None and entry.is_master:
        return node_id
    shard = picture.shard_of(node_id)
    if shard is None:
        return None
    return _shard_master(ctx, shard)


def _shard_master(ctx: _Context, shard: int) -> str | None:
    """The reachable master of a shard that owns slots (None if none, or more than one)."""
    picture = ctx.picture
    owners = [
        node
        for node in picture.shard_nodes(shard)
        if picture.entries[node].is_master and picture.slot_count(node) > 0
    ]
    return owners[0] if len(owners) == 1 else None


# --- 4. coverage ------------------------------------------------------------------------------


def _coverage(ctx: _Context, sizes: dict[int, int]) -> list[Action]:
    picture = ctx.picture
    uncovered = picture.uncovered
    if not uncovered:
        return []
    desired = _desired_pods(ctx, sizes)
    if any(name not in picture.views for name in desired):
        return []  # an unreachable node may still claim them
    forming = not ctx.bootstrapped
    if ctx.bootstrapped and not picture.slots_by_node:
        remembered = set(picture.entries) - set(picture.pod_of_node)
        if any(view.keys for view in picture.views.values()) or remembered:
            ctx.problems.append(
                Problem(
                    "ClusterLost",
                    "no node owns a slot, but some hold keys or remember nodes that no pod "
                    "runs; not forming a new cluster over them",
                )
            )
            return []
        # Every node came back empty and alone (no persistence): the data is gone and
        # forming again touches no data.
        forming = True
        ctx.notices.append(
            Notice(
                "ClusterReformed",
                "every node came back empty (no persistence): the cluster's data is lost; "
                "forming a new cluster",
                warning=True,
            )
        )
    if forming:
        return _initial_slots(ctx, uncovered)
    # Slots nobody claims after the cluster formed: their keys are gone with whoever
    # owned them. Serve them again from the masters we have.
    masters = sorted(
        (node for node in picture.slots_by_node if node in picture.pod_of_node),
        key=lambda node: (picture.slot_count(node), node),
    )
    if not masters:
        return []
    target = masters[0]
    ctx.notices.append(
        Notice(
            "SlotsReassigned",
            f"slots {describe(uncovered)} had no owner (their keys are lost); assigned "
            f"to {picture.pod_of_node[target]}",
            warning=True,
        )
    )
    return [AddSlots(picture.pod_of_node[target], tuple(uncovered))]


def _fully_meshed(ctx: _Context) -> bool:
    """Every reachable node knows every other one, connected and unflagged."""
    picture = ctx.picture
    ids = set(picture.pod_of_node)
    for view in picture.views.values():
        for node_id in ids - {view.node_id}:
            entry = view.nodes.get(node_id)
            if entry is None or entry.in_handshake or entry.suspected or entry.failed:
                return False
            if not entry.connected:
                return False
    return True


def _initial_slots(ctx: _Context, uncovered: Sequence[SlotRange]) -> list[Action]:
    picture = ctx.picture
    if not _fully_meshed(ctx):
        # Slots assigned while some masters cannot see each other yet make those count
        # themselves in a minority, and Redis then holds cluster_state at fail for up
        # to 5 s (its rejoin delay) after they meet. Introductions first.
        return []
    open_set = {slot for r in uncovered for slot in range(r.start, r.end + 1)}
    actions: list[Action] = []
    for shard, share in enumerate(even_split(ctx.wanted)):
        master = _designated_master(ctx, shard)
        if master is None:
            return []  # all or nothing: a partial split would skew the shards
        slots = [slot for slot in range(share.start, share.end + 1) if slot in open_set]
        if slots:
            actions.append(AddSlots(picture.pod_of_node[master], to_ranges(slots)))
    return actions


def _designated_master(ctx: _Context, shard: int) -> str | None:
    """The master of a shard: the one owning slots; for a shard that owns none yet, the
    master its other nodes already follow, else the node of its lowest-ordinal pod, if
    it is an empty master."""
    picture = ctx.picture
    owner = _shard_master(ctx, shard)
    if owner is not None:
        return owner
    nodes = picture.shard_nodes(shard)
    for node in nodes:
        if picture.entries[node].is_master and any(
            picture.master_of(other) == node for other in nodes
        ):
            return node
    if not nodes:
        return None
    first = nodes[0]
    first_pod = picture.pod_of_node[first]
    if picture.pods[first_pod].ordinal != 0:
        return None
    entry = picture.entries[first]
    if entry.is_master and picture.views[first_pod].keys == 0:
        return first
    return None


# --- 5. replicas ------------------------------------------------------------------------------


def _replicas(ctx: _Context, sizes: dict[int, int]) -> list[Action]:
    picture = ctx.picture
    actions: list[Action] = []
    for shard in range(ctx.wanted):
        nodes = picture.shard_nodes(shard)
        owners = [n for n in nodes if picture.entries[n].is_master and picture.slot_count(n) > 0]
        if len(owners) > 1:
            pods = ", ".join(picture.pod_of_node[n] for n in owners)
            ctx.problems.append(
                Problem("ShardHasTwoMasters", f"shard {shard} has masters on {pods}")
            )
            continue
        if not owners and any(picture.shard_of(n) == shard for n in picture.slots_by_node):
            continue  # its master is out of reach: failover or waiting, not attaching
        master = _designated_master(ctx, shard)
        if master is None:
            continue
        master_has_data = picture.slot_count(master) > 0
        for node in nodes:
            if node == master:
                continue
            entry = picture.entries[node]
            pod = picture.pod_of_node[node]
            view = picture.views[pod]
            if entry.is_replica and entry.master_id == master:
                continue
            if entry.is_master and picture.slot_count(node) > 0:
                continue  # reported above when it is a second owner
            if entry.is_master and view.keys > 0:
                ctx.problems.append(
                    Problem(
                        "NodeHoldsKeys",
                        f"pod {pod} is a master without slots that holds {view.keys} keys; "
                        "it cannot follow its shard's master without losing them, and the "
                        "operator never flushes a node",
                    )
                )
                continue
            if view.keys > 0 and not master_has_data:
                continue  # an empty master never feeds a replica that holds data
            if not picture.known_to(pod, master):
                # Not told about its master by gossip yet: introduce them directly rather
                # than wait a gossip round.
                master_ip = picture.pods[picture.pod_of_node[master]].ip
                if master_ip:
                    actions.append(Meet(pod, master_ip, names.CLIENT_PORT, master))
                continue
            actions.append(Replicate(pod, master))
    return actions


# --- 6. shape -----------------------------------------------------------------------------------


def _shape(ctx: _Context, sizes: dict[int, int]) -> list[Action]:
    """Fail over masters that sit on pods beyond the wanted StatefulSet size."""
    picture = ctx.picture
    actions: list[Action] = []
    for shard in range(ctx.wanted):
        for node in picture.shard_nodes(shard):
            pod = picture.pods[picture.pod_of_node[node]]
            if pod.ordinal < ctx.pods_per_shard or picture.slot_count(node) == 0:
                continue
            replica = _in_sync_replica(ctx, node, max_ordinal=ctx.pods_per_shard)
            if replica is not None:
                actions.append(
                    Failover(replica, node, force=False, reason=f"{pod.name} is being removed")
                )
    return actions


def _in_sync_replica(ctx: _Context, master: str, *, max_ordinal: int | None = None) -> str | None:
    picture = ctx.picture
    for pod in _replicas_by_offset(ctx, master):
        view = picture.views[pod]
        if not view.master_link_up:
            continue
        if max_ordinal is not None and picture.pods[pod].ordinal >= max_ordinal:
            continue
        return pod
    return None


# --- 7. rebalance ----------------------------------------------------------------------------


def _rebalance_moves(ctx: _Context, limit: int | None) -> list[MoveSlots] | None:
    """The next slot moves, or None when the cluster is not in a state to move slots."""
    picture = ctx.picture
    if picture.uncovered or picture.open_slots:
        return None
    masters: dict[int, str] = {}
    for shard in range(ctx.wanted):
        master = _designated_master(ctx, shard)
        if master is None:
            return None
        masters[shard] = master
    moves = rebalance(picture.owned_by_shard(), ctx.wanted, limit=limit)
    result = []
    for move in moves:
        by_owner: dict[str, list[int]] = {}
        for slot in move.slots:
            owner = picture.owners[slot]
            if owner is None or owner not in picture.pod_of_node:
                return None
            by_owner.setdefault(owner, []).append(slot)
        target = masters[move.target]
        for owner, slots in sorted(by_owner.items()):
            if not picture.known_to(picture.pod_of_node[owner], target):
                return None
            result.append(
                MoveSlots(
                    source_pod=picture.pod_of_node[owner],
                    source_id=owner,
                    target_pod=picture.pod_of_node[target],
                    target_id=target,
                    slots=tuple(slots),
                )
            )
    return result


def _rebalance(ctx: _Context, sizes: dict[int, int]) -> list[Action]:
    picture = ctx.picture
    if not ctx.bootstrapped:
        return []
    if any(picture.flagged(node) for node in picture.slots_by_node):
        return []
    if any(view.cluster_state != "ok" for view in picture.views.values()):
        return []
    moves = _rebalance_moves(ctx, MIGRATION_BATCH)
    return list(moves or [])


def slots_to_move(ctx: _Context) -> int:
    moves = rebalance(ctx.picture.owned_by_shard(), ctx.wanted)
    return sum(len(move.slots) for move in moves)


# --- 8. roll --------------------------------------------------------------------------------


def _outdated(ctx: _Context, pod: RedisPod) -> bool:
    shard_set = ctx.observation.statefulsets.get(pod.shard)
    if shard_set is None or shard_set.update_revision is None or pod.revision is None:
        return False
    return pod.revision != shard_set.update_revision


def _roll(ctx: _Context, sizes: dict[int, int]) -> list[Action]:
    picture = ctx.picture
    if not _healthy(ctx, sizes):
        return []
    pods = sorted(
        (pod for pod in picture.pods.values() if pod.shard in sizes and _outdated(ctx, pod)),
        key=lambda pod: (pod.shard, pod.ordinal),
    )
    if not pods:
        return []
    # Replicas first: restarting one costs nothing but a resync.
    for pod in pods:
        node = picture.node_of_pod.get(pod.name)
        if node is not None and picture.entries[node].is_replica:
            return [DeletePod(pod.name, pod.uid, "restart a replica on the new revision")]
    for pod in pods:
        node = picture.node_of_pod.get(pod.name)
        if node is None:
            continue
        replica = next(
            (
                candidate
                for candidate in _replicas_by_offset(ctx, node)
                if picture.views[candidate].master_link_up
                and not _outdated(ctx, picture.pods[candidate])
            ),
            None,
        )
        if replica is not None:
            return [Failover(replica, node, force=False, reason=f"{pod.name} restarts next")]
        if picture.replicas_of(node):
            continue  # its replicas are catching up
        if ctx.persistent:
            return [
                DeletePod(pod.name, pod.uid, "restart a master without replicas (data persisted)")
            ]
        ctx.problems.append(
            Problem(
                "RolloutBlocked",
                f"{pod.name} is a master with no replica and no persistence: restarting it "
                "would lose its data; add a replica or persistence",
            )
        )
        return []
    return []


# --- health and status ------------------------------------------------------------------------


def _healthy(ctx: _Context, sizes: dict[int, int]) -> bool:
    return unsettled(ctx, sizes) is None


def unsettled(ctx: _Context, sizes: dict[int, int]) -> str | None:
    """Why the cluster is not yet all in place (None when it is): every wanted pod answers
    and is Ready, the cluster is ok everywhere, nobody flagged, every slot owned and
    closed, every shard's replicas in sync, no slot left to move."""
    picture = ctx.picture
    if not ctx.bootstrapped and not _formed(ctx):
        return "the cluster is not formed yet"
    for name in _desired_pods(ctx, sizes):
        if name not in picture.views:
            return f"{name} does not answer"
        if not picture.pods[name].ready:
            return f"{name} is not Ready"
    for name, view in sorted(picture.views.items()):
        if view.cluster_state != "ok":
            return f"{name} reports cluster_state {view.cluster_state}"
    for node in sorted(picture.entries):
        if picture.flagged(node):
            return f"node {node[:8]} ({picture.pod_name_of(node) or 'no pod'}) is flagged failing"
    if picture.uncovered:
        return f"slots {describe(picture.uncovered)} have no owner"
    if picture.open_slots:
        return f"{len(picture.open_slots)} slots are migrating or importing"
    unplaced = sorted(set(picture.entries) - set(picture.pod_of_node))
    if unplaced:
        return f"node {unplaced[0][:8]} is known to the cluster but runs in no pod"
    for shard in range(ctx.wanted):
        if not _ready_shard(ctx, shard):
            return f"shard {shard} has no master with all its replicas in sync"
    if slots_to_move(ctx):
        return "slots remain to be moved"
    if set(sizes) != set(range(ctx.wanted)):
        return "shards being removed remain"
    desired = set(_desired_pods(ctx, sizes))
    leaving = sorted(name for name in picture.pods if name not in desired)
    if leaving:
        return f"{leaving[0]} is being removed"
    return None


def _ready_shard(ctx: _Context, shard: int) -> bool:
    picture = ctx.picture
    master = _shard_master(ctx, shard)
    if master is None or picture.flagged(master):
        return False
    master_pod = picture.pods[picture.pod_of_node[master]]
    if not master_pod.ready:
        return False
    followers = [
        node
        for node in picture.shard_nodes(shard)
        if picture.master_of(node) == master
        and picture.views[picture.pod_of_node[node]].master_link_up
        and picture.pods[picture.pod_of_node[node]].ready
    ]
    return len(followers) >= ctx.pods_per_shard - 1


def _formed(ctx: _Context) -> bool:
    picture = ctx.picture
    return (
        bool(picture.views)
        and not picture.uncovered
        and all(view.cluster_state == "ok" for view in picture.views.values())
    )


_PHASE_OF_STEP = {
    "waiting": RedisClusterPhase.PENDING,
    "membership": RedisClusterPhase.HEALING,
    "failover": RedisClusterPhase.HEALING,
    "open-slots": RedisClusterPhase.RESHARDING,
    "coverage": RedisClusterPhase.HEALING,
    "replicas": RedisClusterPhase.HEALING,
    "shape": RedisClusterPhase.HEALING,
    "rebalance": RedisClusterPhase.RESHARDING,
    "roll": RedisClusterPhase.UPDATING,
    "settling": RedisClusterPhase.HEALING,
    "degraded": RedisClusterPhase.DEGRADED,
    "ready": RedisClusterPhase.READY,
}


def _node_statuses(ctx: _Context, sizes: dict[int, int]) -> list[RedisNodeStatus]:
    """One entry per pod, as observed now. A wanted pod that does not answer (or is being
    recreated) keeps its last known entry: that record is how the next reconcile places a
    node it cannot reach in its shard."""
    picture = ctx.picture
    previous = {node.pod_name: node for node in ctx.cluster.status.nodes}
    wanted = set(_desired_pods(ctx, sizes))
    nodes = []
    for name in sorted(wanted | set(picture.pods)):
        pod = picture.pods.get(name)
        node_id = picture.node_of_pod.get(name)
        if node_id is None:
            if name in previous and name in wanted:
                nodes.append(previous[name])
            elif pod is not None:
                nodes.append(RedisNodeStatus(pod_name=name, shard=pod.shard))
            continue
        assert pod is not None
        entry = picture.entries[node_id]
        nodes.append(
            RedisNodeStatus(
                pod_name=name,
                node_id=node_id,
                role=RedisNodeRole.REPLICA if entry.is_replica else RedisNodeRole.MASTER,
                shard=pod.shard,
                master_node_id=entry.master_id if entry.is_replica else None,
                slots=picture.slot_count(node_id),
            )
        )
    return sorted(nodes, key=lambda node: (node.shard, node.pod_name))


def _status(
    ctx: _Context,
    sizes: dict[int, int],
    step: str,
    actions: Sequence[Action],
    *,
    now: datetime.datetime,
    bootstrapped_at: datetime.datetime | None,
) -> RedisClusterStatus:
    cluster = ctx.cluster
    picture = ctx.picture
    generation = cluster.metadata.generation or 0
    was_bootstrapped = ctx.bootstrapped
    ctx.bootstrapped = bootstrapped_at is not None
    phase = _PHASE_OF_STEP.get(step, RedisClusterPhase.HEALING)
    if not ctx.bootstrapped and phase is not RedisClusterPhase.PENDING:
        phase = RedisClusterPhase.BOOTSTRAPPING
    if step in ("waiting", "settling") and ctx.bootstrapped and was_bootstrapped:
        phase = RedisClusterPhase.HEALING
    ready_shards = sum(1 for shard in range(ctx.wanted) if _ready_shard(ctx, shard))
    shards = sum(1 for shard in range(ctx.wanted) if _shard_master(ctx, shard) is not None)
    to_move = slots_to_move(ctx) if ctx.bootstrapped else 0
    states = [view.cluster_state for view in picture.views.values()]
    cluster_state = None
    if states:
        cluster_state = "ok" if all(state == "ok" for state in states) else "fail"
    ready = step == "ready" and ready_shards == ctx.wanted and cluster_state == "ok"

    conditions: list[Condition] = list(cluster.status.conditions)

    def put(kind: str, value: bool, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(
            conditions,
            kind,
            ConditionStatus.TRUE if value else ConditionStatus.FALSE,
            reason,
            message,
            now=now,
            observed_generation=generation,
        )

    problem = ctx.problems[0] if ctx.problems else None
    if ready:
        put(
            ConditionType.READY,
            True,
            "ClusterReady",
            f"{ready_shards} shards ready, cluster_state ok",
        )
    else:
        reason = problem.reason if problem else _step_reason(step)
        put(
            ConditionType.READY,
            False,
            reason,
            f"{ready_shards}/{ctx.wanted} shards ready; cluster_state {cluster_state or 'unknown'}",
        )
    put(
        RedisClusterConditionType.CLUSTER_FORMED,
        ctx.bootstrapped,
        "Formed" if ctx.bootstrapped else "Forming",
        "the cluster was formed and is only healed from now on"
        if ctx.bootstrapped
        else f"waiting for {len(_desired_pods(ctx, sizes))} pods to answer, then forming",
    )
    assigned = picture.slots_assigned if picture.views else 0
    put(
        RedisClusterConditionType.SLOTS_ASSIGNED,
        assigned == SLOT_COUNT,
        "AllSlotsAssigned" if assigned == SLOT_COUNT else "SlotsUnassigned",
        f"{assigned}/{SLOT_COUNT} slots assigned",
    )
    open_count = len(picture.open_slots)
    resharding = to_move > 0 or open_count > 0
    put(
        RedisClusterConditionType.RESHARDING,
        resharding,
        ("ScalingIn" if set(sizes) - set(range(ctx.wanted)) else "Rebalancing")
        if resharding
        else "Balanced",
        f"{to_move} slots to move, {open_count} open" if resharding else "slots evenly split",
    )
    put(
        ConditionType.DEGRADED,
        problem is not None,
        problem.reason if problem else "Healthy",
        "; ".join(p.message for p in ctx.problems) if problem else "no problem found",
    )
    progressing = bool(actions) or step in ("waiting", "settling")
    put(
        ConditionType.PROGRESSING,
        progressing,
        _step_reason(step) if progressing else "Stable",
        (ctx.settling or f"{step}: {len(actions)} actions") if progressing else "nothing to do",
    )
    slots_assigned = assigned
    return RedisClusterStatus(
        observed_generation=generation,
        conditions=conditions,
        phase=phase,
        shards=shards,
        ready_shards=ready_shards,
        slots_assigned=slots_assigned,
        slots_ok=picture.slots_ok if picture.views else 0,
        slots_to_move=to_move,
        cluster_state=cluster_state,
        bootstrapped_at=bootstrapped_at,
        nodes=_node_statuses(ctx, sizes),
        endpoint=cluster.status.endpoint,
        auth_secret_name=cluster.status.auth_secret_name,
    )


def _step_reason(step: str) -> str:
    return {
        "waiting": "WaitingForPods",
        "membership": "Healing",
        "failover": "FailingOver",
        "open-slots": "ClosingOpenSlots",
        "coverage": "AssigningSlots",
        "replicas": "AttachingReplicas",
        "shape": "FailingOver",
        "rebalance": "Resharding",
        "roll": "RollingUpdate",
        "settling": "Settling",
        "degraded": "Degraded",
        "ready": "Ready",
    }.get(step, "Reconciling")
