"""A token bucket, as plain data: the refill rate limit of a warm pool.

`warmPool.refillRate` pods a second, with a burst of one second's worth: a pool that
lost a few pods refills them at once, a pool that lost (or starts with) a thousand
refills at the configured pace, in batches. Times are monotonic seconds, passed in, so
every decision is testable without a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

# Tokens are counted in whole pods; waits below this are not worth a wake-up.
MIN_WAIT_SECONDS = 0.01


@dataclass(frozen=True, slots=True)
class TokenBucket:
    rate: float  # tokens a second, > 0
    burst: float  # most tokens held, >= 1
    tokens: float
    updated: float  # when `tokens` was true

    @classmethod
    def full(cls, rate: float, now: float, burst: float | None = None) -> TokenBucket:
        size = max(1.0, rate if burst is None else burst)
        return cls(rate=rate, burst=size, tokens=size, updated=now)

    def at(self, now: float) -> TokenBucket:
        """The bucket as it is at `now` (time never runs backwards here)."""
        if now <= self.updated:
            return self
        tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        return replace(self, tokens=tokens, updated=now)

    def available(self, now: float) -> int:
        return math.floor(self.at(now).tokens + 1e-9)

    def take(self, count: int, now: float) -> TokenBucket:
        """After spending `count` tokens at `now` (never below zero)."""
        current = self.at(now)
        return replace(current, tokens=max(0.0, current.tokens - count))

    def seconds_until(self, count: int, now: float) -> float:
        """How long until `count` tokens (at most a full bucket) are there."""
        wanted = min(float(count), self.burst)
        missing = wanted - self.at(now).tokens
        if missing <= 0:
            return 0.0
        return max(MIN_WAIT_SECONDS, missing / self.rate)

    def with_rate(self, rate: float, now: float, burst: float | None = None) -> TokenBucket:
        """The same bucket under a new rate (the spec changed): tokens kept, capped."""
        size = max(1.0, rate if burst is None else burst)
        current = self.at(now)
        if (current.rate, current.burst) == (rate, size):
            return current
        return replace(current, rate=rate, burst=size, tokens=min(current.tokens, size))


# A deferred refill waits for a batch of this many seconds' worth of tokens (at least
# one pod), rather than waking for every single token.
REFILL_BATCH_SECONDS = 0.1


def refill_wait(bucket: TokenBucket, deferred: int, now: float) -> float | None:
    """Seconds until the next refill batch of a pool holding back `deferred` pods."""
    if deferred <= 0:
        return None
    batch = min(deferred, max(1, math.ceil(bucket.rate * REFILL_BATCH_SECONDS)))
    return bucket.seconds_until(batch, now)
