"""Forged ARP against the watchdog's own code path (issue 15, finding 6).

The whole decision path of the service (read_replies -> observe -> Machine ->
follow) runs here on a simulated segment and a simulated clock: the ARP
socket, the address table and the carrier are fakes, nothing needs
privileges. Anyone on the DMZ can put any sender MAC into an ARP frame; only
the primary's known MACs may make an active backup yield or count as the
primary's signs of life. A claim from any other MAC is defended (RFC 5227
§2.4 (c)), counted and alarmed, never obeyed.
"""
from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dmzkit_remote_access.failover_watchdog import service
from dmzkit_remote_access.failover_watchdog.machine import State
from dmzkit_remote_access.failover_watchdog.settings import ConfigError, Settings
from dmzkit_remote_access.net import arp

VIP = ipaddress.IPv4Interface("198.18.99.10/24")
MGMT = ipaddress.IPv4Address("198.18.99.11")
WITNESS = ipaddress.IPv4Address("198.18.99.254")
BACKUP_MAC = "02:00:00:00:00:0b"
PRIMARY_MAC = "02:00:00:00:00:0a"
WITNESS_MAC = "02:00:00:00:00:fe"
FORGER_MAC = "02:00:00:00:00:66"
INTERVAL = 0.1  # the default profile


@dataclass
class Clock:
    now: float = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1.7e9 + self.now


@dataclass
class Segment:
    """The backup's ARP socket. `answers` maps an address to the MAC that
    answers probes for it; `forge` puts a frame of anyone's making in the inbox."""

    clock: Clock
    mac: str = BACKUP_MAC
    answers: dict[ipaddress.IPv4Address, str] = field(default_factory=dict)
    sent: list[tuple[float, arp.ArpPacket]] = field(default_factory=list)
    inbox: list[tuple[float, arp.ArpPacket]] = field(default_factory=list)

    def send(self, data: bytes) -> bool:
        self.clock.now += 1e-6  # frames take time: a reply is always later than the last one
        packet = arp.parse(data)
        assert packet is not None
        self.sent.append((self.clock.now, packet))
        holder = self.answers.get(packet.target_ip)
        if packet.is_probe and holder is not None:
            self.deliver(arp.frame(arp.OP_REPLY, holder, holder, packet.target_ip, arp.ZERO_IP,
                                   target_mac=arp.mac_bytes(self.mac), eth_dst=arp.mac_bytes(self.mac)))
        return True

    def deliver(self, data: bytes) -> None:
        packet = arp.parse(data)
        assert packet is not None
        self.inbox.append((self.clock.now, packet))

    def forge_garp(self, mac: str = FORGER_MAC, address: ipaddress.IPv4Address = VIP.ip) -> None:
        """One gratuitous ARP saying `address` is at `mac`, from `mac`."""
        self.deliver(arp.announcements(mac, address)[0])

    def receive(self) -> list[tuple[float, arp.ArpPacket]]:
        received, self.inbox = self.inbox, []
        return received

    def defences_since(self, since: float) -> int:
        """Gratuitous ARPs of ours for the VIP (request and reply count as one)."""
        return sum(p.op == arp.OP_REQUEST and p.sender_ip == VIP.ip and p.sender_mac == self.mac and not p.is_probe
                   for at, p in self.sent if at >= since)

    def close(self) -> None:
        pass


class Addresses:
    def __init__(self) -> None:
        self.held: set[Any] = set()

    def addresses(self, interface: str) -> set[Any]:
        return set(self.held)

    def add(self, interface: str, address: Any) -> None:
        self.held.add(address)

    def delete(self, interface: str, address: Any) -> None:
        self.held.discard(address)


