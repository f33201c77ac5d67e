"""The relay: two loopback sockets for the NAS (authentication, accounting),
two sockets connected to AAA, and the requests in flight between them."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from .. import radius
from ..config import read_secret
from ..daemon import Notifier
from .settings import Settings

log = logging.getLogger(__name__)
Address = tuple[str, int]


@dataclass
class InFlight:
    nas: Address
    request: radius.Packet  # as the NAS sent it
    upstream: radius.Packet  # as AAA got it
    sent: bytes
    expiry: asyncio.TimerHandle | None = None


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, received: Callable[[bytes, Address], None]) -> None:
        self.received = received
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.received(data, addr)

    def send(self, data: bytes, addr: Address | None = None) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)


class Leg:
    """One kind of traffic (Access or Accounting): the NAS's socket, AAA's
    (connected, so the kernel drops datagrams from any other address) and the
    requests in flight, by the identifier AAA knows them by."""

    def __init__(self, relay: Relay, request_code: int, answer_codes: frozenset[int]) -> None:
        self.relay, self.request_code, self.answer_codes = relay, request_code, answer_codes
        self.nas = _Socket(self.from_nas)
        self.aaa = _Socket(self.from_aaa)
        self.in_flight: dict[int, InFlight] = {}
        # A NAS's retransmission (same address, identifier and authenticator)
        # is sent again, not anew; one that crossed the answer gets the answer
        # again, kept for the request's lifetime (RFC 5080 2.2.2), instead of
        # reaching AAA as a second login or accounting record.
        self.by_origin: dict[tuple[Address, int, bytes], int] = {}
        self.answered: dict[tuple[Address, int, bytes], bytes] = {}
        self.next_ident = 0

    def from_nas(self, data: bytes, nas: Address) -> None:
        try:
            request = radius.decode(data)
        except radius.Malformed as e:
            log.warning("dropped a malformed packet from %s:%d: %s", *nas, e)
            return
        origin = (nas, request.ident, request.authenticator)
        if origin in self.answered:
            self.nas.send(self.answered[origin], nas)
            return
        if origin in self.by_origin:
            self.aaa.send(self.in_flight[self.by_origin[origin]].sent)
            return
        try:
            upstream = self.relay.upstream(self.request_code, request, self.free_ident())
        except radius.Malformed as e:
            log.warning("dropped a request from %s:%d: %s", *nas, e)
            return
        sent = radius.encode(upstream)
        flight = InFlight(nas, request, upstream, sent)
        self.in_flight[upstream.ident], self.by_origin[origin] = flight, upstream.ident
        flight.expiry = asyncio.get_running_loop().call_later(self.relay.settings.timeout, self.forget, upstream.ident)
        self.aaa.send(sent)

    def free_ident(self) -> int:
        for _ in range(256):
            ident, self.next_ident = self.next_ident, (self.next_ident + 1) % 256
            if ident not in self.in_flight:
                return ident
        raise radius.Malformed("256 requests in flight already; the NAS will retransmit")

    def from_aaa(self, data: bytes, _: Address) -> None:
        try:
            answer = radius.decode(data)
        except radius.Malformed as e:
            log.warning("dropped a malformed answer from AAA: %s", e)
            return
        flight = self.in_flight.get(answer.ident)
        if flight is None:
            return  # late, or a second answer to a request answered already
        if answer.code not in self.answer_codes or not radius.reply_valid(answer, flight.upstream, self.relay.server_secret):
            log.warning("dropped an answer (code %d) whose authenticators are wrong or unexpected", answer.code)
            return
        self.forget(answer.ident)
        local = radius.encode(radius.reply(answer.code, flight.request, answer.without(radius.MESSAGE_AUTHENTICATOR),
                                           self.relay.local_secret))
        origin = (flight.nas, flight.request.ident, flight.request.authenticator)
        self.answered[origin] = local
        asyncio.get_running_loop().call_later(self.relay.settings.timeout, self.answered.pop, origin, None)
        self.nas.send(local, flight.nas)

    def forget(self, ident: int) -> None:
        flight = self.in_flight.pop(ident)
        if flight.expiry is not None:
            flight.expiry.cancel()
        del self.by_origin[(flight.nas, flight.request.ident, flight.request.authenticator)]


class Relay:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server_secret = read_secret(settings.server_secret_file).encode()
        self.local_secret = read_secret(settings.local_secret_file).encode()
        self.access = Leg(self, radius.ACCESS_REQUEST, frozenset({radius.ACCESS_ACCEPT, radius.ACCESS_REJECT}))
        self.accounting = Leg(self, radius.ACCOUNTING_REQUEST, frozenset({radius.ACCOUNTING_RESPONSE}))

    def upstream(self, code: int, request: radius.Packet, ident: int) -> radius.Packet:
        """The request as AAA gets it, or Malformed for one the relay does not pass."""
        if request.code != code:
            raise radius.Malformed(f"code {request.code} on the port for code {code}")
        if code == radius.ACCOUNTING_REQUEST:
            if not radius.accounting_request_valid(request, self.local_secret):
                raise radius.Malformed("an Accounting-Request with a wrong authenticator")
            return radius.accounting_request(ident, request.attributes, self.server_secret)
        if request.values(radius.MESSAGE_AUTHENTICATOR) and not radius.message_authenticator_valid(
                request, self.local_secret):
            raise radius.Malformed("an Access-Request with a wrong Message-Authenticator")
        passwords = request.values(radius.USER_PASSWORD)
        if len(passwords) != 1 or request.values(radius.CHAP_PASSWORD) or request.values(radius.EAP_MESSAGE):
            raise radius.Malformed("an Access-Request that is not PAP with one User-Password")
        password = radius.reveal_password(passwords[0], self.local_secret, request.authenticator)
        attributes = request.without(radius.USER_PASSWORD, radius.MESSAGE_AUTHENTICATOR)
        return radius.access_request(ident, attributes, password, self.server_secret)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        legs = ((self.access, s.listen_auth_port, s.auth_port), (self.accounting, s.listen_acct_port, s.acct_port))
        transports = []
        try:
            # AAA's sockets first: a request may come as soon as the NAS's are open.
            for leg, _, server_port in legs:
                aaa, _ = await loop.create_datagram_endpoint(lambda leg=leg: leg.aaa,
                                                             remote_addr=(s.server, server_port))
                transports.append(aaa)
            for leg, listen_port, _ in legs:
                nas, _ = await loop.create_datagram_endpoint(lambda leg=leg: leg.nas,
                                                             local_addr=(s.listen_address, listen_port))
                transports.append(nas)
            Notifier().notify(ready=1, status=f"relaying {s.listen_address} to {s.server}")
            log.info("relaying %s:%d/%d to %s:%d/%d", s.listen_address, s.listen_auth_port, s.listen_acct_port,
                     s.server, s.auth_port, s.acct_port)
            await asyncio.Event().wait()
        finally:
            for transport in transports:
                transport.close()
