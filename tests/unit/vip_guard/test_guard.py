"""The VIP guard's decisions, against a simulated segment (no privileges needed)."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterator

import pytest

from dmzkit_remote_access.net import arp
from dmzkit_remote_access.vip_guard import guard as guard_module
from dmzkit_remote_access.vip_guard.guard import Guard

OURS = "02:00:00:00:00:01"
BACKUP = "02:00:00:00:00:02"
FORGER = "02:00:00:00:00:66"
PATIENCE = 0.2
VIP = ipaddress.IPv4Interface("198.18.99.10/24")
INTERVAL = 0.01


class Segment:
    """Our ARP socket on a segment where `holder` (a MAC, or None) answers for the VIP."""

    mac = OURS

    def __init__(self) -> None:
        self.holder: str | None = None
        self.link_up = True
        self.sent: list[arp.ArpPacket] = []
        self.inbox: list[tuple[float, arp.ArpPacket]] = []

    def send(self, data: bytes) -> bool:
        if not self.link_up:
            return False
        packet = arp.parse(data)
        assert packet is not None
        self.sent.append(packet)
        if packet.is_probe and self.holder is not None:
            self.hear(self.holder)
        return True

    def hear(self, mac: str, eth_src: str | None = None) -> None:
        """A frame of `mac` saying the VIP is its own (sent from `eth_src`, by default `mac`)."""
        reply = arp.parse(arp.frame(arp.OP_REPLY, eth_src or mac, mac, VIP.ip, VIP.ip, target_mac=arp.mac_bytes(mac)))
        assert reply is not None
        self.inbox.append((time.monotonic(), reply))

    def receive(self) -> list[tuple[float, arp.ArpPacket]]:
        received, self.inbox = self.inbox, []
        return received

    def probes(self) -> int:
        return sum(p.is_probe for p in self.sent)

    def announcements(self) -> int:
        return sum(p.claims(VIP.ip) and p.sender_mac == OURS for p in self.sent)


class Addresses:
    def __init__(self) -> None:
        self.held: set[ipaddress.IPv4Interface] = set()

    def addresses(self, interface: str) -> set[ipaddress.IPv4Interface]:
        return set(self.held)

    def add(self, interface: str, address: ipaddress.IPv4Interface) -> bool:
        self.held.add(address)
        return True

    def delete(self, interface: str, address: ipaddress.IPv4Interface) -> bool:
        self.held.discard(address)
        return True


class Links:
    """A readable descriptor standing in for the kernel's link notifications."""

    def __init__(self) -> None:
        self.ours, self.kernel = socket.socketpair()
        self.ours.setblocking(False)

    def fileno(self) -> int:
        return self.ours.fileno()

    def drain(self) -> None:
        try:
            while self.ours.recv(4096):
                pass
        except BlockingIOError:
            pass

    def notify(self) -> None:
        self.kernel.send(b"link")

    def close(self) -> None:
        self.ours.close()
        self.kernel.close()


@pytest.fixture
def segment() -> Segment:
    return Segment()


@pytest.fixture
def links() -> Iterator[Links]:
    links = Links()
    yield links
    links.close()


@pytest.fixture
def guard(segment: Segment, links: Links, monkeypatch: pytest.MonkeyPatch) -> Guard:
    monkeypatch.setattr(guard_module, "ANNOUNCE_AT", (0.0, 0.05, 0.1))
    return Guard("eth0", VIP, INTERVAL, 3, sock=segment, netlink=Addresses(),  # type: ignore[arg-type]
                 links=links, has_carrier=lambda _interface: segment.link_up,  # type: ignore[arg-type]
                 peers=[BACKUP], patience=PATIENCE)


def test_a_quiet_round_of_probes_finds_the_vip_free(guard: Guard, segment: Segment) -> None:
    assert asyncio.run(guard.free())
    assert segment.probes() == 3
    assert all(p.target_ip == VIP.ip and p.sender_ip == arp.ZERO_IP for p in segment.sent)


def test_an_answer_during_the_round_means_someone_holds_it(guard: Guard, segment: Segment) -> None:
    segment.holder = BACKUP
    assert not asyncio.run(guard.free())


def test_answers_from_before_the_round_say_nothing_about_now(guard: Guard, segment: Segment) -> None:
    segment.hear(BACKUP)  # the backup's handback, announced before we probed
    assert asyncio.run(guard.free())


def test_probes_that_never_left_prove_nothing(guard: Guard, segment: Segment) -> None:
    segment.link_up = False
    assert not asyncio.run(guard.free())
    assert segment.probes() == 0


def test_a_carrier_lost_during_the_round_voids_it(guard: Guard, segment: Segment, links: Links) -> None:
    async def flap() -> bool:
        asyncio.get_running_loop().call_later(INTERVAL / 2, lose_carrier, guard, segment)
        return await guard.free()

    assert not asyncio.run(flap())
    assert guard.losses == 1


def lose_carrier(guard: Guard, segment: Segment) -> None:
    segment.link_up = False
    guard.on_link_event()
    segment.link_up = True  # back before the round ends: the round still counts for nothing


