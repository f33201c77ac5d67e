"""Unsolicited neighbour advertisements: IPv6's gratuitous ARP.

After a takeover of an IPv6 VIP, one NA to all-nodes (ff02::1) with the
Override flag makes every neighbour that knows the address point it at our
MAC (RFC 4861 §7.2.6); the Router flag must be set when the VIP is the
clients' default router, or they drop it from their router list (keepalived
PR #200). Hop limit 255, as receivers require; the kernel fills in the
checksum of a raw ICMPv6 socket.
"""
from __future__ import annotations

import ipaddress
import socket
import struct

ND_NEIGHBOR_ADVERT = 136
FLAG_ROUTER, FLAG_SOLICITED, FLAG_OVERRIDE = 0x80000000, 0x40000000, 0x20000000
OPT_TARGET_LINKADDR = 2
ALL_NODES = "ff02::1"


def advertisement(target: ipaddress.IPv6Address, mac: str, router: bool) -> bytes:
    """ICMPv6 NA (checksum left to the kernel) with the target link-layer address option."""
    flags = FLAG_OVERRIDE | (FLAG_ROUTER if router else 0)
    option = struct.pack("!BB6s", OPT_TARGET_LINKADDR, 1, bytes.fromhex(mac.replace(":", "")))
    return struct.pack("!BBHI16s", ND_NEIGHBOR_ADVERT, 0, 0, flags, target.packed) + option


class NdpSocket:
    """A raw ICMPv6 socket sending to all-nodes on one interface."""

    def __init__(self, interface: str) -> None:
        self.index = socket.if_nametoindex(interface)
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.index)
        except OSError:
            self.sock.close()
            raise

    def announce(self, target: ipaddress.IPv6Address, mac: str, router: bool) -> bool:
        """Whether the advertisement left (not with our link down; see ArpSocket.send)."""
        try:
            self.sock.sendto(advertisement(target, mac, router), (ALL_NODES, 0, 0, self.index))
        except OSError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()
