"""Where a queue lives in Redis: every key of one queue shares a hash tag.

In a Redis Cluster a command or a script may only touch keys of one slot. A queue's
four priority streams, its results, its counters and its agents' heartbeats all carry
the hash tag `{<queue>}`, so they share one slot: one script reads the priority
streams in order and one script completes a task (result, ack, delete, counters)
atomically. Different queues hash to different slots, which is how load spreads over
the shards; one queue's throughput is bounded by one shard (one Redis process does
well over 50,000 stream operations a second, far beyond what agents that run model
calls consume).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from swarmops.agent.scheduling import Priority

PREFIX: Final = "swarmops"
GROUP: Final = "agents"
# Braces would open a second hash tag inside ours, and whitespace has no place in a key.
_QUEUE_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$")


def valid_queue_name(name: str) -> bool:
    return bool(_QUEUE_NAME.match(name))


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue."""

    queue: str

    def __post_init__(self) -> None:
        if not valid_queue_name(self.queue):
            raise ValueError(
                f"queue name {self.queue!r}: 1-200 characters of letters, digits and ._:/- "
                "starting with a letter or digit"
            )

    @property
    def tag(self) -> str:
        return f"{PREFIX}:{{{self.queue}}}"

    def stream(self, priority: Priority) -> str:
        return f"{self.tag}:{priority.name.lower()}"

    @property
    def streams(self) -> tuple[str, ...]:
        """All four streams, most urgent first."""
        return tuple(self.stream(p) for p in Priority)

    def result(self, idempotency_key: str) -> str:
        return f"{self.tag}:result:{idempotency_key}"

    @property
    def completions(self) -> str:
        """A stream of idempotency keys as they complete: what result waiters block on."""
        return f"{self.tag}:completions"

    @property
    def dead(self) -> str:
        """Tasks delivered too often without completing (poison), for people to look at."""
        return f"{self.tag}:dead"

    @property
    def attempts(self) -> str:
        """A hash: stream entry -> how many times a handler was started on it. What
        `maxDeliveries` counts; an entry's field goes when the entry is acknowledged."""
        return f"{self.tag}:attempts"

    @property
    def stats(self) -> str:
        """A hash of counters: submitted, completed, duplicates, failed, dead."""
        return f"{self.tag}:stats"

    @property
    def agents(self) -> str:
        """A sorted set of agent names scored by when their heartbeat expires."""
        return f"{self.tag}:agents"

    def agent(self, name: str) -> str:
        """One agent's heartbeat: a hash that expires unless renewed."""
        return f"{self.tag}:agent:{name}"
