"""The dead-peer rule on made-up timelines (seconds of monotonic time)."""
from __future__ import annotations

import pytest

from dmzkit_remote_access.failover_watchdog.decision import ProbeStream

INTERVAL = 0.1


def stream() -> ProbeStream:
    return ProbeStream(interval=INTERVAL, misses=3, rtt_budget=0.02)


def run_ticks(s: ProbeStream, start: float, count: int, late: float = 0.0) -> float:
    """Send `count` on-time probes from `start`; return the time of the last."""
    t = start
    for i in range(count):
        t = start + i * INTERVAL
        s.on_send(t + late, due=t)
    return t + late


def test_three_silent_probes_make_the_peer_dead() -> None:
    s = stream()
    s.on_reply(0.0)
    last = run_ticks(s, 0.1, 3)
    assert not s.is_dead(last, started=0.0)  # 0.3 s silent, but the last probe has had no time
    assert s.is_dead(last + 0.02, started=0.0)


@pytest.mark.parametrize("clock", [0.0, 1000.07, 86400.3, 123456.789])
def test_the_verdict_falls_when_the_last_probes_budget_is_up(clock: float) -> None:
    """Whatever the clock reads: at 1000.07 s, `(t + 0.02) - t` is below 0.02,
    and a rule comparing differences decided a whole tick late."""
    s = stream()
    s.on_reply(clock)
    last = run_ticks(s, clock + 0.1, 3)
    assert s.dead_at(started=clock) == last + 0.02
    assert s.is_dead(last + 0.02, started=clock)
    assert not s.is_dead(last + 0.019, started=clock)


def test_a_stream_with_too_few_counted_probes_has_no_verdict_time() -> None:
    s = stream()
    s.on_reply(0.0)
    run_ticks(s, 0.1, 2)
    assert s.dead_at(started=0.0) is None
    assert not s.is_dead(5.0, started=0.0)


def test_a_reply_clears_the_misses() -> None:
    s = stream()
    s.on_reply(0.0)
    run_ticks(s, 0.1, 3)
    s.on_reply(0.31)
    assert not s.is_dead(0.35, started=0.0)
    run_ticks(s, 0.4, 2)
    assert not s.is_dead(0.62, started=0.0)  # silent 0.31 s but only two probes since the reply


def test_one_lost_probe_is_not_death() -> None:
    s = stream()
    for i in range(50):
        t = i * INTERVAL
        s.on_send(t, due=t)
        if i % 7 != 3:  # every seventh probe is lost
            s.on_reply(t + 0.001)
        assert not s.is_dead(t + 0.05, started=0.0)


def test_a_scheduler_stall_does_not_count_as_misses() -> None:
    """The loop sleeps 2 s (CPU starvation) while the peer is healthy: the
    late tick is a stall, missed ticks are not caught up, and replies to the
    probes sent after the stall keep the peer alive."""
    s = stream()
    s.on_reply(0.0)
    assert s.on_send(0.1, due=0.1)
    # Woken at 2.1 s for the tick due at 0.2 s: the reply to it is not in yet.
    assert not s.on_send(2.1, due=0.2)
    assert s.stalls == 1
    # Silence is 2.1 s > dead_time, yet only one probe counted: not dead.
    assert not s.is_dead(2.15, started=0.0)
    # The next ticks are on time again and the peer answers each.
    for t in (2.2, 2.3):
        assert s.on_send(t, due=t)
        s.on_reply(t + 0.002)
    assert not s.is_dead(2.4, started=0.0)


def test_after_a_stall_a_dead_peer_still_needs_fresh_on_time_probes() -> None:
    s = stream()
    s.on_reply(0.0)
    s.on_send(2.0, due=0.1)  # stalled tick: not counted
    s.on_send(2.1, due=2.1)
    s.on_send(2.2, due=2.2)
    assert not s.is_dead(2.25, started=0.0)
    s.on_send(2.3, due=2.3)
    assert s.is_dead(2.32, started=0.0)


def test_probes_closer_than_half_an_interval_count_once() -> None:
    s = stream()
    s.on_reply(0.0)
    for t in (0.1, 0.11, 0.12, 0.13):
        s.on_send(t, due=t)
    assert len(s.counted_sends) == 1


def test_a_peer_never_heard_is_timed_from_the_start() -> None:
    s = stream()
    run_ticks(s, 10.0, 3)
    assert not s.is_dead(10.25, started=10.0)
    assert s.is_dead(10.32, started=10.0)


def test_late_reply_with_kernel_timestamp_counts_for_its_time() -> None:
    """A reply received before the stalled loop read it keeps its kernel time."""
    s = stream()
    s.on_reply(0.0)
    run_ticks(s, 0.1, 3)
    s.on_reply(0.305)  # read at 0.9 s, stamped by the kernel at 0.305 s
    assert s.counted_sends == []
    assert not s.is_dead(0.9, started=0.0)