def test_a_claim_adds_the_address_and_announces_it_three_times(guard: Guard, segment: Segment) -> None:
    asyncio.run(guard.claim())
    assert guard.holds()
    # Each announcement is a request and a reply, both from our own MAC.
    assert segment.announcements() == 6


def test_a_carrier_lost_while_announcing_releases_at_once_and_says_no_more(guard: Guard, segment: Segment) -> None:
    async def claim_and_lose_the_link() -> None:
        asyncio.get_running_loop().call_later(0.02, guard_loses_link, guard, segment)
        await guard.claim()

    asyncio.run(claim_and_lose_the_link())
    assert not guard.holds()
    assert segment.announcements() == 2  # only the first, sent before the link went


def guard_loses_link(guard: Guard, segment: Segment) -> None:
    segment.link_up = False
    guard.on_link_event()


async def run_until(guard: Guard, condition: object, timeout: float) -> bool:
    """Run the guard until `condition()` holds (True) or `timeout` passes (False), then stop it."""
    task = asyncio.ensure_future(guard.run())
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():  # type: ignore[operator]
                return True
            await asyncio.sleep(INTERVAL / 2)
        return False
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_the_guard_waits_while_the_backup_holds_the_vip_and_claims_once_it_let_go(
        guard: Guard, segment: Segment) -> None:
    segment.holder = BACKUP
    assert not asyncio.run(run_until(guard, guard.holds, 0.3)), "claimed a VIP the backup answers for"
    assert segment.probes() >= 6, "the guard stopped probing"
    segment.holder = None  # handed back
    assert asyncio.run(run_until(guard, guard.holds, 1.0))


def test_a_stopped_guard_releases_the_vip(guard: Guard, segment: Segment) -> None:
    asyncio.run(run_until(guard, guard.holds, 1.0))
    assert not guard.holds()


def test_a_link_notification_without_carrier_releases_the_vip(guard: Guard, segment: Segment, links: Links) -> None:
    def lost() -> bool:
        if guard.holds() and segment.link_up:
            segment.link_up = False
            links.notify()  # the kernel wakes the guard
        return not segment.link_up and not guard.holds()

    assert asyncio.run(run_until(guard, lost, 1.0))
    assert guard.losses >= 1


# -- forged ARP (issue 15, finding 6) -------------------------------------------------

def test_a_stranger_claiming_in_every_round_holds_the_guard_back_for_its_patience_only(
        guard: Guard, segment: Segment) -> None:
    segment.holder = FORGER  # answers every probe: no round is ever quiet
    start = time.monotonic()
    assert asyncio.run(run_until(guard, guard.holds, 1.0)), "a forger parked the guard"
    assert time.monotonic() - start >= PATIENCE
    assert guard.forged >= 3


def test_one_forged_claim_costs_one_round(guard: Guard, segment: Segment) -> None:
    async def forge_during_the_round() -> bool:
        asyncio.get_running_loop().call_later(INTERVAL, segment.hear, FORGER)
        return await guard.free()

    assert not asyncio.run(forge_during_the_round())
    assert asyncio.run(guard.free())


def test_the_backup_holds_it_back_past_the_patience(guard: Guard, segment: Segment) -> None:
    segment.holder = BACKUP
    assert not asyncio.run(run_until(guard, guard.holds, 5 * PATIENCE)), "claimed a VIP the backup answers for"


def test_the_backups_mac_in_a_frame_from_another_port_is_a_strangers(guard: Guard, segment: Segment) -> None:
    """The ARP sender alone is one field to write: the Ethernet source must be the peer's too."""
    async def forge() -> bool:
        asyncio.get_running_loop().call_later(INTERVAL, segment.hear, BACKUP, FORGER)
        return await guard.free()

    assert not asyncio.run(forge())
    assert guard.strangers_since is not None and guard.forged == 1


def test_the_backups_handback_for_our_mac_is_no_claim(guard: Guard, segment: Segment) -> None:
    async def handback_during_the_round() -> bool:
        asyncio.get_running_loop().call_later(INTERVAL, segment.hear, OURS, BACKUP)
        return await guard.free()

    assert asyncio.run(handback_during_the_round())


def test_claims_against_the_held_vip_are_defended_once_per_defend_interval(guard: Guard, segment: Segment) -> None:
    def forging() -> bool:
        if guard.holds():
            segment.hear(FORGER)
        return False

    asyncio.run(run_until(guard, forging, 0.5))
    # Three announcements of the claim, one defence: a frame pair each.
    assert segment.announcements() == 2 * (3 + 1)
    assert guard.defended_at is not None


def test_the_guards_own_mac_is_no_peer(segment: Segment, links: Links) -> None:
    with pytest.raises(ValueError, match="own"):
        Guard("eth0", VIP, INTERVAL, 3, sock=segment, netlink=Addresses(),  # type: ignore[arg-type]
              links=links, peers=[OURS])  # type: ignore[arg-type]
