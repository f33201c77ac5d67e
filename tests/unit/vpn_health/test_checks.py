"""The agent's evidence and its verdicts: parsers on what systemd and the
kernel print, the rule on made-up observations, /proc on real processes."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from dmzkit_remote_access.net.netlink import SockDiag
from dmzkit_remote_access.vpn_health.checks import (
    BUSY_QUEUE, Control, ControlResult, Observed, UnitState, cpu_ticks, judge, missing, parse_units,
    process_state)
from dmzkit_remote_access.vpn_health.report import Report, Verdict

SHOW = """Id=ocserv.service
ActiveState=active
SubState=running
MainPID=812
Job=
ActiveEnterTimestampMonotonic=0

Id=nginx.service
ActiveState=deactivating
SubState=stop-sigterm
MainPID=790
Job=4242
ActiveEnterTimestampMonotonic=5073145210
Restart=no

MainPID=0
Id=gone.service
ActiveState=inactive
SubState=dead
"""

UP = UnitState(active="active", sub="running", job=False, main_pid=812)


def test_systemd_blocks_are_read_per_unit_with_or_without_a_job() -> None:
    units = parse_units(SHOW)
    assert units["ocserv.service"] == UP and not units["ocserv.service"].changing
    assert units["nginx.service"].job and units["nginx.service"].changing
    assert units["nginx.service"].active_since == 5073.14521  # seconds of CLOCK_MONOTONIC, as time.monotonic()
    assert not units["nginx.service"].restarts and units["ocserv.service"].restarts  # unknown: it may
    assert units["gone.service"] == UnitState(active="inactive", sub="dead", job=False, main_pid=0)


def test_listeners_and_their_accept_queues_are_read_from_the_kernel() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        address = "127.0.0.1:%d" % listener.getsockname()[1]
        waiting = [socket.create_connection(listener.getsockname()) for _ in range(3)]  # never accepted
        try:
            with SockDiag() as diag:
                table = diag.tcp_listeners()
        finally:
            for s in waiting:
                s.close()
    assert table[address] == 3
    assert all(queue >= 0 for queue in table.values())
    assert missing((address,), table) == ()
    assert missing(("198.18.1.11:443",), {address: 0}) == ("198.18.1.11:443",)
    assert missing(("198.18.1.11:4443",), {"0.0.0.0:4443": 0}) == ()  # a wildcard socket serves every address


@pytest.mark.parametrize(("seen", "changing_for", "verdict", "why"), [
    (Observed(unit=UP, process="S"), 0.0, Verdict.UP, "is up"),
    (Observed(unit=UP, process="R", queues={"127.0.0.1:4443": BUSY_QUEUE - 1}), 0.0, Verdict.UP, "is up"),
    # Load is never death.
    (Observed(unit=UP, process="R", queues={"127.0.0.1:4443": BUSY_QUEUE}), 0.0, Verdict.BUSY, "accept queue"),
    (Observed(unit=UP, process="R", control=ControlResult(Control.SLOW, 2.0)), 0.0, Verdict.BUSY, "working"),
    (Observed(unit=UP, process="S", control=ControlResult(Control.ERROR, 0.0, "no permission")), 0.0,
     Verdict.UP, "is up"),
    # Positive evidence of a fault.
    (Observed(unit=UP, process="S", control=ControlResult(Control.HUNG, 2.0)), 0.0, Verdict.DOWN, "no progress"),
    (Observed(unit=UP, process=None), 0.0, Verdict.DOWN, "812 of ocserv.service has exited"),
    (Observed(unit=UP, process="Z"), 0.0, Verdict.DOWN, "has exited"),
    (Observed(unit=UP, process="T"), 0.0, Verdict.DOWN, "is stopped"),
    (Observed(unit=UP, process="S", missing=("127.0.0.1:4443",)), 0.0, Verdict.DOWN,
     "nothing listens on 127.0.0.1:4443"),
    (Observed(unit=UnitState("failed", "failed", False, 0), process=None), 0.0, Verdict.DOWN, "is failed"),
    (Observed(unit=UnitState("inactive", "dead", False, 0), process=None), 0.0, Verdict.DOWN, "is inactive"),
    # systemd at work: a restart is not a death, unless it takes too long.
    (Observed(unit=UnitState("inactive", "dead", True, 0), process=None), 1.0, Verdict.RESTARTING, "a job queued"),
    (Observed(unit=UnitState("activating", "start", False, 900), process="S", missing=("127.0.0.1:4443",)), 4.9,
     Verdict.RESTARTING, "activating"),
    (Observed(unit=UnitState("deactivating", "stop-sigterm", True, 812), process="S"), 5.0, Verdict.DOWN,
     "for 5.0 s"),
    # Its main process killed, its other processes being stopped, no job: a
    # death, unless systemd starts it again (Restart=).
    (Observed(unit=UnitState("deactivating", "stop-sigterm", False, 0, restarts=False), process=None), 0.0,
     Verdict.DOWN, "stopping on its own (stop-sigterm) and has Restart=no"),
    (Observed(unit=UnitState("deactivating", "stop-sigterm", False, 0, restarts=True), process=None), 0.0,
     Verdict.RESTARTING, "deactivating"),
    # Nothing known yet of systemd: only what the kernel shows counts.
    (Observed(unit=None, process=None), 0.0, Verdict.UP, "is up"),
    (Observed(unit=None, process=None, missing=("127.0.0.1:4443",)), 0.0, Verdict.DOWN, "nothing listens"),
])
def test_verdicts(seen: Observed, changing_for: float, verdict: Verdict, why: str) -> None:
    got, reason = judge("ocserv.service", seen, changing_for, restart_grace=5.0)
    assert (got, why in reason) == (verdict, True), reason


@pytest.mark.parametrize(("started_for", "verdict", "why"), [
    (0.3, Verdict.RESTARTING, "started 0.3 s ago, not listening yet on 127.0.0.1:4443"),
    (5.0, Verdict.DOWN, "nothing listens on 127.0.0.1:4443"),
    (None, Verdict.DOWN, "nothing listens on 127.0.0.1:4443"),  # systemd did not say when
])
def test_a_unit_just_started_is_given_time_to_listen(started_for: float | None, verdict: Verdict, why: str) -> None:
    seen = Observed(unit=UP, process="S", missing=("127.0.0.1:4443",))
    got, reason = judge("ocserv.service", seen, 0.0, restart_grace=5.0, started_for=started_for)
    assert (got, why in reason) == (verdict, True), reason


@pytest.mark.parametrize(("seen", "verdict", "why"), [
    (Observed(unit=UP, process=None), Verdict.BUSY, "waiting for systemd"),
    (Observed(unit=UP, process="S", missing=("127.0.0.1:4443",)), Verdict.BUSY, "waiting for systemd"),
    (Observed(unit=UnitState("failed", "failed", False, 0), process=None), Verdict.DOWN, "is failed"),
    (Observed(unit=UP, process="S", control=ControlResult(Control.HUNG, 2.0)), Verdict.DOWN, "no progress"),
])
def test_a_process_or_listener_gone_before_systemd_answered_may_be_a_restart(
        seen: Observed, verdict: Verdict, why: str) -> None:
    got, reason = judge("ocserv.service", seen, 0.0, restart_grace=5.0, stale=True)
    assert (got, why in reason) == (verdict, True), reason


def test_a_report_survives_the_wire_and_anything_else_is_refused() -> None:
    report = Report(seq=7, verdict=Verdict.DOWN, reason="ocserv.service is failed (failed)", services={"x": {"a": 1}})
    assert Report.decode(report.encode()) == report
    for line in (b"[]", b'{"seq": -1, "vpn": "up"}', b'{"seq": 1, "vpn": "dead"}', b'{"seq": true, "vpn": "up"}',
                 b"not json", b"[" * 10000, b'{"seq": 1, "vpn": "up", "reason": "' + b"x" * 20000 + b'"}'):
        with pytest.raises(ValueError):
            Report.decode(line)


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A process whose main loop sleeps; SIGUSR1 makes it spin."""
    code = ("import signal, time\n"
            "spin = False\n"
            "def go(*_):\n    global spin\n    spin = True\n"
            "signal.signal(signal.SIGUSR1, go)\n"
            "print('ready', flush=True)\n"
            "while True:\n    time.sleep(0.01) if not spin else sum(range(10000))\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    yield process
    process.kill()
    process.wait()


def test_process_state_tells_running_stopped_and_gone(child: subprocess.Popen[bytes]) -> None:
    assert process_state(child.pid) in ("S", "R")
    os.kill(child.pid, signal.SIGSTOP)
    deadline = time.monotonic() + 2
    while process_state(child.pid) != "T" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process_state(child.pid) == "T"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert process_state(child.pid) is None
    assert process_state(2 ** 22 + 1) is None


def test_cpu_time_moves_only_while_the_process_or_its_children_work(child: subprocess.Popen[bytes]) -> None:
    os.kill(child.pid, signal.SIGSTOP)
    still = cpu_ticks(child.pid)
    time.sleep(0.3)
    assert still is not None and cpu_ticks(child.pid) == still  # stopped: no progress
    os.kill(child.pid, signal.SIGCONT)
    os.kill(child.pid, signal.SIGUSR1)
    time.sleep(0.5)
    assert (cpu_ticks(child.pid) or 0) > still  # spinning: progress
    # Our own children count towards us: the pytest process gains the child's time.
    assert (cpu_ticks(os.getpid()) or 0) >= (cpu_ticks(child.pid) or 0)
    assert cpu_ticks(2 ** 22 + 1) is None
