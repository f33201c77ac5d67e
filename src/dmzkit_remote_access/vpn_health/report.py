"""What the agent tells the watchdog: one JSON line per check, on one lasting
connection. Shared by both ends, so they read it the same way."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# A report is a few hundred bytes; a longer line is not one.
MAX_LINE = 16 * 1024


class Verdict(StrEnum):
    # Every check passed.
    UP = "up"
    # Alive, but loaded: a long accept queue, a control request answered late
    # or not at all while the service's processes keep using CPU. Never a
    # reason to move the address: the load comes with it.
    BUSY = "busy"
    # systemd is starting, stopping or reloading the unit (an operator's or
    # Ansible's restart), for at most restart_grace seconds.
    RESTARTING = "restarting"
    # Positive evidence of a fault on the gateway: the unit is inactive or
    # failed, its main process exited or is stopped, a listener is gone, or
    # the main process left a control request unanswered while making no
    # progress.
    DOWN = "down"


# The overall verdict is the worst of the services'.
SEVERITY = {Verdict.UP: 0, Verdict.BUSY: 1, Verdict.RESTARTING: 2, Verdict.DOWN: 3}


@dataclass(frozen=True)
class Report:
    seq: int
    verdict: Verdict
    reason: str
    # Per unit: its verdict, reason and the figures behind them (for people).
    services: dict[str, dict[str, Any]] = field(default_factory=dict)

    def encode(self) -> bytes:
        body = {"seq": self.seq, "vpn": self.verdict.value, "reason": self.reason, "services": self.services}
        return json.dumps(body, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> Report:
        """A report from one line; ValueError for anything else."""
        if len(line) > MAX_LINE:
            raise ValueError("report too long")
        try:
            body = json.loads(line)
        except RecursionError:  # nested deeper than the parser goes: no report either
            raise ValueError("a report nested too deep") from None
        if not isinstance(body, dict):
            raise ValueError("a report is a JSON object")
        seq, verdict, reason = body.get("seq"), body.get("vpn"), body.get("reason", "")
        services = body.get("services", {})
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError(f"bad seq {seq!r}")
        if not isinstance(reason, str) or not isinstance(services, dict):
            raise ValueError("bad reason or services")
        return cls(seq=seq, verdict=Verdict(verdict), reason=reason, services=services)
