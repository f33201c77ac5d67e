"""What the agent looks at, and the verdict it draws, free of I/O where it can be.

Only positive evidence of a local fault makes a service DOWN: systemd says
the unit is inactive or failed, its main process is gone or stopped, one of
its listening sockets is missing, or its main process left a control
request unanswered while the unit's processes made no CPU progress. Anything
load explains (a long accept queue, a control request that takes long while
CPU time is being spent) is BUSY; systemd restarting the unit, or a unit
just started that does not listen yet, is RESTARTING for restart_grace
seconds. Nothing here is judged from the public path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum

from .report import Verdict

# ActiveState values of a unit systemd is changing (a job runs on it).
CHANGING = frozenset({"activating", "deactivating", "reloading", "refreshing"})
# ActiveState values of a unit that is not running.
STOPPED = frozenset({"inactive", "failed", "maintenance"})
PROPERTIES = ("Id", "ActiveState", "SubState", "Job", "MainPID", "ActiveEnterTimestampMonotonic", "Restart")
# A process state that could not be read: no evidence either way.
UNKNOWN = "?"
# Connections waiting in a listener's accept queue that make a service BUSY:
# behind ocserv's throttle (one accept per 100 ms) they wait 6 s and more.
BUSY_QUEUE = 64


@dataclass(frozen=True)
class UnitState:
    active: str  # ActiveState
    sub: str  # SubState
    job: bool  # a job (start, stop, restart, reload) is queued or running
    main_pid: int  # 0: none
    # When the unit last became active, in time.monotonic() seconds (both
    # read CLOCK_MONOTONIC); None: never, or systemd did not say.
    active_since: float | None = None
    # Restart= is not "no": systemd may start the unit again after it stops
    # on its own (unknown counts as may).
    restarts: bool = True

    @property
    def changing(self) -> bool:
        return self.job or self.active in CHANGING

    @property
    def running(self) -> bool:
        """Running, and nobody is changing that."""
        return not self.changing and self.active not in STOPPED


def parse_units(text: str) -> dict[str, UnitState]:
    """`systemctl show --property=Id,ActiveState,SubState,Job,MainPID,... UNIT...`:
    one block of KEY=VALUE lines per unit, blocks apart by an empty line.
    systemctl leaves Job out, or empty, when the unit has no job."""
    units: dict[str, UnitState] = {}
    for block in text.split("\n\n"):
        values = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" not in values or "ActiveState" not in values:
            continue
        pid = values.get("MainPID", "0").strip()
        job = values.get("Job", "").strip()
        entered = values.get("ActiveEnterTimestampMonotonic", "").strip()
        units[values["Id"]] = UnitState(active=values["ActiveState"].strip(), sub=values.get("SubState", "").strip(),
                                        job=job not in ("", "0"), main_pid=int(pid) if pid.isdigit() else 0,
                                        active_since=int(entered) / 1e6 if entered.isdigit() and entered != "0" else None,
                                        restarts=values.get("Restart", "").strip() != "no")
    return units


def queue_of(listener: str, table: dict[str, int]) -> int | None:
    """The accept queue of the socket that serves `listener` (address:port),
    None when nothing does; a socket bound to 0.0.0.0 serves every address."""
    _, _, port = listener.rpartition(":")
    return table.get(listener, table.get(f"0.0.0.0:{port}"))


def missing(listeners: tuple[str, ...], table: dict[str, int]) -> tuple[str, ...]:
    """The listeners nobody listens on."""
    return tuple(listener for listener in listeners if queue_of(listener, table) is None)


def stat_fields(pid: int, proc: str = "/proc") -> list[str] | None:
    """/proc/PID/stat from the state on (its third field), or None without
    such a process. The command name may hold spaces and parentheses. Any
    other failure (no file descriptor left, ...) is an OSError: it says
    nothing about the process."""
    try:
        with open(f"{proc}/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rfind(")") + 2:].split()


def process_state(pid: int, proc: str = "/proc") -> str | None:
    """The state letter of a process (R, S, D, T, t, Z...), None if there is
    none, UNKNOWN when it cannot be read."""
    try:
        fields = stat_fields(pid, proc)
    except OSError:
        return UNKNOWN
    return fields[0] if fields else None


def cpu_ticks(pid: int, proc: str = "/proc") -> int | None:
    """CPU time (clock ticks) of `pid` and its children, or None without
    `pid`. ocserv's main process forks its security module and its workers:
    when any of them runs, the service makes progress (a main process waiting
    on a security module busy signing a flood's handshakes is not hung)."""
    total, found = 0, False
    try:
        entries = [e.name for e in os.scandir(proc) if e.name.isdigit()]
    except OSError:
        return None
    for name in entries:
        try:
            fields = stat_fields(int(name), proc)
        except OSError:
            return None
        # From the state: state, ppid, ..., utime (12th), stime (13th).
        if fields is None or len(fields) < 13:
            continue
        if int(name) == pid or fields[1] == str(pid):
            total += int(fields[11]) + int(fields[12])
            found |= int(name) == pid
    return total if found else None


class Control(StrEnum):
    ANSWERED = "answered"
    ERROR = "error"  # failed at once: says nothing about the service (a wrong path, no permission)
    SLOW = "slow"  # unanswered, but the unit's processes used CPU meanwhile
    HUNG = "hung"  # unanswered, and no CPU progress


@dataclass(frozen=True)
class ControlResult:
    outcome: Control
    seconds: float
    detail: str = ""


@dataclass(frozen=True)
class Observed:
    """One service at one check."""
    unit: UnitState | None  # None: systemd has not answered yet
    process: str | None  # the main process's state letter; None: gone, or no main process known
    missing: tuple[str, ...] = ()
    queues: dict[str, int] | None = None  # listener -> connections in its accept queue
    control: ControlResult | None = None


def judge(unit: str, seen: Observed, changing_for: float, restart_grace: float,
          stale: bool = False, started_for: float | None = None) -> tuple[Verdict, str]:
    """A service's verdict and why. `changing_for`: seconds systemd has been
    changing the unit (0 when it is not). `stale`: the process or a listener
    went, and systemd has not answered since: it may be restarting the unit
    (a restart job stops the process first), so that is no death yet.
    `started_for`: seconds since the unit became active (None: unknown); a
    Type=simple unit is active from the fork, and listens a moment later."""
    u = seen.unit
    if u is not None and u.active == "deactivating" and not u.job and not u.restarts:
        # Nobody asked for a stop: its main process went, and nothing will start it again.
        return Verdict.DOWN, f"{unit} is stopping on its own ({u.sub}) and has Restart=no"
    if u is not None and u.changing:
        what = f"{u.active} ({u.sub}{', a job queued' if u.job else ''})"
        if changing_for >= restart_grace:
            return Verdict.DOWN, f"{unit} has been {what} for {changing_for:.1f} s"
        return Verdict.RESTARTING, f"{unit} is {what}"
    if u is not None and u.active in STOPPED:
        return Verdict.DOWN, f"{unit} is {u.active} ({u.sub})"
    pid = u.main_pid if u is not None else 0
    fault = ""
    if pid and seen.process in (None, "Z", "X"):
        fault = f"the main process {pid} of {unit} has exited"
    elif pid and seen.process in ("T", "t"):
        fault = f"the main process {pid} of {unit} is stopped"
    elif seen.missing:
        if started_for is not None and started_for < restart_grace:
            return Verdict.RESTARTING, (f"{unit} started {started_for:.1f} s ago, not listening yet on "
                                        f"{', '.join(seen.missing)}")
        fault = f"nothing listens on {', '.join(seen.missing)} for {unit}"
    if fault:
        return (Verdict.BUSY, f"{fault}; waiting for systemd to say whether it restarts it") if stale else \
            (Verdict.DOWN, fault)
    control = seen.control
    if control is not None and control.outcome is Control.HUNG:
        return Verdict.DOWN, (f"the main process {pid} of {unit} left a control request unanswered for "
                              f"{control.seconds:.1f} s, its processes making no progress")
    if control is not None and control.outcome is Control.SLOW:
        return Verdict.BUSY, f"{unit} left a control request unanswered for {control.seconds:.1f} s, working"
    for listener, queue in (seen.queues or {}).items():
        if queue >= BUSY_QUEUE:
            return Verdict.BUSY, f"{queue} connections wait in the accept queue of {listener}"
    return Verdict.UP, f"{unit} is up"
