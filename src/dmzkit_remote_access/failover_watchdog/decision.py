"""When is a peer dead? A time-based rule that a stalled scheduler cannot fool.

A probe stream (ARP for the VIP, ARP for the management address, the witness)
is dead when it has had no reply for `dead_time` *and* at least `misses`
probes were really sent in that time, spaced at least half an interval apart,
the last one with `rtt_budget` left to be answered.

A tick that runs more than half an interval late is a scheduler stall: its
probe is still sent, but it is not counted, and missed ticks are never
caught up. After a 2 s stall the stream needs `misses` fresh, on-time probes
before it can be declared dead (failover.md §6: counting the catch-up ticks
as misses gave a false takeover under CPU load).

The primary's VPN is judged from its health agent's reports (HealthStream):
dead only on positive evidence (reports of "down", or an authenticated
session gone silent while the host answers ARP), never on slowness or an
agent that cannot be reached.

All times are `time.monotonic()` seconds; nothing here reads a clock, so the
rules are tested with made-up timelines.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ProbeStream:
    interval: float
    misses: int
    rtt_budget: float
    last_reply: float | None = None
    # Sends since the last reply that count towards a verdict.
    counted_sends: list[float] = field(default_factory=list)
    stalls: int = 0
    sent: int = 0

    @property
    def dead_time(self) -> float:
        return self.interval * self.misses

    def on_send(self, now: float, due: float) -> bool:
        """Record a probe sent at `now` for a tick that was due at `due`.

        Returns whether it counts; a late tick (a stall) does not.
        """
        self.sent += 1
        if now - due > self.interval / 2:
            self.stalls += 1
            return False
        if self.counted_sends and now - self.counted_sends[-1] < self.interval / 2:
            return False
        self.counted_sends.append(now)
        return True

    def on_reply(self, at: float) -> None:
        """A reply arrived at `at` (the kernel's receive time when known)."""
        if self.last_reply is None or at > self.last_reply:
            self.last_reply = at
        self.counted_sends = [t for t in self.counted_sends if t > at]

    def dead_at(self, started: float) -> float | None:
        """When the stream is dead if no reply comes; None while fewer than
        `misses` probes count. A moment, not a comparison of differences:
        `(t + budget) - t` can round below `budget` at large clock values."""
        if len(self.counted_sends) < self.misses:
            return None
        heard = self.last_reply if self.last_reply is not None else started
        return max(heard + self.dead_time, self.counted_sends[-1] + self.rtt_budget)

    def is_dead(self, now: float, started: float) -> bool:
        at = self.dead_at(started)
        return at is not None and now >= at

    def answered_within(self, now: float, window: float) -> bool:
        return self.last_reply is not None and now - self.last_reply <= window

    def reset(self) -> None:
        """Start counting afresh (after a state change), keeping the last reply."""
        self.counted_sends.clear()


# Why a VPN counts as dead (fixed texts: they label the transitions' metric).
REPORTED_DOWN = "its health agent reports the VPN down"
FROZEN = "its health agent went silent while the host answers ARP (frozen)"


@dataclass
class HealthStream:
    """What the primary's health agent has said, and when.

    Dead takes positive evidence: `down_reports` consecutive reports saying
    "down", or an authenticated session that has been silent for
    `silent_after` while the primary's host still answers ARP (its kernel
    runs, its processes do not). Everything else says nothing against the
    primary: "busy" and "restarting" reports, a connection refused, reset,
    timed out or never authenticated (no agent, or someone in between) are
    never a reason to fence. Healthy (the primary may have the VIP back)
    takes an "up" report less than `silent_after` old.

    A stalled loop (on_stall) did not hear the agent: silence is counted
    from when it runs again, as the ARP rule counts no late probe.
    """
    down_reports: int
    silent_after: float
    session: bool = False  # an authenticated session is open
    quiet_from: float | None = None  # silence counts from here: the session's start, a report, a stall's end
    last_report: float | None = None
    verdict: str | None = None
    reason: str = ""
    seq: int | None = None
    downs: int = 0
    # The longest silence between two reports of one session (seconds).
    largest_gap: float = 0.0

    def on_session(self, at: float) -> None:
        self.session, self.quiet_from, self.last_report = True, at, None
        self.verdict, self.reason, self.seq, self.downs = None, "", None, 0

    def on_report(self, at: float, seq: int, verdict: str, reason: str) -> None:
        if not self.session or (self.seq is not None and seq <= self.seq):
            return  # not from a session, or a report seen already
        if self.last_report is not None:
            self.largest_gap = max(self.largest_gap, at - self.last_report)
        self.last_report, self.seq, self.verdict, self.reason = at, seq, verdict, reason
        self.quiet_from = at if self.quiet_from is None else max(self.quiet_from, at)
        self.downs = self.downs + 1 if verdict == "down" else 0

    def on_lost(self) -> None:
        self.session, self.quiet_from, self.last_report, self.verdict, self.seq = False, None, None, None, None
        self.reason, self.downs = "", 0

    def on_stall(self, now: float) -> None:
        if self.quiet_from is not None:
            self.quiet_from = max(self.quiet_from, now)

    def reset(self, now: float) -> None:
        """Judge afresh (after a handback, a yield, a fault): old reports count for nothing."""
        self.downs = 0
        self.on_stall(now)

    def dead(self, now: float, host_alive: bool) -> str | None:
        """Why the VPN is dead, or None."""
        if self.downs >= self.down_reports:
            return REPORTED_DOWN
        if host_alive and self.session and self.quiet_from is not None and now >= self.quiet_from + self.silent_after:
            return FROZEN
        return None

    def healthy(self, now: float) -> bool:
        return (self.session and self.verdict == "up" and self.last_report is not None
                and now < self.last_report + self.silent_after)

    def state(self, now: float) -> str:
        """For people: none (no session), silent, or the last verdict."""
        if not self.session or self.quiet_from is None:
            return "none"
        if now >= self.quiet_from + self.silent_after:
            return "silent"
        return self.verdict or "connected"
