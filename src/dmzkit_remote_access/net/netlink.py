"""Add, remove and list an interface's addresses over rtnetlink; list the
TCP listeners over sock_diag.

One request and its acknowledgement on a netlink socket: a fraction of a
millisecond, where `ip addr add` costs a fork and ~2.5 ms (failover.md §8.8),
and no dependency to install on the backup host.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator

RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR, RTM_NEWROUTE = 20, 21, 22, 24
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x100, 0x200, 0x400, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_NODAD = 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
RTMGRP_LINK = 0x1
RTPROT_STATIC, RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RTN_UNICAST, RTNH_F_ONLINK = 4, 0, 253, 1, 4
_NLMSG = struct.Struct("=LHHLL")
_IFADDR = struct.Struct("=BBBBi")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTA = struct.Struct("=HH")

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class NetlinkError(OSError):
    pass


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    data = _RTA.pack(_RTA.size + len(payload), kind) + payload
    return data + b"\0" * (_align(len(data)) - len(data))


def _attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + _RTA.size <= len(data):
        length, kind = _RTA.unpack_from(data, offset)
        if length < _RTA.size:
            return
        yield kind, data[offset + _RTA.size:offset + length]
        offset += _align(length)


class Netlink:
    """One netlink socket of `protocol`: requests and their answers, in turn."""

    def __init__(self, protocol: int) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def _request(self, kind: int, flags: int, body: bytes) -> Iterator[tuple[int, bytes]]:
        self.seq += 1
        self.sock.send(_NLMSG.pack(_NLMSG.size + len(body), kind, NLM_F_REQUEST | flags, self.seq, 0) + body)
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset + _NLMSG.size <= len(data):
                length, msg_type, _flags, seq, _pid = _NLMSG.unpack_from(data, offset)
                payload = data[offset + _NLMSG.size:offset + length]
                offset += _align(length)
                if seq != self.seq:
                    continue
                if msg_type == NLMSG_DONE:
                    return
                if msg_type == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise NetlinkError(code, os.strerror(code))
                    return
                yield msg_type, payload

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Rtnetlink(Netlink):
    def __init__(self) -> None:
        super().__init__(socket.NETLINK_ROUTE)

    def _change(self, kind: int, flags: int, interface: str, address: Interface) -> None:
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        body = _IFADDR.pack(family, address.network.prefixlen, 0, 0, socket.if_nametoindex(interface))
        body += _attr(IFA_LOCAL, address.ip.packed) + _attr(IFA_ADDRESS, address.ip.packed)
        if address.version == 6:
            # The confirm burst already checked the address is free: skip the 1-2 s of DAD.
            body += _attr(IFA_FLAGS, struct.pack("=I", IFA_F_NODAD))
        for _ in self._request(kind, NLM_F_ACK | flags, body):
            pass

    def add(self, interface: str, address: Interface) -> bool:
        """Add the address; False if it was already there."""
        try:
            self._change(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, interface, address)
        except NetlinkError as e:
            if e.errno == errno.EEXIST:
                return False
            raise
        return True

    def delete(self, interface: str, address: Interface) -> bool:
        """Remove the address; False if it was not there."""
        try:
            self._change(RTM_DELADDR, 0, interface, address)
        except NetlinkError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                return False
            raise
        return True

    def replace_route(self, table: int, interface: str, destination: ipaddress.IPv4Network | None = None,
                      gateway: ipaddress.IPv4Address | None = None) -> None:
        """Add or replace an IPv4 route in `table`: to `destination` on the
        link, or the default route via `gateway` (on-link: the interface may
        hold no address in the gateway's subnet but the VIP)."""
        prefix = destination.prefixlen if destination is not None else 0
        scope = RT_SCOPE_LINK if gateway is None else RT_SCOPE_UNIVERSE
        body = _RTMSG.pack(socket.AF_INET, prefix, 0, 0, table & 0xFF, RTPROT_STATIC, scope, RTN_UNICAST,
                           RTNH_F_ONLINK if gateway is not None else 0)
        body += _attr(RTA_TABLE, struct.pack("=I", table)) + _attr(RTA_OIF, struct.pack("=i", socket.if_nametoindex(interface)))
        if destination is not None:
            body += _attr(RTA_DST, destination.network_address.packed)
        if gateway is not None:
            body += _attr(RTA_GATEWAY, gateway.packed)
        for _ in self._request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, body):
            pass

    def addresses(self, interface: str) -> set[Interface]:
        index = socket.if_nametoindex(interface)
        found: set[Interface] = set()
        for _kind, payload in self._request(RTM_GETADDR, NLM_F_DUMP, _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            family, prefix, _flags, _scope, ifindex = _IFADDR.unpack_from(payload)
            if ifindex != index:
                continue
            attrs = dict(_attrs(payload[_IFADDR.size:]))
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw is not None:
                found.add(ipaddress.ip_interface((ipaddress.ip_address(raw), prefix)))
        return found


NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, TCP_LISTEN = 4, 20, 10
# inet_diag_req_v2: family, protocol, ext, pad, states; then inet_diag_sockid
# (sport, dport, src[16], dst[16], if, cookie[8]), all zero: any socket.
_DIAG_REQ = struct.Struct("=BBBBI48x")
# inet_diag_msg: family, state, timer, retrans; sockid (sport and dport in
# network order, src, dst, if, cookie); expires, rqueue, wqueue, uid, inode.
_DIAG_MSG = struct.Struct("=BBBB2H16s16sI8sIIIII")


class SockDiag(Netlink):
    """The kernel's socket tables, filtered in the kernel: what costs
    `/proc/net/tcp` a line per socket (a flood's too) costs one message per
    listener here."""

    def __init__(self) -> None:
        super().__init__(NETLINK_SOCK_DIAG)

    def tcp_listeners(self) -> dict[str, int]:
        """IPv4 TCP listening sockets, "address:port" -> the connections
        waiting in its accept queue (a listener's rqueue)."""
        found: dict[str, int] = {}
        body = _DIAG_REQ.pack(socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN)
        for _kind, payload in self._request(SOCK_DIAG_BY_FAMILY, NLM_F_DUMP, body):
            if len(payload) < _DIAG_MSG.size:
                continue
            fields = _DIAG_MSG.unpack_from(payload)
            sport, src, rqueue = socket.ntohs(fields[4]), fields[6], fields[11]
            found[f"{socket.inet_ntoa(src[:4])}:{sport}"] = rqueue
        return found


class LinkEvents:
    """The kernel's link notifications (RTM_NEWLINK, RTM_DELLINK): a reader is
    woken the moment a carrier goes, not at its next poll. The messages are
    only a wake-up; the reader asks `carrier()` what the link is now."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
        self.sock.bind((0, RTMGRP_LINK))

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> None:
        """Discard every pending notification."""
        while True:
            try:
                self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno != errno.ENOBUFS:  # an overrun lost some: they were wake-ups only
                    raise


def carrier(interface: str) -> bool:
    """Is the link up with a carrier? (False when down, absent or unreadable.)"""
    try:
        with open(f"/sys/class/net/{interface}/carrier", encoding="ascii") as f:
            return f.read().strip() == "1"
    except OSError:
        return False