@dataclass
class Lab:
    clock: Clock
    segment: Segment
    addresses: Addresses
    watchdog: service.Watchdog
    tick_count: int = 0

    @property
    def holds_vip(self) -> bool:
        return VIP in self.addresses.held

    def primary(self, alive: bool) -> None:
        for address in (VIP.ip, MGMT):
            if alive:
                self.segment.answers[address] = PRIMARY_MAC
            else:
                self.segment.answers.pop(address, None)

    async def tick(self) -> None:
        """One turn of the service's main loop, at the next interval."""
        wd, self.clock.now = self.watchdog, self.clock.now + INTERVAL
        wd.read_replies()
        await wd.follow(wd.machine.step(wd.observe(self.clock.now)))
        for _ in range(3):  # what the step spawned (its announcements) runs within the tick
            await asyncio.sleep(0)
        wd.send_probes(self.clock.now, self.clock.now, self.tick_count)
        self.tick_count += 1

    async def run_for(self, seconds: float, check: Callable[[], None] | None = None) -> None:
        for _ in range(round(seconds / INTERVAL)):
            await self.tick()
            if check is not None:
                check()

    async def take_over(self) -> None:
        self.primary(alive=False)
        await self.run_for(1.0)
        assert self.watchdog.machine.state is State.ACTIVE and self.holds_vip

    def transitions(self) -> list[str]:
        return [str(t["to"]) for t in self.watchdog.history]

    def metric(self, name: str, **labels: str) -> float:
        return self.watchdog.metrics.registry.get_sample_value(name, labels) or 0.0

    def forged_claims(self, address: str = "vip") -> float:
        return self.metric("dmzkit_failover_forged_claims_total", address=address)


@pytest.fixture
def make_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Lab]]:
    clock = Clock()
    monkeypatch.setattr(service, "time", clock)
    monkeypatch.setattr(service, "carrier", lambda _interface: True)
    monkeypatch.setattr(service, "ANNOUNCE_AT", (0.0,))  # the takeover's GARP schedule is not at issue here

    def make(**settings: Any) -> Lab:
        segment = Segment(clock)
        segment.answers[WITNESS] = WITNESS_MAC
        addresses = Addresses()
        monkeypatch.setattr(arp, "ArpSocket", lambda _interface: segment)
        monkeypatch.setattr(service, "Rtnetlink", lambda: addresses)
        raw = {"interface": "eth0", "vip": str(VIP), "primary_macs": [PRIMARY_MAC], "primary_mgmt": str(MGMT),
               "witness": str(WITNESS), "damping": {"min_active": 0}, "state_dir": str(tmp_path), **settings}
        lab = Lab(clock, segment, addresses, service.Watchdog(Settings.from_dict(raw)))
        lab.primary(alive=True)
        lab.watchdog.record(lab.watchdog.machine.start(clock.now, holding_vip=False))
        return lab

    yield make


def scenario(body: Callable[[Lab], Awaitable[None]], lab: Lab) -> None:
    async def run() -> None:
        async with lab.watchdog.tasks:  # what the service runs beside its loop (announcements, hooks)
            await lab.run_for(1.0)  # a healthy primary first
            assert lab.watchdog.machine.state is State.STANDBY
            await body(lab)
    asyncio.run(run())


