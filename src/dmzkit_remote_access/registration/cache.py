"""The device's cache: what the agent keeps between registrations (the
passwords of rotation.Kept, the business servers of the last grant, and
the logins it made from the cache that it has not reported yet), for a
login when no registration server answers.

Sealed with AES-256-GCM (sealing.Sealer) under a key derived from the
device's private key, with the serial bound in, and written whole and
synced (files.write_atomically): an edited or truncated cache, or one
copied from another device, does not open. The epoch never goes back: a
cache older than the one on disk is not written, and online the server
refuses a cache older than the account's password (rotation.Rotation.reg).
On a device without a TPM, whoever can write the cache's directory can put
an older copy back: only the server notices then.
"""
from __future__ import annotations

import fcntl
import json
import os
import stat
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..files import write_atomically
from ..sealing import Sealer
from . import protocol
from .rotation import Kept

INFO = b"dmzkit-remote-access registration cache v1"
MODE = 0o600
# Far more than a cache holds (a few hundred bytes).
MAX_SIZE = 64 * 1024


class CacheError(Exception):
    """No cache that can be used: missing, garbled, another device's, or
    older than the one kept."""


def cache_key(private_key_pem: bytes) -> bytes:
    """The cache's key, derived from the device's private key (which never
    leaves the device)."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO).derive(der)


@dataclass(frozen=True)
class Cache:
    serial: str
    # None before the first grant.
    account: str | None
    kept: Kept
    servers: tuple[protocol.Server, ...]
    cache_logins: tuple[int, ...] = ()
    # When a grant or a done was last kept (Unix milliseconds): how old the
    # passwords are, for a login from the cache.
    saved_at: int = 0

    def __repr__(self) -> str:
        return f"Cache(serial={self.serial!r}, account={self.account!r}, kept={self.kept!r})"

    def _json(self) -> bytes:
        return json.dumps({
            "serial": self.serial, "account": self.account,
            "current": list(self.kept.current),
            "candidate": list(self.kept.candidate) if self.kept.candidate else None,
            "servers": [server.to_json() for server in self.servers],
            "cache_logins": list(self.cache_logins[-protocol.MAX_REPORTED:]), "saved_at": self.saved_at,
        }, sort_keys=True).encode()

    @classmethod
    def _from_json(cls, data: bytes) -> Cache:
        value = json.loads(data)
        current = value["current"]
        candidate = value["candidate"]
        account = value["account"]
        return cls(serial=protocol.serial(value["serial"]),
                   account=None if account is None else protocol.account(account),
                   kept=Kept(current=(protocol.epoch(current[0]),
                                      None if current[1] is None else protocol.password(current[1])),
                             candidate=None if candidate is None else (protocol.epoch(candidate[0]),
                                                                       protocol.password(candidate[1]))),
                   servers=_servers(value["servers"]),
                   cache_logins=protocol.reports(value["cache_logins"]),
                   saved_at=protocol.timestamp(value["saved_at"]))


# The last grant's servers; none before the first grant.
_servers = protocol.list_of(protocol.Server.from_json, 0, protocol.MAX_SERVERS)


def _purpose(serial: str) -> bytes:
    return INFO + b" " + serial.encode()


def read_regular_file(path: str) -> bytes:
    """The file's bytes, if it is a regular file (not a link, and not a
    FIFO, which would block the agent)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise CacheError(f"no cache at {path}") from None
    except OSError as e:
        raise CacheError(f"cannot open {path}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CacheError(f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        try:
            return f.read(MAX_SIZE + 1)
        except OSError as e:
            raise CacheError(f"cannot read {path}: {e.strerror}") from None


def load(path: str, serial: str, key: bytes) -> Cache:
    """The cache of device `serial` at path, or CacheError."""
    sealed = read_regular_file(path)
    if len(sealed) > MAX_SIZE:
        raise CacheError(f"{path} is larger than a cache")
    data = Sealer(key).unseal_bytes(sealed, _purpose(serial))
    if data is None:
        raise CacheError(f"{path} is not this device's cache, or was changed")
    try:
        cache = Cache._from_json(data)
    except (ValueError, KeyError, TypeError, IndexError, protocol.Malformed) as e:
        # Sealed by this key and still not a cache: written by another version.
        raise CacheError(f"{path} holds no cache this agent reads ({type(e).__name__})") from None
    if cache.serial != serial:
        raise CacheError(f"{path} is the cache of another device")
    return cache


def save(path: str, cache: Cache, key: bytes) -> None:
    """Write the cache whole and synced, unless the one kept there is
    newer (its epoch higher). Saves queue on a lock beside the cache, so
    two at once cannot put the older last."""
    fd = os.open(path + ".lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            kept = load(path, cache.serial, key)
        except CacheError:
            kept = None
        if kept is not None and kept.kept.stored > cache.kept.stored:
            raise CacheError(f"{path} holds epoch {kept.kept.stored}; epoch {cache.kept.stored} is older")
        write_atomically(path, Sealer(key).seal_bytes(cache._json(), _purpose(cache.serial)), MODE, sync=True)
    finally:
        os.close(fd)
