"""Work queues on Redis Streams: submit, take, renew, complete, reclaim, and results.

One queue is four streams, P0 to P3, each with the consumer group `agents`; every
agent of the queue is a consumer named after its pod. All the queue's keys share the
hash tag `{<queue>}` (keys.py), so the scripts below run on a Redis Cluster too.

Delivery is at least once: an entry read by an agent stays in the group's pending list
(PEL) until acknowledged. The agent renews its lease on the task it runs; when it
dies, the lease runs out (`visibility timeout`) and another agent takes the task over
(XAUTOCLAIM). A task can therefore run twice; its idempotency key makes the effect
happen once: completion is one script that writes the result with SET NX and
acknowledges the entry, so the first completion wins and a second one only
acknowledges. Handlers with effects of their own use the same key (Task.key).

A task's deliveries are the times a handler was started on it (`start`, counted in the
queue's attempts hash), not Redis's delivery counter: XAUTOCLAIM raises that one at
every take-over, also of a task an agent gave back without running it (it held a more
urgent one), so a task could pass `maxDeliveries` and be dead-lettered without ever
having run. Counting starts keeps the dead letter for tasks that really keep failing.

The producer side (`submit`, `result`, `wait`) is what anyone uses to hand out work and
read what came back; `swarmops.agent.TaskQueue` is the public name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from redis.exceptions import ResponseError

from swarmops.agent.keys import GROUP, QueueKeys
from swarmops.agent.redisconn import RedisClient
from swarmops.agent.scheduling import Priority

COMPLETIONS_MAXLEN: Final = 100_000
DEAD_MAXLEN: Final = 10_000
DEFAULT_RESULT_TTL: Final = 24 * 3600.0
MAX_KEY_LENGTH: Final = 512

# KEYS: the streams to try, most urgent first. ARGV: group, consumer.
# Non-blocking XREADGROUP on each in turn: the first task found is the most urgent one,
# in one round trip. Atomic, so two agents never see the same "first".
_TAKE = """
for i, key in ipairs(KEYS) do
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', key, '>')
  if reply then
    local entry = reply[1][2][1]
    return {i - 1, entry[1], entry[2]}
  end
end
return false
"""

# KEYS: result, attempts. ARGV: the entry's attempts field.
# About to run a task: 0 when its key has a result already (nothing to run), else this
# attempt's number, counted.
_START = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
return redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
"""

# KEYS: stream, result, stats, completions, dead, attempts.
# ARGV: group, entry id, result JSON, result ttl ms, idempotency key, counter, dead JSON,
# the entry's attempts field.
# The result is written only if none exists (the first completion wins); either way
# the entry is acknowledged and deleted, so the stream holds only work not yet done.
_COMPLETE = (
    """
local first = redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[6], ARGV[8])
if ARGV[7] ~= '' then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', '"""
    + str(DEAD_MAXLEN)
    + """', '*',
             'key', ARGV[5], 'entry', ARGV[7])
end
if first then
  redis.call('HINCRBY', KEYS[3], ARGV[6], 1)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', '"""
    + str(COMPLETIONS_MAXLEN)
    + """', '*',
             'key', ARGV[5])
  return 1
end
redis.call('HINCRBY', KEYS[3], 'duplicates', 1)
return 0
"""
)

# KEYS: stream. ARGV: group, consumer, entry id, idle ms.
# Renew (idle 0) or give back (idle = the visibility timeout: reclaimable at once) a
# task, only while this consumer still holds it: after another agent took it over, a
# late renewal must not take it back.
_TOUCH = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then
  return 0
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'JUSTID')
return 1
"""

# KEYS: stream, result, stats. ARGV: key, payload, submitted ms.
# A key whose result exists is done: submitting it again changes nothing.
_SUBMIT = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return false
end
local id = redis.call('XADD', KEYS[1], '*',
                      'key', ARGV[1], 'payload', ARGV[2], 'submitted', ARGV[3])
redis.call('HINCRBY', KEYS[3], 'submitted', 1)
return id
"""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A task delivered to this consumer: it holds the lease until it completes,
    releases, or stops renewing."""

    priority: Priority
    entry_id: str
    key: str  # the idempotency key
    payload: Any
    submitted_ms: int
    # This attempt's number, set by TaskQueue.start: 1 the first time a handler runs the
    # task, more after a lost agent or a Retry; 0 while not started.
    deliveries: int = 0

    @classmethod
    def from_entry(
        cls, priority: Priority, entry_id: str, fields: Mapping[str, str], deliveries: int = 0
    ) -> Delivery:
        raw = fields.get("payload")
        try:
            payload = json.loads(raw) if raw is not None else None
        except ValueError:
            payload = raw  # not ours: hand it over as it is
        return cls(
            priority=priority,
            entry_id=entry_id,
            key=str(fields.get("key") or entry_id),
            payload=payload,
            submitted_ms=int(fields.get("submitted") or 0),
            deliveries=deliveries,
        )

    @property
    def attempts_field(self) -> str:
        """Its field in the queue's attempts hash (entry ids are unique per stream)."""
        return f"{self.priority.name}:{self.entry_id}"

    def entry(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "payload": self.payload,
            "submitted": self.submitted_ms,
            "priority": self.priority.name,
            "deliveries": self.deliveries,
        }


