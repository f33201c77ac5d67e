"""ARP frames, and the probe and announcements against a real Linux neighbour."""
from __future__ import annotations

import ipaddress
import select
import time
from typing import Any

import pytest

from dmzkit_remote_access.net import arp


OURS = "02:00:00:00:00:01"
VIP = ipaddress.IPv4Address("198.18.99.10")


def test_probe_frame_round_trip() -> None:
    packet = arp.parse(arp.probe(OURS, VIP))
    assert packet is not None
    assert packet.is_probe
    assert (packet.op, packet.sender_mac, packet.target_ip, packet.eth_src) == (arp.OP_REQUEST, OURS, VIP, OURS)


def test_announcements_speak_for_the_holder_from_our_own_mac() -> None:
    primary = "02:00:00:00:00:0a"
    request, reply = (arp.parse(f) for f in arp.announcements(OURS, VIP, holder_mac=primary))
    assert request is not None and reply is not None
    assert (request.op, reply.op) == (arp.OP_REQUEST, arp.OP_REPLY)
    for packet in (request, reply):
        assert packet.sender_mac == primary and packet.eth_src == OURS
        assert packet.sender_ip == packet.target_ip == VIP
        assert packet.claims(VIP) and not packet.is_probe


@pytest.mark.parametrize("data", [b"", b"\x00" * 41, arp.probe(OURS, VIP)[:12] + b"\x08\x00" + b"\x00" * 28])
def test_parse_ignores_what_is_not_arp(data: bytes) -> None:
    assert arp.parse(data) is None


def wait_for(sock: arp.ArpSocket, timeout: float) -> list[tuple[float, arp.ArpPacket]]:
    deadline = time.monotonic() + timeout
    received: list[tuple[float, arp.ArpPacket]] = []
    while (left := deadline - time.monotonic()) > 0:
        if select.select([sock], [], [], left)[0]:
            received += sock.receive()
    return received


def test_probe_reveals_the_holders_mac(peer: Any) -> None:
    sock = arp.ArpSocket(peer.ours)
    try:
        sent = time.monotonic()
        sock.send(arp.probe(sock.mac, VIP))
        replies = [(t, p) for t, p in wait_for(sock, 0.2) if p.op == arp.OP_REPLY and p.claims(VIP)]
        assert [p.sender_mac for _, p in replies] == [peer.mac]
        assert sent <= replies[0][0] <= time.monotonic()  # kernel time, on our monotonic clock
        sock.send(arp.probe(sock.mac, ipaddress.IPv4Address("198.18.99.11")))
        assert not [p for _, p in wait_for(sock, 0.2) if p.op == arp.OP_REPLY]
    finally:
        sock.close()


def test_gratuitous_arp_moves_the_neighbours_entry(peer: Any) -> None:
    moved = ipaddress.IPv4Address("198.18.99.20")
    stale_mac = "02:00:00:00:00:99"
    peer.ip("neigh", "replace", str(moved), "lladdr", stale_mac, "dev", peer.theirs, "nud", "stale")
    sock = arp.ArpSocket(peer.ours)
    try:
        for data in arp.announcements(sock.mac, moved):
            sock.send(data)
        time.sleep(0.05)
        assert sock.mac in peer.ip("neigh", "show", str(moved))
        # Handing back: the same announcement, speaking for the primary's MAC.
        for data in arp.announcements(sock.mac, moved, holder_mac=stale_mac):
            sock.send(data)
        time.sleep(0.05)
        assert stale_mac in peer.ip("neigh", "show", str(moved))
    finally:
        sock.close()


def test_a_frame_is_from_known_macs_only_by_its_arp_sender_and_ethernet_source_both() -> None:
    primary, forger = "02:00:00:00:00:0a", "02:00:00:00:00:66"
    for eth_src, sender, known in ((primary, primary, True), (forger, primary, False), (primary, forger, False)):
        packet = arp.parse(arp.frame(arp.OP_REPLY, eth_src, sender, VIP, VIP))
        assert packet is not None and packet.sent_by({primary}) is known


@pytest.mark.parametrize("text, normal", [("02:00:00:00:00:0A", "02:00:00:00:00:0a"), ("00:16:3e:aa:bb:cc", None)])
def test_unicast_macs_are_normalised(text: str, normal: str | None) -> None:
    assert arp.unicast_mac(text) == (normal or text)


@pytest.mark.parametrize("text", ["ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "33:33:00:00:00:01",
                                  "00:00:00:00:00:00", "02:00:00:00:00", "02-00-00-00-00-0a", "", None])
def test_group_zero_and_malformed_macs_are_refused(text: object) -> None:
    with pytest.raises(ValueError):
        arp.unicast_mac(text)
