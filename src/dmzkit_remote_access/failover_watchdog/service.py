"""The watchdog's event loop: probe, decide, act.

One asyncio loop. Every `interval` it reads the ARP replies waiting on the
standby NIC, turns them into an `Observation`, lets the state machine decide,
runs the actions it asks for, and sends the next probes. The loop never
catches up missed ticks (decision.py explains why).

ARP is unauthenticated: what a frame says counts for the primary only when it
comes from one of `primary_macs` (arp.ArpPacket.sent_by). Anything else that
claims the VIP or answers for the primary's management address is counted
(dmzkit_failover_forged_claims_total), alarmed (a warning and the
on_forged_claim hook, at most once per DEFEND_INTERVAL) and handed to the
machine as a stranger's, which it never obeys (machine.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from ..daemon import Notifier
from ..files import write_atomically
from ..net import arp, ndp
from ..net.arp import DEFEND_INTERVAL
from ..net.netlink import Rtnetlink, carrier
from .decision import HealthStream, ProbeStream
from .health import HealthClient
from .machine import Action, Holder, Machine, Observation, State, Step
from .metrics import Metrics, serve
from .settings import ConfigError, FenceMode, Settings

log = logging.getLogger("dmzkit.failover_watchdog")
CONFIRM_PROBES = 3
# The witness is asked at most every half second: it only has to tell a
# backup cut off from the segment, not a dead primary, so it need not be fast.
WITNESS_PERIOD = 0.5
# GARP schedule after a takeover: at once, then +0.5, +1 and +2 s (failover.md §8.5).
ANNOUNCE_AT = (0.0, 0.5, 1.0, 2.0)
# Between transitions, state.json follows the health agent's state at most
# this often: its readers see it as it is, and a flapping agent costs the
# loop one small write a second at most.
HEALTH_WRITE_PERIOD = 1.0


@dataclass
class Probes:
    vip: ProbeStream
    mgmt: ProbeStream
    witness: ProbeStream
    # The primary's VPN health agent's reports (None: no agent configured).
    health: HealthStream | None = None
    # The last claim of the VIP heard from the primary's MAC and from any other.
    primary_claimed_at: float | None = None
    foreign_claimed_at: float | None = None
    # Claims of the VIP heard (ARP replies or GARPs naming it), by the primary's
    # MACs and by others, counted, so the main loop and a confirm burst running
    # beside it (an operator's takeover) each see every claim made since they
    # last looked.
    claims: int = 0
    claims_seen: int = 0
    stranger_claims: int = 0
    stranger_claims_seen: int = 0
    # Frames of unknown MACs that claimed the VIP or the management address.
    forged: int = 0
    sent_at: dict[str, float] = field(default_factory=dict)

    def forget(self, now: float) -> None:
        """Judge the primary afresh: what was missed while we held the VIP or
        were cut off says nothing about it now. A primary handed back the VIP
        a moment after its VPN restarted must not be fenced again for the
        reports of "down" it sent while it was down."""
        self.vip.reset()
        self.mgmt.reset()
        if self.health is not None:
            self.health.reset(now)


class Watchdog:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        profile = settings.profile
        self.witness_every = max(1, round(WITNESS_PERIOD / profile.interval))  # in ticks
        self.witness_period = self.witness_every * profile.interval
        self.probes = Probes(
            vip=ProbeStream(profile.interval, profile.misses, profile.rtt_budget),
            mgmt=ProbeStream(profile.interval, profile.misses, profile.rtt_budget),
            witness=ProbeStream(self.witness_period, max(2, math.ceil(settings.witness_timeout / self.witness_period)),
                                profile.rtt_budget),
        )
        self.machine = Machine(settings)
        self.metrics = Metrics([state.value for state in State], conflicts=lambda: self.machine.conflicts,
                               stalls=lambda: self.probes.vip.stalls)
        self.health: HealthClient | None = None
        if settings.health is not None:
            self.probes.health = HealthStream(settings.health.down_reports, settings.health.silent_after)
            self.health = HealthClient(str(settings.primary_mgmt), settings.health, self.probes.health, self.metrics)
        # Why the primary's VPN counted as dead at the last look ("" while it does not).
        self.vpn_dead = ""
        self.notifier = Notifier()
        self.sock = arp.ArpSocket(settings.interface)
        if self.sock.mac in settings.primary_macs:
            self.sock.close()
            raise ConfigError(f"primary_macs names {self.sock.mac}, the MAC of {settings.interface} on this host: "
                              "the backup would obey its own frames as the primary's")
        self.ndp = ndp.NdpSocket(settings.interface) if settings.vip6 is not None else None
        self.netlink = Rtnetlink()
        self.started = time.monotonic()
        self.primary_mac = sorted(settings.primary_macs)[0]
        # Everything that runs beside the loop: one failure stops them all (run).
        self.tasks = asyncio.TaskGroup()
        self.acting = False  # actions of a step are running: bounded by their timeouts
        self.ticked = time.monotonic()
        self.history: list[dict[str, object]] = []
        self.state_written_at = -math.inf
        self.health_written: tuple[str, str] | None = None  # the health agent's (state, reason) in state.json
        # When unknown MACs were last alarmed about, by the address they spoke for.
        self.alarmed_at: dict[str, float] = {}

    # -- probes -----------------------------------------------------------------

    def read_replies(self) -> None:
        s, p = self.settings, self.probes
        for at, packet in self.sock.receive():
            primary = packet.sent_by(s.primary_macs)
            if packet.claims(s.vip.ip) and not packet.is_probe:
                if primary:  # the primary says "the VIP is at my MAC": it has it, or takes it back
                    p.primary_claimed_at = at
                    p.claims += 1
                    if packet.op == arp.OP_REPLY:
                        self._answered("vip", p.vip, at)
                else:
                    p.foreign_claimed_at = at
                    p.stranger_claims += 1
                    self._forged("vip", packet, at)
            elif packet.op == arp.OP_REPLY and packet.sender_ip == s.primary_mgmt:
                if primary:
                    self._answered("mgmt", p.mgmt, at)
                else:  # no sign of life: anyone can answer for a dead host
                    self._forged("mgmt", packet, at)
            elif packet.op == arp.OP_REPLY and packet.sender_ip == s.witness:
                self._answered("witness", p.witness, at)

    def _forged(self, address: str, packet: arp.ArpPacket, at: float) -> None:
        """Count a frame of an unknown MAC speaking for the VIP or the primary's
        management address; warn (and run the hook) at most every DEFEND_INTERVAL."""
        self.probes.forged += 1
        self.metrics.forged_claims.labels(address).inc()
        last = self.alarmed_at.get(address)
        if last is not None and 0 <= at - last < DEFEND_INTERVAL:
            return
        self.alarmed_at[address] = at
        ip = self.settings.vip.ip if address == "vip" else self.settings.primary_mgmt
        log.warning("ARP from %s (Ethernet source %s) says %s (the %s) is at %s: ignored, it is not one of "
                    "primary_macs (forged, or primary_macs is out of date); %d such frames so far",
                    packet.sender_mac, packet.eth_src, ip, address, packet.sender_mac, self.probes.forged,
                    extra={"PEER_MAC": packet.sender_mac, "REASON": f"forged claim of the {address}"})
        self.write_state()
        if "on_forged_claim" in self.settings.hooks:
            self.spawn(self.run_argv(self.settings.hooks["on_forged_claim"], 10.0))

    def _answered(self, name: str, stream: ProbeStream, at: float) -> None:
        stream.on_reply(at)
        sent = self.probes.sent_at.get(name)
        if sent is not None and at >= sent:
            self.metrics.observe_rtt(name, at - sent)

    def send_probes(self, now: float, due: float, tick: int) -> None:
        s, p = self.settings, self.probes
        targets = [("vip", p.vip, s.vip.ip), ("mgmt", p.mgmt, s.primary_mgmt)]
        if tick % self.witness_every == 0:
            targets.append(("witness", p.witness, s.witness))
        for name, stream, address in targets:
            if not self.sock.send(arp.probe(self.sock.mac, address)):
                continue  # our link is down (a fault): a probe that never left is no miss
            stream.on_send(now, due)
            if stream.counted_sends and stream.last_reply is not None and now - stream.last_reply > s.profile.interval:
                self.metrics.probe_misses.labels(name).inc()
            p.sent_at[name] = now

    def vip_holder(self, now: float) -> Holder:
        """Who last said the VIP is theirs, within dead_time: a window, not the
        last tick, so a verdict taken between a probe and its answer still
        knows a stranger holds the address."""
        p, window = self.probes, self.settings.profile.dead_time
        heard = [(at, who) for at, who in ((p.primary_claimed_at, Holder.PRIMARY), (p.foreign_claimed_at, Holder.FOREIGN))
                 if at is not None and now - at <= window]
        return max(heard)[1] if heard else Holder.NOBODY

    def verdict_at(self) -> float | None:
        """When the primary is dead if the probes sent so far go unanswered."""
        if self.machine.state not in (State.STANDBY, State.SUSPECT):
            return None
        vip, mgmt = self.probes.vip.dead_at(self.started), self.probes.mgmt.dead_at(self.started)
        return None if vip is None or mgmt is None else max(vip, mgmt)

    def observe(self, now: float) -> Observation:
        s, p = self.settings, self.probes
        grace = now - self.started < s.witness_timeout
        silent_after = 1.5 * s.profile.interval
        mgmt_alive = p.mgmt.answered_within(now, s.profile.dead_time)
        claimed, p.claims_seen = p.claims != p.claims_seen, p.claims
        stranger, p.stranger_claims_seen = p.stranger_claims != p.stranger_claims_seen, p.stranger_claims
        active = self.machine.state is State.ACTIVE
        vpn_dead = (p.health.dead(now, mgmt_alive) if p.health is not None else None) or ""
        if vpn_dead != self.vpn_dead and p.health is not None:
            if vpn_dead:
                log.warning("the primary's VPN is dead: %s (the agent's last word: %s %s)", vpn_dead, p.health.verdict,
                            p.health.reason, extra={"REASON": vpn_dead})
            self.vpn_dead = vpn_dead
        return Observation(
            now=now,
            link_up=carrier(s.interface),
            # By the same stall-proof rule as the primary: a stalled loop that
            # sent no probes has not lost the witness.
            witness_ok=grace or not p.witness.is_dead(now, self.started),
            primary_dead=p.vip.is_dead(now, self.started) and p.mgmt.is_dead(now, self.started),
            primary_silent=not (p.vip.answered_within(now, silent_after) and p.mgmt.answered_within(now, silent_after)),
            app_dead=bool(vpn_dead) and mgmt_alive,
            app_reason=vpn_dead,
            primary_healthy=mgmt_alive and (p.health is None or p.health.healthy(now)),
            vip_holder=self.vip_holder(now),
            claimed_by_primary=claimed and active,
            claimed_by_stranger=stranger and active,
        )

    async def confirm_burst(self) -> tuple[bool, bool]:
        """Probe the VIP and the management address a few times, close together:
        any answer of the primary's MACs means it lives. It doubles as the
        duplicate-address check before the VIP is claimed: the second value
        tells whether another MAC claimed the VIP meanwhile."""
        s = self.settings
        before = (self.probes.vip.last_reply, self.probes.mgmt.last_reply, self.probes.claims)
        strangers = self.probes.stranger_claims
        start = time.monotonic()
        sent = True
        for n in range(CONFIRM_PROBES):
            if n:  # a tenth of an interval apart: one lost frame does not hide a live primary
                await asyncio.sleep(s.profile.interval / 10)
            sent &= self.sock.send(arp.probe(self.sock.mac, s.vip.ip))
            sent &= self.sock.send(arp.probe(self.sock.mac, s.primary_mgmt))
        if not sent:
            return True, False  # silence we could not ask for confirms nothing: as if it answered
        await asyncio.sleep(s.profile.rtt_budget)
        self.read_replies()
        replied = (self.probes.vip.last_reply, self.probes.mgmt.last_reply, self.probes.claims) != before
        self.metrics.takeover_phases.labels("confirm").set(time.monotonic() - start)
        return replied, self.probes.stranger_claims != strangers

    # -- actions ------------------------------------------------------------------

    async def run_argv(self, argv: tuple[str, ...], timeout: float) -> bool:
        try:
            process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                           stdout=asyncio.subprocess.DEVNULL,
                                                           stderr=asyncio.subprocess.PIPE)
        except OSError as e:
            log.error("cannot run %s: %s", argv[0], e.strerror)
            return False
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can
            # swallow a cancel (SIGTERM) that comes as the wait ends (gh-86296).
            async with asyncio.timeout(timeout):
                _, stderr = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            log.error("%s timed out after %g s", argv[0], timeout)
            return False
        if process.returncode != 0:
            log.error("%s failed (%d): %s", argv[0], process.returncode, stderr.decode(errors="replace").strip()[:200])
        return process.returncode == 0

    def spawn(self, coroutine: Coroutine[Any, Any, object]) -> None:
        """Run beside the loop, in its task group."""
        self.tasks.create_task(coroutine)

    def send_announcements(self, holder_mac: str | None) -> None:
        """Gratuitous ARP (request and reply) for the VIP, and an unsolicited
        NA for the IPv6 VIP, saying they are at `holder_mac` (default: ours)."""
        s = self.settings
        for frame in arp.announcements(self.sock.mac, s.vip.ip, holder_mac):
            self.sock.send(frame)
        self.metrics.garps.inc(2)
        if self.ndp is not None and s.vip6 is not None:
            self.ndp.announce(s.vip6.ip, holder_mac or self.sock.mac, s.vip6_is_router)

    async def announce(self, holder_mac: str | None) -> None:
        if holder_mac is not None:
            self.send_announcements(holder_mac)
            return
        start = time.monotonic()
        for offset in ANNOUNCE_AT:
            await asyncio.sleep(max(0.0, start + offset - time.monotonic()))
            if self.machine.state not in (State.TAKEOVER, State.ACTIVE):
                return
            self.send_announcements(None)

    async def refresh_announcements(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_interval)
            if self.machine.state is State.ACTIVE:
                self.send_announcements(None)

    async def fence_beside(self) -> None:
        if not await self.run_argv(self.settings.fence.off, self.settings.fence.timeout):
            self.metrics.fence_failures.inc()

    async def keep_systemd_watchdog_fed(self, period: float) -> None:
        """WATCHDOG=1 every `period` while the event loop runs on time and the
        main loop ticks or runs a step's actions (each bounded by a timeout).
        Its own task, so a fence that takes seconds is no reason to be killed;
        a stalled loop wakes this late and pings nothing."""
        due = time.monotonic()
        while True:
            due += period
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            now = time.monotonic()
            if now - due > period / 2:
                due = now  # woke late: the loop stalled; never catch up
            elif self.acting or now - self.ticked <= 2 * self.settings.profile.interval + period:
                self.notifier.notify(watchdog=1)

    async def systemctl(self, verb: str) -> bool:
        if not self.settings.services:
            return True
        return await self.run_argv(("systemctl", verb, "--no-block", *self.settings.services), 10.0)

    async def perform(self, action: Action) -> bool:
        s = self.settings
        started = time.monotonic()
        ok = True
        if action is Action.FENCE:
            # Only a live primary (FENCING: its host answers, its VPN does not)
            # must be cut off before the VIP can be free. A silent one already
            # passed the confirm burst: nobody on the segment answers for the
            # VIP, so the fence runs beside the takeover, not before it.
            if s.fence.mode is FenceMode.BEST_EFFORT or self.machine.state is State.TAKEOVER:
                self.spawn(self.fence_beside())
            else:
                ok = await self.run_argv(s.fence.off, s.fence.timeout)
        elif action is Action.UNFENCE and s.fence.on:
            if self.machine.state is State.HANDBACK:
                ok = await self.run_argv(s.fence.on, s.fence.timeout)
            else:  # letting go in a fault: the primary must not wait on us
                self.spawn(self.run_argv(s.fence.on, s.fence.timeout))
        elif action is Action.ADD_VIP:
            self.netlink.add(s.interface, s.vip)
            if s.routing_table is not None:
                self.netlink.replace_route(s.routing_table, s.interface, destination=s.vip.network)
                if s.gateway is not None:
                    self.netlink.replace_route(s.routing_table, s.interface, gateway=s.gateway)
            if s.vip6 is not None:
                self.netlink.add(s.interface, s.vip6)
        elif action is Action.DEL_VIP:
            self.netlink.delete(s.interface, s.vip)
            if s.vip6 is not None:
                self.netlink.delete(s.interface, s.vip6)
        elif action is Action.ANNOUNCE_SELF:
            self.spawn(self.announce(None))
        elif action is Action.ANNOUNCE_PRIMARY:
            await self.announce(self.primary_mac)
        elif action is Action.DEFEND:
            # RFC 5227 §2.4 (c): one announcement (in both forms, as ever),
            # and the machine sends no other for DEFEND_INTERVAL.
            for frame in arp.announcements(self.sock.mac, s.vip.ip):
                self.sock.send(frame)
            self.metrics.garps.inc(2)
            self.metrics.defences.inc()
            log.warning("an unknown MAC claims %s: defended it, announced at %s (the next defence %g s later "
                        "at the earliest)", s.vip.ip, self.sock.mac, DEFEND_INTERVAL,
                        extra={"REASON": "defending the VIP"})
            self.write_state()
        elif action is Action.START_SERVICES:
            ok = await self.systemctl("start")
        elif action is Action.STOP_SERVICES:
            ok = await self.systemctl("stop")
        self.metrics.takeover_phases.labels(action.value).set(time.monotonic() - started)
        return ok

    async def follow(self, step: Step) -> None:
        """Run a step's actions, feed their outcome back, until the machine rests."""
        self.acting = True
        try:
            await self._follow(step)
        finally:
            self.acting = False

    async def _follow(self, step: Step) -> None:
        while True:
            self.record(step)
            if not step.actions:
                return
            if step.actions == (Action.CONFIRM_BURST,):
                replied, stranger = await self.confirm_burst()
                step = self.machine.confirmed(time.monotonic(), replied, stranger)
                continue
            if step.actions == (Action.FENCE,) and step.state is State.FENCING:
                step = self.machine.fenced(time.monotonic(), await self.perform(Action.FENCE))
                continue
            if step.actions == (Action.UNFENCE,) and step.state is State.HANDBACK:
                step = self.machine.unfenced(time.monotonic(), await self.perform(Action.UNFENCE))
                continue
            ok, detail = True, ""
            for action in step.actions:
                try:
                    if not await self.perform(action):
                        ok, detail = False, f"{action.value} failed"
                except OSError as e:
                    ok, detail = False, f"{action.value}: {e.strerror or e}"
                if not ok and step.state is State.TAKEOVER:
                    break
            if step.state is State.FAULT:
                return  # the release of a fault is best effort; the fault stands
            step = self.machine.finished(time.monotonic(), ok, detail)

    # -- bookkeeping ----------------------------------------------------------------

    def record(self, step: Step) -> None:
        if not step.changed:
            return
        assert step.previous is not None
        now = time.time()
        self.metrics.state = step.state.value
        self.metrics.last_transition.set(now)
        self.metrics.transitions.labels(step.previous.value, step.state.value, step.reason).inc()
        self.history = [*self.history[-19:], {"at": round(now, 3), "from": step.previous.value,
                                              "to": step.state.value, "reason": step.reason}]
        log.info("%s -> %s: %s", step.previous.value, step.state.value, step.reason,
                 extra={"STATE": step.state.value, "REASON": step.reason})
        self.notifier.notify(status=f"{step.state.value}: {step.reason}")
        if step.state is State.STANDBY and step.previous in (State.HANDBACK, State.YIELD, State.FAULT):
            self.probes.forget(time.monotonic())
            if self.health is not None:
                self.health.restart()  # a connection that outlived a fence may be stale
        self.write_state()
        hook = {State.ACTIVE: "on_takeover", State.FAULT: "on_fault", State.YIELD: "on_conflict"}.get(step.state)
        if step.previous is State.HANDBACK and step.state is State.STANDBY:
            hook = "on_handback"
        if step.previous is State.YIELD and step.state is State.STANDBY:
            hook = "on_yield"
        if hook and hook in self.settings.hooks:
            self.spawn(self.run_argv(self.settings.hooks[hook], 10.0))

    def write_state(self, stopped: tuple[str, str] | None = None) -> None:
        """state.json; `stopped` is the (state, reason) the stop path leaves
        behind, which no machine state says."""
        m, health, now = self.machine, self.probes.health, time.monotonic()
        if health is not None:
            self.health_written = (health.state(now), health.reason)
        self.state_written_at = now
        state = {
            "state": stopped[0] if stopped else m.state.value,
            "reason": stopped[1] if stopped else m.reason,
            "profile": self.settings.profile_name,
            "damped": m.damped(now),
            "takeovers_in_window": len(m.takeovers),
            "conflicts": m.conflicts,
            "forged_claims": self.probes.forged,
            "defences": m.defences,
            "scheduler_stalls": self.probes.vip.stalls,
            # The primary's VPN health agent, a second old at most (note_health).
            "health": None if health is None else {"state": health.state(now), "reason": health.reason,
                                                   "largest_gap": round(health.largest_gap, 3)},
            "transitions": self.history,
        }
        write_atomically(os.path.join(self.settings.state_dir, "state.json"), json.dumps(state, indent=1).encode())

    def note_health(self, now: float) -> None:
        """Write state.json again when the health agent's state or reason
        changed since it was written (at most every HEALTH_WRITE_PERIOD)."""
        health = self.probes.health
        if health is None or now - self.state_written_at < HEALTH_WRITE_PERIOD:
            return
        if (health.state(now), health.reason) != self.health_written:
            self.write_state()

    def leave(self) -> None:
        """The stop path (SIGTERM, or a task beside the loop that failed):
        the VIP stays where it is. Released, a dead primary's VIP would have
        nobody; kept, a returning primary's guard waits while our MAC answers
        for it, so there are never two holders. Nobody watches it until the
        watchdog runs again (which keeps it until its first verdict): the
        state file says so, and outlives the process (RuntimeDirectoryPreserve)."""
        s = self.settings
        try:
            holding = s.vip in self.netlink.addresses(s.interface)
        except OSError:  # cannot tell: say what the machine last did
            holding = self.machine.state in (State.TAKEOVER, State.ACTIVE, State.HANDBACK)
        if holding:
            stopped = ("unmanaged", f"stopped holding {s.vip} on {s.interface}: it stays here, with no probes, "
                                    "handback or defence, until the watchdog runs again")
            log.warning("%s", stopped[1], extra={"STATE": stopped[0], "REASON": "stopped holding the VIP"})
        else:
            stopped = ("stopped", f"stopped; {s.vip} is not on {s.interface}, and no takeover until the watchdog "
                                  "runs again")
            log.info("%s", stopped[1], extra={"STATE": stopped[0], "REASON": "stopped"})
        self.history = [*self.history[-19:], {"at": round(time.time(), 3), "from": self.machine.state.value,
                                              "to": stopped[0], "reason": stopped[1]}]
        try:
            self.write_state(stopped)
        except OSError as e:
            log.error("cannot record the stop in %s: %s", self.settings.state_dir, e.strerror or e)

    @property
    def control_path(self) -> str:
        return os.path.join(self.settings.state_dir, "control.sock")

    async def answer_operator(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One command a connection: takeover, handback, reset or status."""
        try:
            async with asyncio.timeout(2):
                line = await reader.readline()
            verb = line.decode(errors="replace").strip()
            if verb == "status":
                answer = {"ok": True}
            else:
                try:
                    await self.follow(self.machine.command(time.monotonic(), verb))
                    answer = {"ok": True}
                except ValueError as e:
                    answer = {"ok": False, "error": str(e)}
            answer.update(state=self.machine.state.value, reason=self.machine.reason)
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    # -- main loop ------------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled (SIGTERM), or until a task beside the loop fails:
        a probe or announcer that died would leave the watchdog half blind,
        so it stops, and systemd starts a whole one, which reconciles with
        what it finds."""
        s = self.settings
        host, _, port = s.metrics_listen.rpartition(":")
        server = serve(self.metrics, host, int(port))
        os.makedirs(s.state_dir, mode=0o755, exist_ok=True)
        failed = False
        try:
            async with self.tasks:
                await self.loop()
        except* Exception as group:
            for error in group.exceptions:
                log.critical("a task beside the loop failed: %r", error)
            failed = True
        finally:
            self.notifier.notify(stopping=1)
            self.leave()
            server.shutdown()
            server.server_close()
        if failed:
            raise SystemExit(1)

    async def loop(self) -> None:
        s = self.settings
        if self.health is not None:
            self.spawn(self.health.run())
        self.spawn(self.refresh_announcements())
        if self.notifier.watchdog_interval:
            self.spawn(self.keep_systemd_watchdog_fed(self.notifier.watchdog_interval))
        holding = s.vip in self.netlink.addresses(s.interface)
        self.record(self.machine.start(time.monotonic(), holding))
        control = await asyncio.start_unix_server(self.answer_operator, self.control_path)
        os.chmod(self.control_path, 0o600)
        gc.freeze()  # start-up garbage is done; keep collections short in the loop
        self.notifier.notify(ready=1, status=f"{self.machine.state.value}: {self.machine.reason}")
        interval = s.profile.interval
        due, tick = time.monotonic(), 0
        try:
            while True:
                now = self.ticked = time.monotonic()
                if now - due > interval / 2 and self.probes.health is not None:
                    self.probes.health.on_stall(now)  # a stalled loop did not hear the agent
                self.read_replies()
                await self.follow(self.machine.step(self.observe(now)))
                now = time.monotonic()
                self.send_probes(now, due, tick)
                self.note_health(now)
                verdict = self.verdict_at()
                if verdict is not None and verdict < due + interval:
                    # The rule's verdict falls before the next tick (the probe
                    # just sent is the last it waits for): decide at that
                    # moment, not a tick later.
                    await asyncio.sleep(max(0.0, verdict - time.monotonic()))
                    self.read_replies()
                    await self.follow(self.machine.step(self.observe(max(verdict, time.monotonic()))))
                tick += 1
                due += interval
                if due < now:  # late: never catch up, start from now
                    due = now + interval
                await asyncio.sleep(max(0.0, due - time.monotonic()))
        finally:
            control.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.control_path)  # the directory outlives us: `ctl` must not find a dead socket
