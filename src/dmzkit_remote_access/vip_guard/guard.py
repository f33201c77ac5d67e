"""Claim the VIP only when nobody holds it, and let go on carrier loss.

While the backup holds the VIP (the gateway came back after a takeover), every
probe is answered by the backup's MAC and the guard waits; the backup hands
back after its hold-down, announces the gateway's MAC, and the next quiet
probe round lets the guard claim. So at no moment do two MACs answer for the
VIP (failover.md §7). A lost carrier drops the address at once (the kernel's
link notification wakes the guard, even in the middle of its announcements),
so a gateway whose link returns probes again instead of answering for a VIP
the backup took over meanwhile.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable

from ..daemon import Notifier
from ..net import arp
from ..net.netlink import LinkEvents, Rtnetlink, carrier

log = logging.getLogger("dmzkit.vip_guard")
# GARP after claiming: at once, then +0.5 and +1 s (a lost frame is repaired).
ANNOUNCE_AT = (0.0, 0.5, 1.0)


class Guard:
    def __init__(self, interface: str, vip: ipaddress.IPv4Interface, interval: float, probes: int, *,
                 sock: arp.ArpSocket, netlink: Rtnetlink, links: LinkEvents,
                 has_carrier: Callable[[str], bool] = carrier) -> None:
        self.interface = interface
        self.vip = vip
        self.interval = interval
        self.probes = probes
        self.sock = sock
        self.netlink = netlink
        self.links = links
        self.has_carrier = has_carrier
        # Carrier losses seen: a probe round or a claim that sees it change stops.
        self.losses = 0
        self.notifier = Notifier()

    @classmethod
    def open(cls, interface: str, vip: ipaddress.IPv4Interface, interval: float, probes: int) -> Guard:
        """The guard on the host's own sockets (raw ARP and rtnetlink: CAP_NET_RAW, CAP_NET_ADMIN)."""
        return cls(interface, vip, interval, probes,
                   sock=arp.ArpSocket(interface), netlink=Rtnetlink(), links=LinkEvents())

    def holds(self) -> bool:
        return self.vip in self.netlink.addresses(self.interface)

    def others_answered(self) -> set[str]:
        """MACs that said the VIP is theirs since the last call (our own frames are dropped)."""
        return {p.sender_mac for _, p in self.sock.receive() if p.claims(self.vip.ip) and not p.is_probe}

    def on_link_event(self) -> None:
        self.links.drain()
        if not self.has_carrier(self.interface):
            self.losses += 1
            self.release("link down")
            self.notifier.notify(status=f"link {self.interface} down")

    async def free(self) -> bool:
        """RFC 5227 probe round: `probes` probes `interval` apart, then one more
        interval for the last answer. True when nobody answered and the link
        stayed up throughout."""
        losses = self.losses
        self.others_answered()  # what arrived before this round says nothing about now
        for _ in range(self.probes):
            if not self.sock.send(arp.probe(self.sock.mac, self.vip.ip)):
                return False  # a probe that never left proves nothing
            await asyncio.sleep(self.interval)
        if self.losses != losses:
            return False  # the link went and came back: the backup may hold the VIP now
        holders = self.others_answered()
        if holders:
            self.notifier.notify(status=f"waiting: {self.vip.ip} is held by {', '.join(sorted(holders))}")
        return not holders

    async def claim(self) -> None:
        losses = self.losses
        self.netlink.add(self.interface, self.vip)
        log.info("claimed %s on %s", self.vip, self.interface)
        self.notifier.notify(status=f"holding {self.vip} on {self.interface}")
        start = time.monotonic()
        for offset in ANNOUNCE_AT:
            await asyncio.sleep(max(0.0, start + offset - time.monotonic()))
            if self.losses != losses:
                return  # released when the link went: announcing it now would fight the backup
            for frame in arp.announcements(self.sock.mac, self.vip.ip):
                self.sock.send(frame)

    def release(self, why: str) -> None:
        if self.holds():
            self.netlink.delete(self.interface, self.vip)
            log.info("released %s: %s", self.vip, why)

    async def run(self) -> None:
        # READY at once: the services on the VIP bind it non-locally and need
        # not wait while the backup still holds it.
        self.notifier.notify(ready=1, status=f"probing {self.vip.ip}")
        asyncio.get_running_loop().add_reader(self.links.fileno(), self.on_link_event)
        try:
            while True:
                if not self.has_carrier(self.interface):
                    self.on_link_event()  # a notification may have been lost to an overrun
                elif not self.holds() and await self.free() and self.has_carrier(self.interface):
                    await self.claim()
                self.sock.receive()  # nothing to act on while holding: the backup yields to our claim
                await asyncio.sleep(self.interval)
        finally:
            asyncio.get_running_loop().remove_reader(self.links.fileno())
            self.release("stopping")
            self.notifier.notify(stopping=1)
