"""The token bucket behind the warm pool's refill rate limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmops.core.ratelimit import TokenBucket, refill_wait


def test_a_new_bucket_allows_one_seconds_worth_at_once() -> None:
    bucket = TokenBucket.full(100, now=0.0)
    assert bucket.available(0.0) == 100
    assert bucket.take(100, 0.0).available(0.0) == 0


def test_tokens_come_back_at_the_rate_and_stop_at_the_burst() -> None:
    bucket = TokenBucket.full(10, now=0.0).take(10, 0.0)
    assert bucket.available(0.35) == 3
    assert bucket.available(100.0) == 10
    assert bucket.seconds_until(5, 0.0) == pytest.approx(0.5)
    assert bucket.seconds_until(50, 0.0) == pytest.approx(1.0)  # at most a full bucket
    assert bucket.seconds_until(0, 0.0) == 0.0


def test_a_slow_rate_still_allows_one_pod() -> None:
    bucket = TokenBucket.full(0.5, now=0.0)
    assert bucket.burst == 1.0 and bucket.available(0.0) == 1


def test_time_running_backwards_changes_nothing() -> None:
    bucket = TokenBucket.full(10, now=5.0).take(10, 5.0)
    assert bucket.at(1.0) == bucket


def test_a_new_rate_keeps_the_tokens_up_to_the_new_burst() -> None:
    bucket = TokenBucket.full(100, now=0.0).take(20, 0.0)
    slower = bucket.with_rate(10, 0.0)
    assert (slower.rate, slower.burst, slower.available(0.0)) == (10, 10, 10)
    assert slower.with_rate(10, 0.0) == slower


def test_a_deferred_refill_waits_for_a_batch_not_for_every_pod() -> None:
    empty = TokenBucket.full(100, now=0.0).take(100, 0.0)
    assert refill_wait(empty, 0, 0.0) is None
    assert refill_wait(empty, 500, 0.0) == pytest.approx(0.1)  # 10 pods at 100/s
    assert refill_wait(empty, 3, 0.0) == pytest.approx(0.03)
    slow = TokenBucket.full(2, now=0.0).take(2, 0.0)
    assert refill_wait(slow, 10, 0.0) == pytest.approx(0.5)  # one pod at 2/s


@given(
    rate=st.integers(1, 1000),
    steps=st.lists(st.tuples(st.floats(0, 2), st.integers(0, 2000)), max_size=30),
)
def test_never_more_than_the_burst_plus_the_rate_over_time(
    rate: int, steps: list[tuple[float, int]]
) -> None:
    bucket = TokenBucket.full(rate, now=0.0)
    now, taken = 0.0, 0
    for elapsed, wanted in steps:
        now += elapsed
        granted = min(wanted, bucket.available(now))
        bucket = bucket.take(granted, now)
        taken += granted
        assert granted >= 0
    assert taken <= bucket.burst + rate * now + 1e-6
