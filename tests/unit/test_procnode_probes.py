"""Probe schedules and thresholds (pure), and the implicit readiness check."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from swarmops.testbed.procnode.model import ExecAction, Probe, TCPSocketAction, parse_pod
from swarmops.testbed.procnode.probes import (
    FAST_INTERVAL,
    FAST_WINDOW_SECONDS,
    ProbeKind,
    ProbeTracker,
    implicit_readiness_probe,
)


def probe(**kw: int) -> Probe:
    return Probe(ExecAction(("true",)), **kw)


def test_readiness_retries_fast_until_first_success_then_follows_the_period() -> None:
    tracker = ProbeTracker(probe(period_seconds=10), ProbeKind.READINESS, armed_at=100.0)
    assert tracker.due(100.0) and not tracker.result
    tracker.record(False, 100.0)
    assert tracker.next_due == 100.0 + FAST_INTERVAL
    assert tracker.record(True, 100.1) is True
    assert tracker.result and tracker.next_due == 110.1


def test_readiness_needs_failure_threshold_failures_to_turn_unready() -> None:
    tracker = ProbeTracker(probe(failure_threshold=3), ProbeKind.READINESS, 0.0)
    tracker.record(True, 0.0)
    assert not tracker.record(False, 10.0)
    assert not tracker.record(False, 20.0)
    assert tracker.record(False, 30.0) and not tracker.result
    assert tracker.record(True, 40.0) and tracker.result


def test_success_threshold() -> None:
    tracker = ProbeTracker(probe(success_threshold=2), ProbeKind.READINESS, 0.0)
    tracker.record(True, 0.0)
    assert not tracker.result
    tracker.record(True, 0.1)
    assert tracker.result


def test_initial_delay() -> None:
    tracker = ProbeTracker(probe(initial_delay_seconds=5), ProbeKind.LIVENESS, 10.0)
    assert not tracker.due(14.9) and tracker.due(15.0)


def test_liveness_starts_alive_and_is_exhausted_after_threshold() -> None:
    tracker = ProbeTracker(probe(failure_threshold=2, period_seconds=1), ProbeKind.LIVENESS, 0.0)
    assert tracker.result and not tracker.exhausted
    tracker.record(False, 1.0)
    assert not tracker.exhausted
    tracker.record(False, 2.0)
    assert tracker.exhausted
    assert tracker.next_due == 3.0  # liveness never runs fast


def test_startup_probe_counts_fast_failures_once_per_period() -> None:
    tracker = ProbeTracker(probe(failure_threshold=3, period_seconds=1), ProbeKind.STARTUP, 0.0)
    for tenth in range(20):  # two seconds of fast retries: t = 0.0, 0.1, ..., 1.9
        tracker.record(False, tenth / 10)
    assert tracker.next_due - 1.9 <= FAST_INTERVAL + 1e-9
    assert tracker.failures == 2 and not tracker.exhausted
    tracker.record(False, 2.0)
    assert tracker.exhausted


@given(st.lists(st.booleans(), max_size=40), st.integers(1, 4), st.integers(1, 4))
def test_readiness_verdict_follows_the_thresholds(
    results: list[bool], success: int, failure: int
) -> None:
    tracker = ProbeTracker(
        probe(success_threshold=success, failure_threshold=failure), ProbeKind.READINESS, 0.0
    )
    now = 0.0
    for ok in results:
        tracker.record(ok, now)
        now += 20.0
    streak_ok = streak_fail = 0
    expected = False
    seen_success = False
    for ok in results:
        if ok:
            streak_ok, streak_fail = streak_ok + 1, 0
            if streak_ok >= success:
                expected, seen_success = True, True
        else:
            streak_ok = 0
            if seen_success:
                streak_fail += 1
                if streak_fail >= failure:
                    expected = False
    assert tracker.result == expected


def container(**fields: object) -> object:
    raw = {
        "metadata": {"name": "p", "uid": "u"},
        "spec": {"containers": [{"name": "c", "image": "redis", **fields}]},
    }
    return parse_pod(raw).containers[0]


def test_implicit_readiness_is_a_tcp_check_of_the_first_port() -> None:
    spec = parse_pod(
        {
            "metadata": {"name": "p", "uid": "u"},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "redis",
                        "ports": [
                            {"containerPort": 53, "protocol": "UDP"},
                            {"containerPort": 6379},
                            {"containerPort": 16379},
                        ],
                    }
                ]
            },
        }
    ).containers[0]
    implicit = implicit_readiness_probe(spec)
    assert implicit is not None and implicit.action == TCPSocketAction(6379)


def test_no_port_no_probe_means_ready_while_running() -> None:
    spec = parse_pod(
        {
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "redis"}]},
        }
    ).containers[0]
    assert implicit_readiness_probe(spec) is None


def test_fast_retries_stop_after_the_window() -> None:
    tracker = ProbeTracker(probe(period_seconds=10), ProbeKind.READINESS, armed_at=0.0)
    tracker.record(False, 1.0)
    assert tracker.next_due == 1.0 + FAST_INTERVAL
    tracker.record(False, FAST_WINDOW_SECONDS + 0.5)
    assert tracker.next_due == FAST_WINDOW_SECONDS + 10.5
