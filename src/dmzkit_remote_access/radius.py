"""RADIUS packets as RFC 2865, 2866 and 3579 define them: decoding with every
length checked, User-Password hiding, and the authenticators that make a
packet authentic (Request, Response and Message-Authenticator).

Written here because the lab's hosts install from Debian, whose pyrad (2.1)
knows no Message-Authenticator, and a relay needs only this much: it never
interprets an attribute beyond User-Password and Message-Authenticator.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, replace

ACCESS_REQUEST, ACCESS_ACCEPT, ACCESS_REJECT = 1, 2, 3
ACCOUNTING_REQUEST, ACCOUNTING_RESPONSE = 4, 5
USER_NAME, USER_PASSWORD, CHAP_PASSWORD, NAS_IDENTIFIER = 1, 2, 3, 32
EAP_MESSAGE, MESSAGE_AUTHENTICATOR = 79, 80
HEADER, MAX_PACKET = 20, 4096
# RFC 2865 5.2: at most 128 octets, in 16-octet blocks.
MAX_PASSWORD = 128

Attribute = tuple[int, bytes]


class Malformed(ValueError):
    """A datagram that is not a well-formed RADIUS packet."""


@dataclass(frozen=True)
class Packet:
    code: int
    ident: int
    authenticator: bytes
    attributes: tuple[Attribute, ...]

    def values(self, kind: int) -> list[bytes]:
        return [value for k, value in self.attributes if k == kind]

    def without(self, *kinds: int) -> tuple[Attribute, ...]:
        return tuple((k, value) for k, value in self.attributes if k not in kinds)


def decode(data: bytes) -> Packet:
    if len(data) < HEADER:
        raise Malformed(f"{len(data)} octets, shorter than a header")
    code, ident, length = struct.unpack_from("!BBH", data)
    # RFC 2865 3: octets past Length are padding; fewer than Length, a bad packet.
    if not HEADER <= length <= MAX_PACKET or length > len(data):
        raise Malformed(f"Length {length} with {len(data)} octets received")
    attributes, at = [], HEADER
    while at < length:
        if at + 2 > length or data[at + 1] < 2 or at + data[at + 1] > length:
            raise Malformed(f"an attribute at octet {at} runs past the packet")
        attributes.append((data[at], bytes(data[at + 2:at + data[at + 1]])))
        at += data[at + 1]
    return Packet(code, ident, bytes(data[4:HEADER]), tuple(attributes))


def encode(packet: Packet) -> bytes:
    body = b"".join(struct.pack("!BB", kind, len(value) + 2) + value for kind, value in packet.attributes)
    if any(len(value) > 253 for _, value in packet.attributes) or HEADER + len(body) > MAX_PACKET:
        raise Malformed("an attribute or the packet is too long")
    return struct.pack("!BBH", packet.code, packet.ident, HEADER + len(body)) + packet.authenticator + body


def hide_password(password: bytes, secret: bytes, authenticator: bytes) -> bytes:
    if len(password) > MAX_PASSWORD:
        raise Malformed("a password longer than 128 octets")
    padded = password + b"\0" * (-len(password) % 16 if password else 16)
    out: list[bytes] = []
    last = authenticator
    for i in range(0, len(padded), 16):
        pad = hashlib.md5(secret + last).digest()
        last = bytes(a ^ b for a, b in zip(padded[i:i + 16], pad))
        out.append(last)
    return b"".join(out)


def reveal_password(hidden: bytes, secret: bytes, authenticator: bytes) -> bytes:
    if not hidden or len(hidden) % 16 or len(hidden) > MAX_PASSWORD:
        raise Malformed(f"a User-Password of {len(hidden)} octets")
    out: list[bytes] = []
    last = authenticator
    for i in range(0, len(hidden), 16):
        pad = hashlib.md5(secret + last).digest()
        last = hidden[i:i + 16]
        out.append(bytes(a ^ b for a, b in zip(last, pad)))
    return b"".join(out).rstrip(b"\0")


def _message_authenticator(packet: Packet, secret: bytes, authenticator: bytes) -> bytes:
    """HMAC-MD5 over the packet with `authenticator` in its header and the
    Message-Authenticator's value zeroed (RFC 3579 3.2)."""
    zeroed = replace(packet, authenticator=authenticator, attributes=tuple(
        (k, bytes(16) if k == MESSAGE_AUTHENTICATOR else v) for k, v in packet.attributes))
    return hmac.new(secret, encode(zeroed), hashlib.md5).digest()


