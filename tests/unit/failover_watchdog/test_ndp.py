"""Unsolicited NA against a real IPv6 neighbour in the peer's namespace."""
from __future__ import annotations

import ipaddress
import struct
import subprocess
import time
from typing import Any

from dmzkit_remote_access.net import ndp

VIP6 = ipaddress.IPv6Address("2001:db8:99::10")


def test_the_advertisement_says_override_and_carries_our_mac() -> None:
    packet = ndp.advertisement(VIP6, "02:00:00:00:00:0a", router=True)
    kind, _code, _sum, flags, target = struct.unpack_from("!BBHI16s", packet)
    assert kind == 136 and target == VIP6.packed
    assert flags & ndp.FLAG_OVERRIDE and flags & ndp.FLAG_ROUTER and not flags & ndp.FLAG_SOLICITED
    assert packet[24:] == b"\x02\x01\x02\x00\x00\x00\x00\x0a"
    assert not struct.unpack_from("!I", ndp.advertisement(VIP6, "02:00:00:00:00:0a", router=False), 4)[0] & ndp.FLAG_ROUTER


def test_a_neighbour_that_knows_the_vip_moves_it_to_our_mac(peer: Any) -> None:
    subprocess.run(["ip", "link", "set", peer.ours, "up"], check=True)
    ours = open(f"/sys/class/net/{peer.ours}/address", encoding="ascii").read().strip()
    # The peer knows the VIP at some other MAC, as it would know the gateway's.
    peer.ip("-6", "neigh", "replace", str(VIP6), "lladdr", "02:00:00:00:00:99", "dev", peer.theirs, "nud", "stale")
    deadline = time.monotonic() + 5
    while "tentative" in subprocess.run(["ip", "-6", "addr", "show", "dev", peer.ours], capture_output=True,
                                        text=True, check=True).stdout and time.monotonic() < deadline:
        time.sleep(0.1)  # our link-local address must be usable as the source
    sock = ndp.NdpSocket(peer.ours)
    try:
        sock.announce(VIP6, ours, router=False)
    finally:
        sock.close()
    deadline = time.monotonic() + 3
    while ours not in peer.ip("-6", "neigh", "show", str(VIP6)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ours in peer.ip("-6", "neigh", "show", str(VIP6))
