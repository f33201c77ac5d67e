"""The agent: check every `interval`, push each verdict to every watchdog connected.

One asyncio loop. Each tick reads the kernel's listening sockets (over
sock_diag) and the main processes' states (a few files in /proc); systemd
is asked for the units' states every second, at once when a cheap check
turns bad (so a restart it runs is told from a death), and at every check
while a unit is stopped or changing (so no "down" outlives the unit's
start). A control request (ocserv: `occtl show status`) runs beside, one
at a time. Each check's verdict goes to every connection as one report
line.

The connections are mutual TLS on the management address, on a port of the
agent's own: only the watchdogs' host certificates (CN in `clients`, no OU)
are served, anything else is closed before a byte is sent, so a forged
"down" (which would fence a healthy gateway) cannot come from anyone else.
No internet user's connection shares this listener, this process or its
queue: a flood on the VIP can make the services BUSY, never the report late.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..daemon import Notifier
from ..net.netlink import SockDiag
from ..tls import host_name, peer_certificate, server_context
from .checks import PROPERTIES, Control, ControlResult, Observed, UnitState, cpu_ticks, judge
from .checks import missing as missing_listeners
from .checks import parse_units, process_state, queue_of
from .report import SEVERITY, Report, Verdict
from .settings import Service, Settings, address_port

log = logging.getLogger("dmzkit.vpn_health")
# Seconds between systemd's answers when nothing looks wrong.
UNIT_PERIOD = 1.0
# systemd answers in milliseconds; a check waits this long at most, so the
# reports never pause long enough to look like a frozen host.
UNIT_TIMEOUT = 0.5
# Pause between two control requests.
CONTROL_PERIOD = 0.5
HANDSHAKE_TIMEOUT = 2.0
# A watchdog that reads nothing for this long is dropped.
DRAIN_TIMEOUT = 5.0
MAX_SESSIONS = 8
# Linux's TCP_THIN_LINEAR_TIMEOUTS: a report lost on the way is sent again
# after a steady RTO, not after one that doubles each time, so loss on the
# link cannot stretch the reports' silence to silent_after (a "frozen" gateway).
TCP_THIN_LINEAR_TIMEOUTS = 16
# At most one warning about refused connections this often.
REFUSED_LOG_PERIOD = 10.0


class SystemdFailed(OSError):
    """systemctl ran and could not say (no systemd to ask)."""


class Units(Protocol):
    async def states(self, units: Sequence[str]) -> dict[str, UnitState]:
        """The units' states; OSError when systemd cannot be asked, TimeoutError
        when it has not answered within UNIT_TIMEOUT."""


class Systemctl:
    """systemd's view, from `systemctl show` (root's private bus: no D-Bus library)."""

    async def states(self, units: Sequence[str]) -> dict[str, UnitState]:
        process = await asyncio.create_subprocess_exec(
            "systemctl", "show", f"--property={','.join(PROPERTIES)}", "--", *units,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            async with asyncio.timeout(UNIT_TIMEOUT):
                out, err = await process.communicate()
        except (TimeoutError, asyncio.CancelledError):
            process.kill()
            await process.wait()
            raise
        if process.returncode != 0:
            raise SystemdFailed(f"systemctl show failed ({process.returncode}): "
                                f"{err.decode(errors='replace').strip()[:200]}")
        return parse_units(out.decode(errors="replace"))


@dataclass
class Watch:
    """What the agent knows of one service between checks."""
    service: Service
    unit: UnitState | None = None
    changing_since: float | None = None
    control: ControlResult | None = None
    bad_since: float | None = None  # since when the cheap checks fail (process or listener gone)
    verdict: Verdict = Verdict.UP
    # A service is called dead only once it has been seen up: while the
    # gateway is deployed (or a service is configured after the agent
    # started) its absence is no evidence, and a "down" would fence it.
    seen_up: bool = False


class Agent:
    def __init__(self, settings: Settings, units: Units | None = None, proc: str = "/proc") -> None:
        self.settings = settings
        self.units = units or Systemctl()
        self.proc = proc
        self.watches = [Watch(service) for service in settings.services]
        self.queried_at: float | None = None  # systemd last asked
        self.answered_at: float | None = None  # ... and last answered (when it was asked)
        self.units_error = ""
        self.no_systemd = False  # systemd cannot be asked at all (not a timeout): the kernel's evidence alone
        self.seq = 0
        self.report = Report(seq=0, verdict=Verdict.BUSY, reason="starting")
        self.line = self.report.encode()
        self.published = asyncio.Event()
        self.tls: ssl.SSLContext | None = None
        self.diag: SockDiag | None = None
        self.sessions = 0
        self.writers: set[asyncio.StreamWriter] = set()
        self.refused = 0
        self.refused_logged_at: float | None = None
        self.notifier = Notifier()

    # -- checks ---------------------------------------------------------------------

    def listeners(self) -> dict[str, int] | None:
        """The kernel's IPv4 listeners; None when it cannot tell (no evidence).
        Asked over sock_diag for listeners only: /proc/net/tcp has a line for
        every socket, and a flood makes tens of thousands of them."""
        try:
            if self.diag is None:
                self.diag = SockDiag()  # one socket for the agent's life, not one per check
            return self.diag.tcp_listeners()
        except OSError:
            self.close_diag()  # made again at the next check
            return None

    def close_diag(self) -> None:
        if self.diag is not None:
            self.diag.close()
            self.diag = None

    def process(self, watch: Watch) -> str | None:
        pid = watch.unit.main_pid if watch.unit is not None else 0
        return process_state(pid, self.proc) if pid else None

    def looks_bad(self, watch: Watch, table: dict[str, int] | None) -> bool:
        pid = watch.unit.main_pid if watch.unit is not None else 0
        state = self.process(watch)
        gone = bool(pid) and state in (None, "Z", "X", "T", "t")
        return gone or bool(table is not None and missing_listeners(watch.service.listen, table))

    async def ask_systemd(self, now: float) -> None:
        self.queried_at = now
        try:
            states = await self.units.states([w.service.unit for w in self.watches])
        except (OSError, TimeoutError) as e:  # no evidence either way: keep what we knew
            problem = str(e) or "timed out"
            if problem != self.units_error:
                log.warning("systemd cannot tell the units' states: %s", problem)
            self.units_error = problem
            # No systemctl, or one that ran and failed: the kernel's evidence
            # alone. A timeout, or no process to run it with (no file
            # descriptor, no memory): no evidence at all, as before asking.
            self.no_systemd = isinstance(e, (FileNotFoundError, SystemdFailed))
            return
        self.units_error, self.no_systemd, self.answered_at = "", False, now
        for watch in self.watches:
            watch.unit = states.get(watch.service.unit, watch.unit)

    async def check(self) -> Report:
        now = time.monotonic()
        table = self.listeners()
        for watch in self.watches:
            if not self.looks_bad(watch, table):
                watch.bad_since = None
            elif watch.bad_since is None:
                watch.bad_since = now
        # A process or listener gone: systemd is asked at once whether it is
        # restarting the unit, and again at each check until it answers.
        unexplained = any(w.bad_since is not None and (self.answered_at is None or self.answered_at < w.bad_since)
                          for w in self.watches)
        # A unit last seen stopped or changing is asked about at every check:
        # a "down" never rests on an answer older than one interval (a unit
        # started meanwhile would be reported dead for up to UNIT_PERIOD).
        not_running = any(w.unit is not None and not w.unit.running for w in self.watches)
        if unexplained or not_running or self.queried_at is None or now - self.queried_at >= UNIT_PERIOD:
            await self.ask_systemd(now)
            now = time.monotonic()
        services: dict[str, dict[str, object]] = {}
        worst: tuple[Verdict, str] = (Verdict.UP, "")
        for watch in self.watches:
            service, unit = watch.service, watch.unit
            if unit is not None and unit.changing:
                watch.changing_since = watch.changing_since if watch.changing_since is not None else now
            else:
                watch.changing_since = None
            queues = {listener: queue for listener in service.listen
                      if table is not None and (queue := queue_of(listener, table)) is not None}
            seen = Observed(unit=unit, process=self.process(watch),
                            missing=missing_listeners(service.listen, table) if table is not None else (),
                            queues=queues, control=watch.control)
            changing_for = now - watch.changing_since if watch.changing_since is not None else 0.0
            stale = (watch.bad_since is not None and not self.no_systemd
                     and (self.answered_at is None or self.answered_at < watch.bad_since))
            started_for = now - unit.active_since if unit is not None and unit.active_since is not None else None
            verdict, reason = judge(service.unit, seen, changing_for, self.settings.restart_grace, stale, started_for)
            watch.seen_up = watch.seen_up or verdict is Verdict.UP
            if verdict is Verdict.DOWN and not watch.seen_up:
                verdict, reason = Verdict.BUSY, f"not up since the agent started: {reason}"
            if verdict is not watch.verdict:
                level = logging.WARNING if verdict is Verdict.DOWN else logging.INFO
                log.log(level, "%s: %s -> %s: %s", service.unit, watch.verdict.value, verdict.value, reason)
                watch.verdict = verdict
            services[service.unit] = {
                "vpn": verdict.value, "reason": reason, "pid": unit.main_pid if unit else None,
                "state": f"{unit.active}/{unit.sub}" if unit else None, "accept_queue": queues,
                "control": ({"outcome": watch.control.outcome.value, "seconds": round(watch.control.seconds, 3),
                             "detail": watch.control.detail} if watch.control else None),
            }
            if SEVERITY[verdict] > SEVERITY[worst[0]]:
                worst = (verdict, reason)
        self.seq += 1
        reason = worst[1] if worst[0] is not Verdict.UP else "all services up"
        return Report(seq=self.seq, verdict=worst[0], reason=reason, services=services)

    def publish(self, report: Report) -> None:
        if report.verdict is not self.report.verdict:
            self.notifier.notify(status=f"{report.verdict.value}: {report.reason}")
        # systemd hears the agent lives only when a report goes out: an agent
        # whose checks stall is killed (WatchdogSignal=SIGKILL) and its
        # connections close, which is no verdict, before its silence could
        # read as a frozen gateway.
        self.notifier.notify(watchdog=1)
        self.report, self.line = report, report.encode()
        published, self.published = self.published, asyncio.Event()
        published.set()

    async def checking(self) -> None:
        """A check and a report every interval; missed ticks are not caught up."""
        interval = self.settings.interval
        due = time.monotonic()
        while True:
            self.publish(await self.check())
            now = time.monotonic()
            due += interval
            if due < now:
                due = now + interval
            await asyncio.sleep(due - now)

    async def controlling(self, watch: Watch) -> None:
        """The service's control request, one at a time, bounded by hang_after."""
        while True:
            result = await self.ask(watch)
            if result.outcome is Control.ERROR and (watch.control is None or watch.control.detail != result.detail):
                log.warning("%s: %s; the control request proves nothing either way until it works", watch.service.unit,
                            result.detail)
            watch.control = result
            await asyncio.sleep(CONTROL_PERIOD)

    async def ask(self, watch: Watch) -> ControlResult:
        """Run the control request. Unanswered at half of hang_after, the CPU
        time of the main process and its children is read, and again at the
        end: unchanged, the service is hung; changed, it is working (SLOW)."""
        argv, limit = watch.service.control, self.settings.hang_after
        pid = watch.unit.main_pid if watch.unit is not None else 0
        started = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                           stdout=asyncio.subprocess.DEVNULL,
                                                           stderr=asyncio.subprocess.PIPE)
        except OSError as e:
            return ControlResult(Control.ERROR, 0.0, f"cannot run {argv[0]}: {e.strerror or e}")
        answer = asyncio.ensure_future(process.communicate())
        try:
            done, _ = await asyncio.wait({answer}, timeout=limit / 2)
            before = None
            if not done:
                before = cpu_ticks(pid, self.proc) if pid else None
                done, _ = await asyncio.wait({answer}, timeout=limit / 2)
        except asyncio.CancelledError:  # the agent stops: leave no request behind
            if process.returncode is None:
                process.kill()
            await asyncio.gather(answer, return_exceptions=True)
            raise
        seconds = time.monotonic() - started
        if done:
            _, err = answer.result()
            if process.returncode == 0:
                return ControlResult(Control.ANSWERED, seconds)
            return ControlResult(Control.ERROR, seconds, f"{argv[0]} failed ({process.returncode}): "
                                                         f"{err.decode(errors='replace').strip()[:200]}")
        after = cpu_ticks(pid, self.proc) if pid else None
        state = process_state(pid, self.proc) if pid else None
        process.kill()
        await answer
        still = watch.unit is not None and watch.unit.main_pid == pid
        # Asleep (S) and no CPU time: waiting for what never comes. Waiting
        # for a disk (D) or for a CPU (R) is load, not a deadlock.
        if still and before is not None and after == before and state == "S":
            return ControlResult(Control.HUNG, seconds, f"{argv[0]} unanswered, no CPU progress")
        if still and before is not None and after == before:
            return ControlResult(Control.SLOW, seconds, f"{argv[0]} unanswered, the main process waiting ({state})")
        return ControlResult(Control.SLOW, seconds, f"{argv[0]} unanswered, the processes working")

    # -- the watchdogs' connections ------------------------------------------------

    async def session(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        certificate = peer_certificate(writer.transport)
        name = host_name(certificate) if certificate is not None else None
        if name not in self.settings.clients or self.sessions >= MAX_SESSIONS:
            self.refuse(writer, name, "too many connections" if name in self.settings.clients else "")
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS, 1)
        self.sessions += 1
        self.writers.add(writer)
        log.info("%s (%s) connected", name, writer.get_extra_info("peername"))
        try:
            while True:
                published = self.published  # set by the next report, even while this one drains
                writer.write(self.line)
                async with asyncio.timeout(DRAIN_TIMEOUT):
                    await writer.drain()
                await published.wait()
        except (ConnectionError, TimeoutError, OSError) as e:
            log.info("%s left: %s", name, e or "timed out")
        except asyncio.CancelledError:
            # The agent stops. Ended, not cancelled: Python 3.11's stream
            # server logs a cancelled connection handler as an error.
            pass
        finally:
            self.sessions -= 1
            self.writers.discard(writer)
            writer.transport.abort()  # no TLS close to wait for: the watchdog left or stopped reading

    def refuse(self, writer: asyncio.StreamWriter, name: str | None, why: str = "") -> None:
        """Close at once (abort: no TLS close to wait for)."""
        self.refused += 1
        now = time.monotonic()
        if self.refused_logged_at is None or now - self.refused_logged_at >= REFUSED_LOG_PERIOD:
            self.refused_logged_at = now
            why = why or f"certificate {name or 'of a person, a desktop or a device'} is not one of clients"
            log.warning("refused %s: %s (%d refused so far)", writer.get_extra_info("peername"), why, self.refused)
        writer.transport.abort()

    def context(self) -> ssl.SSLContext:
        s = self.settings
        return server_context(s.certificate, s.private_key, s.ca_file, s.crl_file, ssl.CERT_REQUIRED)

    async def run(self) -> None:
        address, port = address_port(self.settings.listen, "listen")
        self.tls = self.context()  # the TLS files are checked before the port opens
        # Handshakes and closes are bounded in time: whoever can reach the
        # port holds a file descriptor for HANDSHAKE_TIMEOUT at most.
        server = await asyncio.start_server(self.session, str(address), port, ssl=self.tls,
                                            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
                                            ssl_shutdown_timeout=HANDSHAKE_TIMEOUT)
        try:
            async with server, asyncio.TaskGroup() as tasks:
                for watch in self.watches:
                    if watch.service.control:
                        tasks.create_task(self.controlling(watch))
                tasks.create_task(self.checking())
                self.notifier.notify(ready=1, status=f"serving verdicts on {self.settings.listen}")
                log.info("serving verdicts on %s to %s", self.settings.listen,
                         ", ".join(sorted(self.settings.clients)))
        finally:
            # Stopping: no connection is left for the server's close to wait on.
            for writer in list(self.writers):
                writer.transport.abort()
            self.close_diag()