def _with_message_authenticator(packet: Packet, secret: bytes, authenticator: bytes) -> Packet:
    """The packet with one Message-Authenticator, first (BlastRADIUS advice)."""
    unsigned = replace(packet, attributes=((MESSAGE_AUTHENTICATOR, bytes(16)),)
                       + packet.without(MESSAGE_AUTHENTICATOR))
    mac = _message_authenticator(unsigned, secret, authenticator)
    return replace(unsigned, attributes=((MESSAGE_AUTHENTICATOR, mac),) + unsigned.attributes[1:])


def message_authenticator_valid(packet: Packet, secret: bytes, request_authenticator: bytes | None = None) -> bool:
    """Exactly one Message-Authenticator, and the right one. For a reply,
    `request_authenticator` is the request's (RFC 3579 3.2)."""
    macs = packet.values(MESSAGE_AUTHENTICATOR)
    if len(macs) != 1 or len(macs[0]) != 16:
        return False
    expected = _message_authenticator(packet, secret, request_authenticator or packet.authenticator)
    return hmac.compare_digest(macs[0], expected)


def access_request(ident: int, attributes: tuple[Attribute, ...], password: bytes, secret: bytes) -> Packet:
    """A signed Access-Request: a fresh random authenticator, the password
    hidden with it, a Message-Authenticator first."""
    authenticator = os.urandom(16)
    packet = Packet(ACCESS_REQUEST, ident, authenticator,
                    attributes + ((USER_PASSWORD, hide_password(password, secret, authenticator)),))
    return _with_message_authenticator(packet, secret, authenticator)


def _digest(packet: Packet, authenticator: bytes, secret: bytes) -> bytes:
    return hashlib.md5(encode(replace(packet, authenticator=authenticator)) + secret).digest()


def accounting_request(ident: int, attributes: tuple[Attribute, ...], secret: bytes) -> Packet:
    """RFC 2866 3: the Request Authenticator is MD5 over the packet with 16 zero octets and the secret."""
    packet = Packet(ACCOUNTING_REQUEST, ident, bytes(16), attributes)
    return replace(packet, authenticator=_digest(packet, bytes(16), secret))


def accounting_request_valid(packet: Packet, secret: bytes) -> bool:
    return hmac.compare_digest(packet.authenticator, _digest(packet, bytes(16), secret))


def reply(code: int, request: Packet, attributes: tuple[Attribute, ...], secret: bytes) -> Packet:
    """An answer to `request`: a Message-Authenticator first for Access
    answers, then the Response Authenticator over all of it (RFC 2865 3)."""
    packet = Packet(code, request.ident, request.authenticator, attributes)
    if code != ACCOUNTING_RESPONSE:
        packet = _with_message_authenticator(packet, secret, request.authenticator)
    return replace(packet, authenticator=_digest(packet, request.authenticator, secret))


def reply_valid(answer: Packet, request: Packet, secret: bytes) -> bool:
    """As a NAS must check an answer: its identifier, its Response
    Authenticator, and for an Access answer a valid Message-Authenticator."""
    if answer.ident != request.ident:
        return False
    if not hmac.compare_digest(answer.authenticator, _digest(answer, request.authenticator, secret)):
        return False
    return answer.code == ACCOUNTING_RESPONSE or message_authenticator_valid(answer, secret, request.authenticator)
