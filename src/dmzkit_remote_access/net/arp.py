"""ARP frames for probing and announcing an IPv4 address, on a raw socket.

- A probe (RFC 5227) asks "who has X?" with sender IP 0.0.0.0: the holder
  answers with its MAC, nobody's neighbour cache is touched, and our own
  kernel does not answer it, so the same probe tells "which MAC holds the VIP"
  whether or not we hold it ourselves.
- A gratuitous ARP announces "X is at MAC" in both the request and the reply
  form, because some devices only accept one of them (failover.md §5.2).

The Ethernet source is always our own MAC, even when the ARP payload speaks
for the primary's MAC on handback: the switch must keep learning our port for
our MAC, and the neighbours read the mapping from the ARP payload.

ARP has no authentication: anyone on the segment can send any frame. So what
a frame says counts only when it comes from a MAC we were told to trust
(`ArpPacket.sent_by`), and a claim of our address by any other MAC is
defended, at most once per DEFEND_INTERVAL (RFC 5227 §2.4 (c)), never obeyed.
"""
from __future__ import annotations

import ipaddress
import re
import socket
import struct
import time
from collections.abc import Collection
from dataclasses import dataclass

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
ZERO_IP = ipaddress.IPv4Address(0)
OP_REQUEST = 1
OP_REPLY = 2
# Ethernet header, then htype, ptype, hlen, plen, op, sha, spa, tha, tpa.
_FRAME = struct.Struct("!6s6sH HHBBH6s4s6s4s")
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
# RFC 5227 §1.1: a host defends its address with one announcement at most
# once in this many seconds, so two hosts that both defend do not loop.
DEFEND_INTERVAL = 10.0
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def unicast_mac(value: object) -> str:
    """`value` as a lower-case aa:bb:cc:dd:ee:ff MAC of one interface, or
    ValueError: a group (multicast, broadcast) or all-zero address is no
    interface's, and trusting it would trust whoever writes it in a frame."""
    text = value.lower() if isinstance(value, str) else ""
    if not _MAC.fullmatch(text):
        raise ValueError(f"{value!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    raw = mac_bytes(text)
    if raw[0] & 1 or raw == ZERO_MAC:
        raise ValueError(f"{value!r} is a group or all-zero address, not an interface's")
    return text


@dataclass(frozen=True)
class ArpPacket:
    op: int
    sender_mac: str
    sender_ip: ipaddress.IPv4Address
    target_mac: str
    target_ip: ipaddress.IPv4Address
    eth_src: str

    @property
    def is_probe(self) -> bool:
        return self.op == OP_REQUEST and self.sender_ip == ZERO_IP

    def claims(self, address: ipaddress.IPv4Address) -> bool:
        """Does this frame say `address` is at its sender MAC?"""
        return self.sender_ip == address

    def sent_by(self, macs: Collection[str]) -> bool:
        """Is this frame from one of `macs`, by its ARP sender and its Ethernet
        source both? Either is forged as easily as the other; asking for both
        makes a forger move the real host's MAC in the switches (which they
        report) instead of just writing it into one field."""
        return self.sender_mac in macs and self.eth_src in macs


def frame(op: int, eth_src: str, sender_mac: str, sender_ip: ipaddress.IPv4Address,
          target_ip: ipaddress.IPv4Address, target_mac: bytes = ZERO_MAC, eth_dst: bytes = BROADCAST) -> bytes:
    return _FRAME.pack(
        eth_dst, mac_bytes(eth_src), ETH_P_ARP,
        1, 0x0800, 6, 4, op,
        mac_bytes(sender_mac), sender_ip.packed, target_mac, target_ip.packed,
    )


def probe(own_mac: str, target: ipaddress.IPv4Address) -> bytes:
    return frame(OP_REQUEST, own_mac, own_mac, ZERO_IP, target)


def announcements(own_mac: str, address: ipaddress.IPv4Address, holder_mac: str | None = None) -> tuple[bytes, bytes]:
    """Gratuitous ARP, request and reply form, saying `address` is at `holder_mac` (default: ours)."""
    holder = holder_mac or own_mac
    return (
        frame(OP_REQUEST, own_mac, holder, address, address),
        frame(OP_REPLY, own_mac, holder, address, address, target_mac=mac_bytes(holder)),
    )


def parse(data: bytes) -> ArpPacket | None:
    """An ARP packet for IPv4 over Ethernet, or None for anything else."""
    if len(data) < _FRAME.size:
        return None
    (_dst, src, ethertype, htype, ptype, hlen, plen, op, sha, spa, tha, tpa) = _FRAME.unpack_from(data)
    if ethertype != ETH_P_ARP or (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4) or op not in (OP_REQUEST, OP_REPLY):
        return None
    return ArpPacket(
        op=op,
        sender_mac=mac_text(sha),
        sender_ip=ipaddress.IPv4Address(spa),
        target_mac=mac_text(tha),
        target_ip=ipaddress.IPv4Address(tpa),
        eth_src=mac_text(src),
    )


def receive_time(ancdata: list[tuple[int, int, bytes]], offset: float) -> float:
    """The kernel's receive time (SO_TIMESTAMPNS) of a packet on the
    `time.monotonic()` clock, `offset` being time.time() - time.monotonic();
    now when the kernel gave none."""
    at = time.monotonic()
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            seconds, nanoseconds = struct.unpack("qq", value[:16])
            at = min(at, seconds + nanoseconds / 1e9 - offset)
    return at


class ArpSocket:
    """A non-blocking AF_PACKET socket that sends and receives ARP on one interface.

    Each received packet comes with the kernel's receive time, converted to
    `time.monotonic()`, so a reply read late by a stalled loop still counts
    for the moment it arrived.
    """

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.sock.bind((interface, ETH_P_ARP))
            self.sock.setblocking(False)
            self.mac = mac_text(self.sock.getsockname()[4])
        except OSError:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes) -> bool:
        """Whether the frame left. With our own link down (ENETDOWN, ENXIO) it
        cannot: the carrier check turns that into a fault, the send must not."""
        try:
            self.sock.send(data)
        except OSError:
            return False
        return True

    def receive(self) -> list[tuple[float, ArpPacket]]:
        """Every ARP packet waiting on the socket, with its monotonic receive time."""
        received = []
        offset = time.time() - time.monotonic()
        while True:
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(128, socket.CMSG_SPACE(16))
            except OSError:  # nothing waiting (EAGAIN), or our link went down (ENETDOWN)
                return received
            packet = parse(data)
            if packet is None or packet.eth_src == self.mac:
                continue
            received.append((receive_time(ancdata, offset), packet))

    def close(self) -> None:
        self.sock.close()
