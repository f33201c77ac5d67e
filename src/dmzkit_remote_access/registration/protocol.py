"""RegProto/1: what a device and a registration server say to each other,
inside TLS 1.3 with a certificate on each side (docs/device-autologin.md).

    device                              registration server
      Reg    serial, nonce, ts, epoch ──▶
                                      ◀── Grant  nonce, snonce, pending epoch,
                                                 committed epoch, account,
                                                 password, servers
      Ack    pending epoch, snonce    ──▶  (the device has stored the grant)
                                      ◀── Done   epoch, now committed
                                      ◀── Err    instead of Grant or Done

Each message is one frame: two bytes of length (big-endian, 1 to
MAX_FRAME) and a JSON object in one encoding only (keys sorted, no spaces,
ASCII with \\u escapes), so a message has exactly one form and any other is
refused. A frame is malformed unless it is exactly one message of a type
the reader expects, with exactly that type's fields, each of its type and
range: the reader raises Malformed, and the connection ends there.

JSON, not CBOR: Debian 12's python3-cbor2 (5.4.6) crashes on deeply nested
input (CVE-2026-26209, fixed in 5.9.0), while CPython's json raises
RecursionError, which is caught here like any other bad input.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

VERSION = 1
# A frame's payload, at most; the largest message (a Grant with three
# servers of 253-character names) is 1,463 bytes.
MAX_FRAME = 4096
HEADER = 2
ALPN = "regproto/1"
# Largest integer a field takes: exact in every JSON implementation.
MAX_INT = 2**53 - 1
# Cache logins a Reg reports at most (the oldest are dropped first).
MAX_REPORTED = 16
MAX_SERVERS = 3
ERRORS = frozenset({"rate", "unknown_device", "suspended", "clock", "replay", "busy"})


class Malformed(ValueError):
    """A frame that is not a message the reader expects."""


def _pattern(expression: str) -> Callable[[Any], str]:
    compiled = re.compile(expression)

    def check(value: Any) -> str:
        if type(value) is not str or not compiled.fullmatch(value):
            raise Malformed(f"not {expression}")
        return value
    return check


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        # bool is an int in Python, and not one here.
        if type(value) is not int or not low <= value <= high:
            raise Malformed(f"not an integer from {low} to {high}")
        return value
    return check


def _address(value: Any) -> str:
    """An IP address, in the one form Python writes it (IPv6 with no
    scope: ipaddress would take any text after a "%")."""
    if type(value) is not str or not re.fullmatch(r"[0-9a-f:.]{2,45}", value):
        raise Malformed("not an address")
    try:
        written = str(ipaddress.ip_address(value))
    except ValueError:
        raise Malformed("not an address") from None
    if written != value:
        raise Malformed("an address not in its one form")
    return value


def list_of(item: Callable[[Any], Any], low: int, high: int) -> Callable[[Any], tuple[Any, ...]]:
    def check(value: Any) -> tuple[Any, ...]:
        if type(value) is not list or not low <= len(value) <= high:
            raise Malformed(f"not a list of {low} to {high}")
        return tuple(item(element) for element in value)
    return check


serial = _pattern(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
nonce = _pattern(r"[0-9a-f]{32}")
timestamp = _integer(0, MAX_INT)
epoch = _integer(0, MAX_INT)
account = _pattern(r"[a-z0-9][a-z0-9._-]{0,63}")
# A generated password: printable ASCII, no space.
password = _pattern(r"[!-~]{16,128}")
_hostname = _pattern(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                     r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


def host(value: Any) -> str:
    """A host name, or an IP address (in its one form: no name is all
    digits and dots)."""
    try:
        return _address(value)
    except Malformed:
        if type(value) is str and re.fullmatch(r"[0-9.]+", value):
            raise
        return _hostname(value)


port = _integer(1, 65535)
site = _pattern(r"[a-z0-9][a-z0-9_-]{0,62}")
seconds = _integer(1, 3600)
retry_after = _integer(0, 3600)


def error_code(value: Any) -> str:
    if type(value) is not str or value not in ERRORS:
        raise Malformed("not an error code")
    return value


class Fields:
    """A dataclass whose every field has a check, in CHECKS; those in
    OPTIONAL may be absent (None here), never null."""
    CHECKS: ClassVar[dict[str, Callable[[Any], Any]]]
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = [v.to_json() if isinstance(v, Fields) else v for v in value]
            out[field.name] = value
        return out

    @classmethod
    def from_json(cls, value: Any) -> Any:
        if type(value) is not dict:
            raise Malformed(f"{cls.__name__} is not an object")
        keys = set(value)
        names = set(cls.CHECKS)
        if not keys <= names or not names - cls.OPTIONAL <= keys:
            raise Malformed(f"{cls.__name__} has other fields")
        return cls(**{name: cls.CHECKS[name](value[name]) for name in keys})

    def check(self) -> None:
        """Refuse to send what the peer would refuse to read."""
        self.from_json(json.loads(json.dumps(self.to_json())))


@dataclass(frozen=True)
class Server(Fields):
    """A business server: where the device logs in with its grant."""
    host: str
    port: int
    site: str
    CHECKS = {"host": host, "port": port, "site": site}


servers = list_of(Server.from_json, 1, MAX_SERVERS)
# The cache logins a reg reports.
reports = list_of(timestamp, 0, MAX_REPORTED)


class Message(Fields):
    TYPE: ClassVar[str]


@dataclass(frozen=True)
class Reg(Message):
    """The device: who it is (the same serial as its certificate's), a
    fresh nonce and its clock, the last epoch it stored, the address it
    believes it has (logged, never used), and when it logged in from its
    cache since it last registered."""
    serial: str
    nonce: str
    ts: int
    epoch: int
    cache_logins: tuple[int, ...]
    ip_hint: str | None = None
    TYPE = "reg"
    CHECKS = {"serial": serial, "nonce": nonce, "ts": timestamp, "epoch": epoch,
              "cache_logins": reports, "ip_hint": _address}
    OPTIONAL = frozenset({"ip_hint"})


@dataclass(frozen=True)
class Grant(Message):
    """The server: the Reg's nonce and one of its own, the pending epoch,
    the business account and its new password, and the servers to log in
    to (the nearest first); the password becomes the account's when the
    device acknowledges it within commit_by seconds. Until then the account
    keeps the password of epoch `committed`, which the device keeps too."""
    nonce: str
    snonce: str
    epoch: int
    committed: int
    account: str
    password: str
    servers: tuple[Server, ...]
    commit_by: int
    TYPE = "grant"
    CHECKS = {"nonce": nonce, "snonce": nonce, "epoch": epoch, "committed": epoch, "account": account,
              "password": password, "servers": servers, "commit_by": seconds}

    def __repr__(self) -> str:
        # A grant is logged by its epoch, never with its password.
        return (f"Grant(epoch={self.epoch}, committed={self.committed}, account={self.account!r},"
                f" servers={self.servers!r})")


@dataclass(frozen=True)
class Ack(Message):
    """The device has stored the grant of this epoch (synced)."""
    epoch: int
    snonce: str
    TYPE = "ack"
    CHECKS = {"epoch": epoch, "snonce": nonce}


@dataclass(frozen=True)
class Done(Message):
    """The grant of this epoch is committed: the previous password is the
    old one now."""
    epoch: int
    TYPE = "done"
    CHECKS = {"epoch": epoch}


@dataclass(frozen=True)
class Err(Message):
    """Why the server does not grant, and when to ask again; sent only to a
    device whose certificate was accepted."""
    code: str
    retry_after: int
    TYPE = "err"
    CHECKS = {"code": error_code, "retry_after": retry_after}


MESSAGES: dict[str, type[Message]] = {m.TYPE: m for m in (Reg, Grant, Ack, Done, Err)}
M = TypeVar("M", bound=Message)


def _encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise Malformed("a key twice")
    return value


def _no_constant(name: str) -> Any:
    raise Malformed(f"{name} is not JSON")


def _no_float(text: str) -> Any:
    raise Malformed("a number with a fraction or an exponent")


def _payload(message: Message) -> bytes:
    """The message's one encoding."""
    return _encode({"t": message.TYPE, "v": VERSION, **message.to_json()})


def _length(header: bytes) -> int:
    """A frame's length from its header, or Malformed."""
    length = int.from_bytes(header, "big")
    if not 0 < length <= MAX_FRAME:
        raise Malformed(f"a frame of {length} bytes")
    return length


def encode(message: Message) -> bytes:
    """The message's frame: its length, then its one encoding."""
    message.check()
    payload = _payload(message)
    return len(payload).to_bytes(HEADER, "big") + payload


def decode(payload: bytes, *expect: type[M]) -> M:
    """The message in a frame's payload, of one of the types expected."""
    if len(payload) > MAX_FRAME:
        raise Malformed(f"a payload of {len(payload)} bytes")
    try:
        value = json.loads(payload.decode("ascii"), object_pairs_hook=_no_duplicates,
                           parse_constant=_no_constant, parse_float=_no_float)
    except Malformed:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        # ValueError holds JSONDecodeError and an integer of too many digits.
        raise Malformed(f"not JSON ({type(e).__name__})") from None
    if type(value) is not dict:
        raise Malformed("not an object")
    kind = MESSAGES.get(value.pop("t", None)) if type(value.get("t")) is str else None
    if kind is None or kind not in expect:
        raise Malformed("not a message expected here")
    version = value.pop("v", None)
    if type(version) is not int or version != VERSION:
        raise Malformed("another version")
    message: M = kind.from_json(value)  # type: ignore[assignment]
    if _payload(message) != payload:
        raise Malformed("not in its one encoding")
    return message


def split(data: bytes) -> tuple[bytes, bytes] | None:
    """The first frame's payload in data and what follows it; None when
    data does not hold the whole frame yet."""
    if len(data) < HEADER:
        return None
    length = _length(data[:HEADER])
    if len(data) < HEADER + length:
        return None
    return data[HEADER:HEADER + length], data[HEADER + length:]


async def read(reader: asyncio.StreamReader, timeout: float, *expect: type[M]) -> M:
    """The next frame's message, read within timeout seconds (TimeoutError
    otherwise). A frame the connection ends in the middle of, whether the
    peer closed it or it failed (TLS or TCP), is malformed; nothing after
    a malformed frame is read."""
    async with asyncio.timeout(timeout):
        try:
            payload = await reader.readexactly(_length(await reader.readexactly(HEADER)))
        except asyncio.IncompleteReadError:
            raise Malformed("cut short") from None
        except (ConnectionError, ssl.SSLError) as e:
            raise Malformed(f"connection failed ({type(e).__name__})") from None
    return decode(payload, *expect)
