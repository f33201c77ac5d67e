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

All times are `time.monotonic()` seconds; nothing here reads a clock, so the
rule is tested with made-up timelines.
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
