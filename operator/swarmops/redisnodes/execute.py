"""Carry out the plan's Redis actions through redis.asyncio.

Each action is one small, idempotent step; a failure is reported and the next reconcile
decides again from what Redis then says. Slot migrations follow the protocol Redis
documents for CLUSTER SETSLOT: IMPORTING on the destination first, then MIGRATING on the
source, then MIGRATE the keys in batches, then SETSLOT NODE on the destination, the
source and every other master.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from swarmops.core.rediscluster.plan import (
    Action,
    AddSlots,
    CloseSlot,
    DeletePod,
    Failover,
    Forget,
    Meet,
    MoveSlots,
    Replicate,
)
from swarmops.redisnodes.connections import MIGRATE_TIMEOUT_MS, NodeConnections
from swarmops.redisnodes.observe import NODE_ERRORS

logger = logging.getLogger(__name__)

#: Keys per MIGRATE: large enough to amortise the round trip, small enough that one
#: MIGRATE never blocks the source for long.
KEYS_PER_MIGRATE = 500
#: Slots whose IMPORTING/MIGRATING/NODE commands go out in one pipeline.
SLOTS_PER_PIPELINE = 64


@dataclass
class Report:
    """What one round of execution achieved."""

    done: list[Action] = field(default_factory=list)
    failed: list[tuple[Action, str]] = field(default_factory=list)
    slots_moved: int = 0
    keys_moved: int = 0
    keys_replaced: int = 0  # BUSYKEY on the destination, resolved in favour of the owner

    def merge(self, other: Report) -> None:
        self.done += other.done
        self.failed += other.failed
        self.slots_moved += other.slots_moved
        self.keys_moved += other.keys_moved
        self.keys_replaced += other.keys_replaced


class ActionFailed(Exception):
    pass


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Executor:
    """Runs actions against the nodes; `pod_ips` says where each pod is now."""

    def __init__(
        self,
        connections: NodeConnections,
        pod_ips: Mapping[str, str],
        masters: Sequence[str],
        *,
        time_budget: float = 10.0,
    ) -> None:
        self._connections = connections
        self._ips = dict(pod_ips)
        self._masters = list(masters)  # pods of every master, for SETSLOT NODE broadcasts
        self._deadline = time.monotonic() + time_budget

    async def _command(self, pod: str, *args: Any) -> Any:
        client = self._client(pod)
        return await client.execute_command(*args)  # type: ignore[no-untyped-call]

    def _client(self, pod: str) -> aioredis.Redis:
        ip = self._ips.get(pod)
        if not ip:
            raise ActionFailed(f"pod {pod} has no address")
        return self._connections.client(ip)

    async def run(self, actions: Sequence[Action]) -> Report:
        report = Report()
        # Pod deletions are the Kubernetes side's business, not this executor's.
        simple = [a for a in actions if not isinstance(a, MoveSlots | CloseSlot | DeletePod)]
        if simple:
            outcomes = await asyncio.gather(
                *(self._simple(action) for action in simple), return_exceptions=True
            )
            for single, outcome in zip(simple, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, (ActionFailed, *NODE_ERRORS)):
                        raise outcome
                    report.failed.append((single, str(outcome)))
                else:
                    report.done.append(single)
        for action in actions:
            if not isinstance(action, MoveSlots | CloseSlot):
                continue
            if time.monotonic() > self._deadline:
                break  # the next reconcile carries on, with a fresh look
            try:
                if isinstance(action, MoveSlots):
                    report.merge(await self._move(action))
                else:
                    report.merge(await self._close(action))
            except (ActionFailed, *NODE_ERRORS) as error:
                report.failed.append((action, str(error)))
        return report

    # --- single commands --------------------------------------------------------------------

    async def _simple(self, action: Action) -> None:
        if isinstance(action, Meet):
            await self._command(action.pod, "CLUSTER", "MEET", action.ip, action.port)
        elif isinstance(action, Forget):
            await self._forget(action)
        elif isinstance(action, AddSlots):
            args: list[Any] = []
            for r in action.ranges:
                args += [r.start, r.end]
            await self._command(action.pod, "CLUSTER", "ADDSLOTSRANGE", *args)
        elif isinstance(action, Replicate):
            await self._command(action.pod, "CLUSTER", "REPLICATE", action.master_id)
        elif isinstance(action, Failover):
            mode = ["FORCE"] if action.force else []
            await self._command(action.pod, "CLUSTER", "FAILOVER", *mode)
        else:
            raise ActionFailed(f"not a Redis action: {action}")

    async def _forget(self, action: Forget) -> None:
        # Every node must forget within 60 s, or gossip brings the node back.
        results = await asyncio.gather(
            *(self._command(pod, "CLUSTER", "FORGET", action.node_id) for pod in action.pods),
            return_exceptions=True,
        )
        errors = [
            str(r) for r in results if isinstance(r, BaseException) and "Unknown node" not in str(r)
        ]
        if errors:
            raise ActionFailed("; ".join(errors))

    # --- slots ------------------------------------------------------------------------------

    async def _pipeline(
        self, pod: str, commands: Sequence[Sequence[Any]], *, strict: bool = True
    ) -> list[Any]:
        if not commands:
            return []
        async with self._client(pod).pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        if strict:
            errors = [r for r in results if isinstance(r, Exception)]
            if errors:
                raise ActionFailed(f"{pod}: {errors[0]}")
        return results

    async def _move(self, action: MoveSlots) -> Report:
        report = Report()
        for start in range(0, len(action.slots), SLOTS_PER_PIPELINE):
            chunk = action.slots[start : start + SLOTS_PER_PIPELINE]
            # Destination first: it must accept ASK-redirected clients before the source
            # starts redirecting them.
            await self._pipeline(
                action.target_pod,
                [("CLUSTER", "SETSLOT", s, "IMPORTING", action.source_id) for s in chunk],
            )
            await self._pipeline(
                action.source_pod,
                [("CLUSTER", "SETSLOT", s, "MIGRATING", action.target_id) for s in chunk],
            )
            report.merge(await self._drain(action.source_pod, action.target_pod, chunk))
            await self._finish(chunk, action.target_id, action.target_pod, action.source_pod)
            report.slots_moved += len(chunk)
        report.done.append(action)
        return report

    async def _close(self, action: CloseSlot) -> Report:
        report = Report()
        slot = action.slot
        if action.target_pod is None or action.target_id is None:
            await self._pipeline(action.owner_pod, [("CLUSTER", "SETSLOT", slot, "STABLE")])
            for pod in action.clear_pods:
                await self._settle(pod, slot, action.owner_id)
            report.done.append(action)
            return report
        await self._pipeline(
            action.target_pod, [("CLUSTER", "SETSLOT", slot, "IMPORTING", action.owner_id)]
        )
        await self._pipeline(
            action.owner_pod, [("CLUSTER", "SETSLOT", slot, "MIGRATING", action.target_id)]
        )
        # Writes may have reached the owner for keys that had already moved (a promoted
        # replica does not know its old master was migrating): the owner's copy is the
        # later one, so it replaces the destination's.
        report.merge(await self._drain(action.owner_pod, action.target_pod, [slot], replace=True))
        await self._finish([slot], action.target_id, action.target_pod, action.owner_pod)
        for pod in action.clear_pods:
            await self._settle(pod, slot, action.target_id)
        report.slots_moved += 1
        report.done.append(action)
        return report

    async def _settle(self, pod: str, slot: int, owner: str) -> None:
        """Clear a stale mark: point the slot at its owner, or just make it stable."""
        result = await self._pipeline(
            pod, [("CLUSTER", "SETSLOT", slot, "NODE", owner)], strict=False
        )
        if isinstance(result[0], Exception):
            await self._pipeline(pod, [("CLUSTER", "SETSLOT", slot, "STABLE")])

    async def _drain(
        self, source: str, target: str, slots: Sequence[int], *, replace: bool = False
    ) -> Report:
        """MIGRATE every key of `slots` from `source` to `target`."""
        report = Report()
        target_ip = self._ips.get(target)
        if not target_ip:
            raise ActionFailed(f"pod {target} has no address")
        auth = self._connections.auth
        pending = list(slots)
        while pending:
            listed = await self._pipeline(
                source, [("CLUSTER", "GETKEYSINSLOT", s, KEYS_PER_MIGRATE) for s in pending]
            )
            batches = [(s, keys) for s, keys in zip(pending, listed, strict=True) if keys]
            if not batches:
                return report
            commands = []
            for _slot, keys in batches:
                command: list[Any] = ["MIGRATE", target_ip, auth.port, "", 0, MIGRATE_TIMEOUT_MS]
                if replace:
                    command.append("REPLACE")
                if auth.password:
                    command += ["AUTH", auth.password]
                commands.append([*command, "KEYS", *keys])
            results = await self._pipeline(source, commands, strict=False)
            busy: list[tuple[int, list[Any]]] = []
            for (slot, keys), result in zip(batches, results, strict=True):
                if isinstance(result, redis.exceptions.ResponseError):
                    if "BUSYKEY" in str(result) and not replace:
                        busy.append((slot, keys))
                        continue
                    raise ActionFailed(f"MIGRATE of slot {slot} from {source}: {result}")
                if isinstance(result, Exception):
                    raise ActionFailed(f"MIGRATE of slot {slot} from {source}: {result}")
                report.keys_moved += len(keys)
            if busy:
                # The destination already has some of these keys: a migration was cut short
                # and writes went on at the owner since. The owner's copy is the later one.
                logger.warning(
                    "%d keys of %d slots already exist on %s; replacing them with the copies on %s",
                    sum(len(k) for _, k in busy),
                    len(busy),
                    target,
                    source,
                )
                report.merge(await self._drain(source, target, [s for s, _ in busy], replace=True))
                report.keys_replaced += sum(len(k) for _, k in busy)
            pending = [s for s, _ in batches]
        return report

    async def _finish(self, slots: Sequence[int], target_id: str, target: str, source: str) -> None:
        """SETSLOT NODE: destination first (it takes ownership and bumps its epoch), then
        the source (refused while it still holds keys of the slot), then every other master
        so clients are redirected right away rather than after gossip."""
        commands = [("CLUSTER", "SETSLOT", s, "NODE", target_id) for s in slots]
        await self._pipeline(target, commands)
        results = await self._pipeline(source, commands, strict=False)
        leftovers = [s for s, r in zip(slots, results, strict=True) if isinstance(r, Exception)]
        if leftovers:
            # A key reached the source between the last listing and NODE: move it, retry.
            await self._drain(source, target, leftovers)
            await self._pipeline(
                source, [("CLUSTER", "SETSLOT", s, "NODE", target_id) for s in leftovers]
            )
        others = [pod for pod in self._masters if pod not in (target, source)]
        waits: list[Awaitable[list[Any]]] = [
            self._pipeline(pod, commands, strict=False) for pod in others
        ]
        await asyncio.gather(*waits, return_exceptions=True)