@dataclass(frozen=True, slots=True)
class TaskResult:
    """What came back for an idempotency key."""

    key: str
    ok: bool
    value: Any = None
    error_type: str | None = None
    error: str | None = None
    agent: str | None = None
    priority: str | None = None
    submitted_ms: int | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    deliveries: int | None = None

    def to_json(self) -> str:
        wire: dict[str, Any] = {"key": self.key, "ok": self.ok}
        if self.ok:
            wire["value"] = self.value
        else:
            wire["error"] = {"type": self.error_type, "message": self.error}
        for name, value in (
            ("agent", self.agent),
            ("priority", self.priority),
            ("submittedAt", self.submitted_ms),
            ("startedAt", self.started_ms),
            ("finishedAt", self.finished_ms),
            ("deliveries", self.deliveries),
        ):
            if value is not None:
                wire[name] = value
        return json.dumps(wire, separators=(",", ":"), default=str)

    @classmethod
    def from_json(cls, text: str) -> TaskResult:
        wire = json.loads(text)
        error = wire.get("error") or {}
        return cls(
            key=wire["key"],
            ok=bool(wire["ok"]),
            value=wire.get("value"),
            error_type=error.get("type"),
            error=error.get("message"),
            agent=wire.get("agent"),
            priority=wire.get("priority"),
            submitted_ms=wire.get("submittedAt"),
            started_ms=wire.get("startedAt"),
            finished_ms=wire.get("finishedAt"),
            deliveries=wire.get("deliveries"),
        )


@dataclass(frozen=True, slots=True)
class QueueStats:
    backlog: Mapping[Priority, int]  # entries in each stream (waiting or running)
    pending: Mapping[Priority, int]  # of which delivered and not yet acknowledged
    counters: Mapping[str, int]  # submitted, completed, failed, dead, duplicates


