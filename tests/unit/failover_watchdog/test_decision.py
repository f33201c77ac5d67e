"""The dead-peer rule on made-up timelines (seconds of monotonic time)."""
from __future__ import annotations

import pytest

from dmzkit_remote_access.failover_watchdog.decision import FROZEN, REPORTED_DOWN, HealthStream, ProbeStream

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


# -- the primary's VPN, from its health agent's reports (issue 15, finding 7) ----------

def health() -> HealthStream:
    return HealthStream(down_reports=2, silent_after=2.0)


def reports(h: HealthStream, start: float, *verdicts: str, every: float = 0.1) -> float:
    """Reports from `start`, `every` apart; returns the time of the last."""
    at = start
    for n, verdict in enumerate(verdicts):
        at = start + n * every
        h.on_report(at, (h.seq or 0) + 1, verdict, f"{verdict} because")
    return at


def test_two_down_reports_in_a_row_make_the_vpn_dead() -> None:
    h = health()
    h.on_session(0.0)
    last = reports(h, 0.1, "up", "down")
    assert h.dead(last, host_alive=True) is None  # one report never moves the address
    last = reports(h, last + 0.1, "down")
    assert h.dead(last, host_alive=True) == REPORTED_DOWN
    assert h.dead(last, host_alive=False) == REPORTED_DOWN  # evidence, whatever ARP says
    reports(h, last + 0.1, "up")
    assert h.dead(last + 0.1, host_alive=True) is None and h.healthy(last + 0.1)


@pytest.mark.parametrize("between", ["up", "busy", "restarting"])
def test_down_reports_must_follow_each_other(between: str) -> None:
    h = health()
    h.on_session(0.0)
    last = reports(h, 0.1, "down", between, "down", between, "down")
    assert h.dead(last, host_alive=True) is None


def test_load_is_never_death_however_long_it_lasts() -> None:
    """busy and restarting: alive. A flood follows the VIP; moving it helps nobody."""
    h = health()
    h.on_session(0.0)
    last = reports(h, 0.1, *["busy"] * 300, *["restarting"] * 50)
    assert h.dead(last, host_alive=True) is None
    assert not h.healthy(last)  # but not healthy: no handback to a busy primary


def test_a_silent_session_with_a_live_host_is_a_frozen_primary() -> None:
    """The `podman pause` drill: the kernel answers ARP, no process runs."""
    h = health()
    h.on_session(0.0)
    last = reports(h, 0.1, "up", "up")
    assert h.dead(last + 1.9, host_alive=True) is None
    assert h.dead(last + 2.0, host_alive=True) == FROZEN
    assert h.dead(last + 2.0, host_alive=False) is None  # a silent host is the ARP rule's business
    assert h.state(last + 2.0) == "silent" and not h.healthy(last + 2.0)


def test_a_session_that_never_reports_counts_from_its_start() -> None:
    h = health()
    h.on_session(5.0)
    assert h.dead(6.9, host_alive=True) is None and h.dead(7.0, host_alive=True) == FROZEN


@pytest.mark.parametrize("after", [0.5, 2.0, 600.0])
def test_no_session_is_no_verdict(after: float) -> None:
    """Refused, reset, timed out, a failed handshake: no agent, or someone in
    between. Never a fence, however long; never healthy either."""
    h = health()
    assert h.dead(after, host_alive=True) is None and not h.healthy(after) and h.state(after) == "none"
    h.on_session(0.0)
    reports(h, 0.1, "down", "down")
    h.on_lost()
    assert h.dead(after, host_alive=True) is None


def test_a_stalled_loop_does_not_count_its_own_stall_as_the_agents_silence() -> None:
    h = health()
    h.on_session(0.0)
    last = reports(h, 0.1, "up")
    h.on_stall(last + 2.5)  # our loop woke 2.5 s late: the reports wait unread
    assert h.dead(last + 2.6, host_alive=True) is None
    assert h.dead(last + 2.5 + 2.0, host_alive=True) == FROZEN  # silent for 2 s of running time


def test_judged_afresh_after_a_handback() -> None:
    h = health()
    h.on_session(0.0)
    last = reports(h, 0.1, "down", "down")
    h.reset(last + 10.0)
    assert h.dead(last + 10.0, host_alive=True) is None
    assert h.dead(last + 11.0, host_alive=True) is None
    reports(h, last + 10.1, "down")
    assert h.dead(last + 10.1, host_alive=True) is None  # one report since: not yet


def test_a_report_seen_twice_counts_once_and_the_largest_gap_is_kept() -> None:
    h = health()
    h.on_session(0.0)
    h.on_report(0.1, 7, "down", "")
    h.on_report(0.2, 7, "down", "")  # the same report again
    h.on_report(0.25, 6, "down", "")  # an older one
    assert h.downs == 1 and h.dead(0.3, host_alive=True) is None
    h.on_report(0.9, 8, "up", "")
    assert h.largest_gap == pytest.approx(0.8)
    h.on_lost()
    h.on_report(1.0, 9, "down", "")  # no session: nothing
    assert h.downs == 0