def test_one_forged_garp_never_makes_an_active_backup_yield(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab()

    async def body(lab: Lab) -> None:
        await lab.take_over()
        lab.segment.forge_garp()  # any DMZ MAC says "the VIP is at my MAC"
        await lab.run_for(1.0, check=lambda: assert_held(lab))
        assert "yield" not in lab.transitions()
        assert lab.forged_claims() == 1

    scenario(body, lab)


def assert_held(lab: Lab) -> None:
    assert lab.holds_vip, f"the VIP went unheld after a forged claim: {lab.transitions()}"


def test_three_forged_garps_three_seconds_apart_neither_damp_nor_leave_the_vip_unheld(
        make_lab: Callable[..., Lab]) -> None:
    """The lab's reproduction: each yield was followed by a takeover, the
    third yield by damping, and the VIP stayed unheld."""
    lab = make_lab()

    async def body(lab: Lab) -> None:
        await lab.take_over()
        for _ in range(3):
            lab.segment.forge_garp()
            await lab.run_for(3.0, check=lambda: assert_held(lab))
        assert lab.watchdog.machine.state is State.ACTIVE
        assert not lab.watchdog.machine.damped(lab.clock.now)
        assert len(lab.watchdog.machine.takeovers) == 1
        assert lab.watchdog.machine.conflicts == 0

    scenario(body, lab)


def test_forged_replies_for_the_management_address_are_no_sign_of_life(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab()

    async def body(lab: Lab) -> None:
        lab.primary(alive=False)
        lab.segment.answers[MGMT] = FORGER_MAC  # someone answers for the dead primary's own address
        await lab.run_for(1.0)
        assert lab.watchdog.machine.state is State.ACTIVE and lab.holds_vip, lab.transitions()
        assert lab.forged_claims("mgmt") >= 3

    scenario(body, lab)


def test_forged_replies_for_the_management_address_never_hand_back_early(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hold_down=1)

    async def body(lab: Lab) -> None:
        await lab.take_over()
        lab.segment.answers[MGMT] = FORGER_MAC
        await lab.run_for(3.0, check=lambda: assert_held(lab))
        assert "handback" not in lab.transitions()

    scenario(body, lab)


def test_a_stranger_answering_for_the_vip_of_a_dead_primary_delays_the_takeover_only_for_a_while(
        make_lab: Callable[..., Lab]) -> None:
    """RFC 5227 caution first (it may be a misconfigured host), but a forger
    must not keep the VIP unheld for as long as it likes."""
    lab = make_lab()

    async def body(lab: Lab) -> None:
        lab.primary(alive=False)
        lab.segment.answers[VIP.ip] = FORGER_MAC
        await lab.run_for(5.0)
        assert not lab.holds_vip, "took an address a stranger answers for at once"
        await lab.run_for(7.0)
        assert lab.watchdog.machine.state is State.ACTIVE and lab.holds_vip, lab.transitions()
        # Held, and defended: the stranger keeps answering our probes.
        await lab.run_for(1.0, check=lambda: assert_held(lab))
        assert lab.metric("dmzkit_failover_defences_total") == 1

    scenario(body, lab)


def test_a_claim_from_the_primarys_own_mac_still_makes_it_yield_at_once(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab()

    async def body(lab: Lab) -> None:
        await lab.take_over()
        lab.segment.forge_garp(PRIMARY_MAC)  # the gateway is back and claims its address
        await lab.tick()
        assert not lab.holds_vip
        assert lab.transitions()[-2:] == ["yield", "standby"]

    scenario(body, lab)


def test_forged_claims_are_defended_at_most_once_per_defend_interval(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab()

    async def body(lab: Lab) -> None:
        await lab.take_over()
        start = lab.clock.now
        for _ in range(20):  # one forged claim every half second, for ten seconds
            lab.segment.forge_garp()
            await lab.run_for(0.5, check=lambda: assert_held(lab))
        assert lab.segment.defences_since(start) == 1
        await lab.run_for(0.5)
        first = next(at for at, p in lab.segment.sent
                     if at >= start and p.sender_ip == VIP.ip and not p.is_probe)
        assert first - start <= INTERVAL + 0.01, "the first claim is defended at the next tick"
        lab.segment.forge_garp()  # ten seconds after the first defence: defended again
        await lab.tick()
        assert lab.segment.defences_since(start) == 2
        assert lab.forged_claims() == 21
        assert lab.watchdog.machine.state is State.ACTIVE

    scenario(body, lab)


def test_the_backups_own_mac_is_refused_as_the_primarys(make_lab: Callable[..., Lab]) -> None:
    with pytest.raises(ConfigError, match="primary_macs"):
        make_lab(primary_macs=[BACKUP_MAC])