class TaskQueue:
    """One queue: the producer's `submit`/`result`/`wait` and the worker's primitives."""

    def __init__(
        self, redis: RedisClient, name: str, *, result_ttl: float = DEFAULT_RESULT_TTL
    ) -> None:
        self.redis = redis
        self.keys = QueueKeys(name)
        self.name = name
        self.result_ttl_ms = int(result_ttl * 1000)
        self._groups_ready = False
        self._groups_lock = asyncio.Lock()
        self._take = redis.register_script(_TAKE)
        self._start = redis.register_script(_START)
        self._complete = redis.register_script(_COMPLETE)
        self._touch = redis.register_script(_TOUCH)
        self._submit = redis.register_script(_SUBMIT)

    # --- set-up -----------------------------------------------------------------------------

    async def ensure_groups(self) -> None:
        """Create the consumer group on each stream (and the stream), once.

        The group starts at 0, not $: tasks submitted before any agent existed are
        delivered too."""
        if self._groups_ready:
            return
        async with self._groups_lock:  # concurrent first submits create them once
            if self._groups_ready:
                return
            for stream in self.keys.streams:
                try:
                    await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
                except ResponseError as error:
                    if "BUSYGROUP" not in str(error):
                        raise
            self._groups_ready = True

    # --- producer ---------------------------------------------------------------------------

    async def submit(
        self,
        payload: Any,
        priority: Priority | int | str = Priority.P2,
        idempotency_key: str | None = None,
    ) -> str:
        """Queue a task; return its idempotency key (a new UUID unless given).

        The payload must be JSON-serialisable. Submitting a key whose result exists
        queues nothing: that task is done. Submitting a key twice before it completes
        queues it twice, and the first completion is the only effect."""
        level = Priority.parse(priority)
        key = idempotency_key or uuid.uuid4().hex
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ValueError(f"idempotency key: 1 to {MAX_KEY_LENGTH} characters")
        await self.ensure_groups()
        body = json.dumps(payload, separators=(",", ":"))
        await self._submit(
            keys=[self.keys.stream(level), self.keys.result(key), self.keys.stats],
            args=[key, body, now_ms()],
        )
        return key

    async def submit_many(
        self,
        tasks: Sequence[tuple[Any, Priority | int | str, str | None]],
        *,
        concurrency: int = 32,
    ) -> list[str]:
        """Submit (payload, priority, idempotency key or None) tuples, `concurrency` at a
        time (each is one round trip); return their keys in order."""
        limit = asyncio.Semaphore(concurrency)

        async def one(payload: Any, priority: Priority | int | str, key: str | None) -> str:
            async with limit:
                return await self.submit(payload, priority, key)

        return list(await asyncio.gather(*(one(*task) for task in tasks)))

    async def result(self, key: str) -> TaskResult | None:
        text: Any = await self.redis.get(self.keys.result(key))
        return TaskResult.from_json(str(text)) if text is not None else None

    async def wait(self, keys: Collection[str], seconds: float) -> dict[str, TaskResult]:
        """Wait until every key has a result, or `seconds`; return those that have one.

        Blocks on the queue's completions stream, read from where it stood before the
        results were first looked up: a result written after that lookup is announced
        after that point, one written before it is found by the lookup."""
        wanted = set(keys)
        found: dict[str, TaskResult] = {}
        last = await self._last_completion()
        await self._collect(wanted, found)
        deadline = time.monotonic() + seconds
        while len(found) < len(wanted):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            reply: Any = await self.redis.xread(
                {self.keys.completions: last}, count=1000, block=max(1, int(remaining * 1000))
            )
            announced: set[str] = set()
            for _stream, entries in _streams(reply):
                for entry_id, fields in entries:
                    last = str(entry_id)
                    announced.add(str(fields.get("key")))
            await self._collect(announced & wanted - found.keys(), found)
        return found

    async def _last_completion(self) -> str:
        newest = await self.redis.xrevrange(self.keys.completions, count=1)
        return str(newest[0][0]) if newest else "0-0"

    async def _collect(self, keys: Collection[str], found: dict[str, TaskResult]) -> None:
        missing = [k for k in keys if k not in found]
        for start in range(0, len(missing), 500):
            batch = missing[start : start + 500]
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.get(self.keys.result(key))
                texts = await pipe.execute()
            for key, text in zip(batch, texts, strict=True):
                if text is not None:
                    found[key] = TaskResult.from_json(text)

    async def stats(self) -> QueueStats:
        backlog: dict[Priority, int] = {}
        pending: dict[Priority, int] = {}
        for priority in Priority:
            stream = self.keys.stream(priority)
            backlog[priority] = int(await self.redis.xlen(stream))
            try:
                summary = await self.redis.xpending(stream, GROUP)
            except ResponseError:  # no group yet
                summary = {"pending": 0}
            pending[priority] = int(summary.get("pending") or 0)
        raw = await self.redis.hgetall(self.keys.stats)
        counters = {str(k): int(v) for k, v in raw.items()}
        return QueueStats(backlog=backlog, pending=pending, counters=counters)

    # --- worker -----------------------------------------------------------------------------

    async def take(self, consumer: str, priorities: Sequence[Priority]) -> Delivery | None:
        """The first new task in `priorities` (in that order), or None; non-blocking."""
        if not priorities:
            return None
        reply = await self._take(
            keys=[self.keys.stream(p) for p in priorities], args=[GROUP, consumer]
        )
        if not reply:
            return None
        index, entry_id, flat = reply
        return Delivery.from_entry(priorities[int(index)], str(entry_id), _pairs(flat))

    async def wait_for_any(self, consumer: str, block_seconds: float) -> list[Delivery]:
        """Block until a task arrives on any stream; return what was delivered (usually
        one task; more when several streams got one at the same instant), most urgent
        first."""
        reply = await self.redis.xreadgroup(
            GROUP,
            consumer,
            {stream: ">" for stream in self.keys.streams},
            count=1,
            block=max(1, int(block_seconds * 1000)),
        )
        return sorted(self._deliveries(reply), key=lambda d: d.priority)

    async def own_pending(self, consumer: str) -> list[tuple[Priority, str]]:
        """Entries delivered to this consumer name and never acknowledged: a container
        restarted in the same pod finds what its previous run held. XPENDING, not
        XREADGROUP 0, which would count a delivery that never happened."""
        held: list[tuple[Priority, str]] = []
        for priority in Priority:
            details = await self.redis.xpending_range(
                self.keys.stream(priority), GROUP, min="-", max="+", count=1000,
                consumername=consumer,
            )  # fmt: skip
            held += [(priority, str(detail["message_id"])) for detail in details]
        return held

    async def reclaim(
        self, consumer: str, priority: Priority, min_idle_seconds: float, count: int = 1
    ) -> list[Delivery]:
        """Take over up to `count` tasks of `priority` whose lease ran out (XAUTOCLAIM).
        How often each ran is known when it is started (`start`)."""
        stream = self.keys.stream(priority)
        reply = await self.redis.xautoclaim(
            stream, GROUP, consumer, int(min_idle_seconds * 1000), "0-0", count=count
        )
        entries = [(str(i), f) for i, f in (reply[1] if len(reply) > 1 else ()) if f]
        return [Delivery.from_entry(priority, entry_id, fields) for entry_id, fields in entries]

    async def start(self, delivery: Delivery) -> Delivery | None:
        """Count an attempt at running `delivery`, just before its handler starts: the
        delivery with its attempt number (`deliveries`), or None when its key already has
        a result (a duplicate: acknowledge it, run nothing)."""
        attempt = int(
            await self._start(
                keys=[self.keys.result(delivery.key), self.keys.attempts],
                args=[delivery.attempts_field],
            )
        )
        return dataclasses.replace(delivery, deliveries=attempt) if attempt else None

    async def renew(self, consumer: str, delivery: Delivery) -> bool:
        """Extend the lease on a running task; False when another agent has taken it."""
        held = await self._touch(
            keys=[self.keys.stream(delivery.priority)],
            args=[GROUP, consumer, delivery.entry_id, 0],
        )
        return bool(held)

    async def release(self, consumer: str, delivery: Delivery, visibility_seconds: float) -> bool:
        """Give a task back unfinished: it becomes reclaimable at once."""
        return await self.release_entry(
            consumer, delivery.priority, delivery.entry_id, visibility_seconds
        )

    async def release_entry(
        self, consumer: str, priority: Priority, entry_id: str, visibility_seconds: float
    ) -> bool:
        held = await self._touch(
            keys=[self.keys.stream(priority)],
            args=[GROUP, consumer, entry_id, int(visibility_seconds * 1000) + 1],
        )
        return bool(held)

    async def complete(self, delivery: Delivery, result: TaskResult, *, dead: bool = False) -> bool:
        """Record the result (first completion wins) and acknowledge; True when this was
        the first completion of the key. `dead`: also put the entry on the dead-letter
        stream (delivered too often)."""
        counter = "dead" if dead else ("completed" if result.ok else "failed")
        dead_entry = json.dumps(delivery.entry(), default=str) if dead else ""
        first = await self._complete(
            keys=[
                self.keys.stream(delivery.priority),
                self.keys.result(delivery.key),
                self.keys.stats,
                self.keys.completions,
                self.keys.dead,
                self.keys.attempts,
            ],
            args=[
                GROUP,
                delivery.entry_id,
                result.to_json(),
                self.result_ttl_ms,
                delivery.key,
                counter,
                dead_entry,
                delivery.attempts_field,
            ],
        )
        return bool(first)

    def _deliveries(self, reply: Any) -> list[Delivery]:
        by_stream = {stream: p for p, stream in zip(Priority, self.keys.streams, strict=True)}
        deliveries = []
        for stream, entries in _streams(reply):
            priority = by_stream[str(stream)]
            for entry in entries:
                entry_id, fields = entry[0], entry[1]
                if fields:  # an entry deleted since it was delivered has no fields
                    deliveries.append(Delivery.from_entry(priority, str(entry_id), fields))
        return deliveries


def _streams(reply: Any) -> list[tuple[Any, Any]]:
    """XREAD's reply as (stream, entries) pairs: RESP2 gives a list, RESP3 a dict."""
    if isinstance(reply, dict):
        return list(reply.items())
    return [(item[0], item[1]) for item in reply or ()]


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
