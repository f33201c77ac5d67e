"""Claim the VIP only when nobody holds it, and let go on carrier loss.

While the backup holds the VIP (the gateway came back after a takeover), every
probe is answered by the backup's MAC and the guard waits; the backup hands
back after its hold-down, announces the gateway's MAC, and the next quiet
probe round lets the guard claim. So at no moment do two MACs answer for the
VIP (failover.md §7). A lost carrier drops the address at once (the kernel's
link notification wakes the guard, even in the middle of its announcements),
so a gateway whose link returns probes again instead of answering for a VIP
the backup took over meanwhile.

ARP is unauthenticated (issue 15, finding 6). Only the backup's known MACs
(`peers`) hold the guard back for as long as they claim the VIP. Any other
MAC that claims it during a probe round, forged or a misconfigured host, is
alarmed about and holds the guard back for `patience` seconds at most; then
the guard claims, and while it holds the VIP it defends it against every
other claim with one announcement at most every DEFEND_INTERVAL (RFC 5227
§2.4 (c)). The backup yields to the gateway's own claim, so even a backup
left out of `peers` gets the VIP back to the gateway.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Collection

from ..daemon import Notifier
from ..net import arp
from ..net.arp import DEFEND_INTERVAL
from ..net.netlink import LinkEvents, Rtnetlink, carrier

log = logging.getLogger("dmzkit.vip_guard")
# GARP after claiming: at once, then +0.5 and +1 s (a lost frame is repaired).
ANNOUNCE_AT = (0.0, 0.5, 1.0)
# How long claims of unknown MACs alone may keep the guard from claiming: one
# DEFEND_INTERVAL, in which a host that really holds the address and defends
# it (RFC 5227) would have shown it; the warning has been logged by then.
PATIENCE = DEFEND_INTERVAL


class Guard:
    def __init__(self, interface: str, vip: ipaddress.IPv4Interface, interval: float, probes: int, *,
                 sock: arp.ArpSocket, netlink: Rtnetlink, links: LinkEvents,
                 has_carrier: Callable[[str], bool] = carrier,
                 peers: Collection[str] = (), patience: float = PATIENCE) -> None:
        self.interface = interface
        self.vip = vip
        self.interval = interval
        self.probes = probes
        self.sock = sock
        self.netlink = netlink
        self.links = links
        self.has_carrier = has_carrier
        self.peers = frozenset(peers)
        if sock.mac in self.peers:
            raise ValueError(f"the peer MACs name {sock.mac}, this gateway's own")
        self.patience = patience
        # Carrier losses seen: a probe round or a claim that sees it change stops.
        self.losses = 0
        self.notifier = Notifier()
        # Since when only unknown MACs have claimed the VIP in our probe rounds.
        self.strangers_since: float | None = None
        self.forged = 0  # claims of the VIP by unknown MACs
        self.alarmed_at: float | None = None
        self.defended_at: float | None = None

    @classmethod
    def open(cls, interface: str, vip: ipaddress.IPv4Interface, interval: float, probes: int,
             peers: Collection[str] = (), patience: float = PATIENCE) -> Guard:
        """The guard on the host's own sockets (raw ARP and rtnetlink: CAP_NET_RAW, CAP_NET_ADMIN)."""
        sock = arp.ArpSocket(interface)
        try:
            return cls(interface, vip, interval, probes, sock=sock, netlink=Rtnetlink(), links=LinkEvents(),
                       peers=peers, patience=patience)
        except BaseException:
            sock.close()
            raise

    def holds(self) -> bool:
        return self.vip in self.netlink.addresses(self.interface)

    def claimants(self) -> tuple[set[str], set[str]]:
        """(peers, strangers): the MACs that said the VIP is theirs since the
        last call. Our own frames are dropped; a frame that says the VIP is at
        our MAC (the backup's handback) is no claim against us."""
        peers: set[str] = set()
        strangers: set[str] = set()
        for _, packet in self.sock.receive():
            if not packet.claims(self.vip.ip) or packet.is_probe or packet.sender_mac == self.sock.mac:
                continue
            if packet.sent_by(self.peers):
                peers.add(packet.sender_mac)
            else:
                strangers.add(packet.sender_mac)
                self.forged += 1
        if strangers:
            self.alarm(strangers)
        return peers, strangers

    def alarm(self, strangers: set[str]) -> None:
        """Warn about unknown MACs claiming the VIP, at most every DEFEND_INTERVAL."""
        now = time.monotonic()
        if self.alarmed_at is not None and now - self.alarmed_at < DEFEND_INTERVAL:
            return
        self.alarmed_at = now
        log.warning("unknown MAC %s claims %s (forged, or a host that must not hold it): %d such claims so far",
                    ", ".join(sorted(strangers)), self.vip.ip, self.forged)

    def on_link_event(self) -> None:
        self.links.drain()
        if not self.has_carrier(self.interface):
            self.losses += 1
            self.release("link down")
            self.notifier.notify(status=f"link {self.interface} down")

    async def free(self) -> bool:
        """RFC 5227 probe round: `probes` probes `interval` apart, then one more
        interval for the last answer. True when the link stayed up throughout
        and nobody claimed the VIP, or only unknown MACs did, for `patience`."""
        losses = self.losses
        self.claimants()  # what arrived before this round says nothing about now
        for _ in range(self.probes):
            if not self.sock.send(arp.probe(self.sock.mac, self.vip.ip)):
                return False  # a probe that never left proves nothing
            await asyncio.sleep(self.interval)
        if self.losses != losses:
            return False  # the link went and came back: the backup may hold the VIP now
        peers, strangers = self.claimants()
        if peers:  # the backup holds it: wait for its handback, however long
            self.strangers_since = None
            self.notifier.notify(status=f"waiting: {self.vip.ip} is held by the backup ({', '.join(sorted(peers))})")
            return False
        if not strangers:
            self.strangers_since = None
            return True
        now = time.monotonic()
        if self.strangers_since is None:
            self.strangers_since = now
        waited = now - self.strangers_since
        if waited < self.patience:
            self.notifier.notify(status=f"waiting: {self.vip.ip} is claimed by unknown {', '.join(sorted(strangers))}"
                                        f" ({waited:.1f} of {self.patience:g} s)")
            return False
        log.warning("claiming %s although unknown MAC %s has claimed it for %.1f s; defending it",
                    self.vip.ip, ", ".join(sorted(strangers)), waited)
        self.strangers_since = None
        return True

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

    def defend(self) -> None:
        """While holding the VIP: a claim of it by any other MAC (a forger, or
        the backup in a split brain, which yields to our MAC) is answered by
        one announcement, at most every DEFEND_INTERVAL (RFC 5227 §2.4 (c))."""
        peers, strangers = self.claimants()
        if not peers and not strangers:
            return
        now = time.monotonic()
        if self.defended_at is not None and now - self.defended_at < DEFEND_INTERVAL:
            return
        self.defended_at = now
        for frame in arp.announcements(self.sock.mac, self.vip.ip):
            self.sock.send(frame)
        log.warning("%s claimed %s, which this gateway holds: defended it", ", ".join(sorted(peers | strangers)),
                    self.vip.ip)

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
                    self.sock.receive()  # nothing to act on without a link
                elif self.holds():
                    self.defend()
                elif await self.free() and self.has_carrier(self.interface):
                    await self.claim()
                await asyncio.sleep(self.interval)
        finally:
            asyncio.get_running_loop().remove_reader(self.links.fileno())
            self.release("stopping")
            self.notifier.notify(stopping=1)
