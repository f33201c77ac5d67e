"""The device agent's registration: one attempt per registration server,
the backup started when the primary is slow, the first to finish wins.

An attempt connects (TLS 1.3, the device's certificate, the registration
servers' CA), sends its reg, stores the grant (rotation.Kept, then the
cache, synced) before its ack goes, and ends with the done. Both attempts
share the device's Keeper, which takes one grant or done at a time, so a
late answer on the slower connection cannot undo the faster one's
(rotation.Kept refuses it).

Hedging (RFC 8305's staggered attempts): the primary starts; the backup
starts when the primary has not finished its TLS handshake within STAGGER
seconds, or at once when the primary fails first. The first attempt to get
its done wins and the other is cancelled; when both fail, the last error
is raised.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from ..tls import client_context
from . import protocol
from .cache import Cache, CacheError, save
from .protocol import Ack, Done, Err, Grant, Reg
from .rotation import Kept, Refused

log = logging.getLogger("dmzkit-device-agent")

# Seconds the primary has to finish its TLS handshake before the backup starts.
STAGGER = 0.3
CONNECT_SECONDS = 2.0
HANDSHAKE_SECONDS = 3.0
EXCHANGE_SECONDS = 3.0


class RegistrationFailed(Exception):
    """No registration server registered the device this time."""


class ServerRefused(RegistrationFailed):
    """A server answered, with err: it is up."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def registration_context(ca_chain: str, crl: str, certificate: str, private_key: str) -> ssl.SSLContext:
    """The collection's client context (servers of `ca_chain`, not on
    `crl`), with the device's certificate, TLS 1.3 only."""
    tls = client_context(ca_chain, certificate, private_key, crl=crl)
    tls.minimum_version = ssl.TLSVersion.TLSv1_3
    tls.set_alpn_protocols([protocol.ALPN])
    return tls


class Keeper:
    """The device's passwords and cache: one grant or done at a time, each
    saved (synced) before the device acts on it."""

    def __init__(self, cache: Cache, path: str, key: bytes) -> None:
        self.cache = cache
        self.path = path
        self.key = key
        self.lock = asyncio.Lock()

    async def _keep(self, kept: Kept, **changes) -> None:
        cache = replace(self.cache, kept=kept, saved_at=int(time.time() * 1000), **changes)
        await asyncio.to_thread(save, self.path, cache, self.key)
        self.cache = cache

    async def granted(self, grant: Grant) -> Ack:
        """Keep the grant's password (and its servers) and say so."""
        async with self.lock:
            kept = self.cache.kept.grant(grant.epoch, grant.password, grant.committed)
            await self._keep(kept, account=grant.account, servers=grant.servers)
        return Ack(epoch=grant.epoch, snonce=grant.snonce)

    async def committed(self, done: Done) -> None:
        async with self.lock:
            await self._keep(self.cache.kept.done(done.epoch), cache_logins=())


async def attempt(endpoint: Endpoint, tls: ssl.SSLContext, keeper: Keeper, handshaken: asyncio.Event) -> Grant:
    """One registration with one server; the grant once its done came."""
    try:
        async with asyncio.timeout(CONNECT_SECONDS + HANDSHAKE_SECONDS):
            reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port, ssl=tls,
                                                           ssl_handshake_timeout=HANDSHAKE_SECONDS)
    except (OSError, TimeoutError, ssl.SSLError) as e:
        raise RegistrationFailed(f"{endpoint}: no connection ({type(e).__name__}: {e})") from None
    handshaken.set()
    try:
        cache = keeper.cache
        writer.write(protocol.encode(Reg(serial=cache.serial, nonce=secrets.token_hex(16), ts=int(time.time() * 1000),
                                         epoch=cache.kept.stored, cache_logins=cache.cache_logins)))
        grant = await protocol.read(reader, EXCHANGE_SECONDS, Grant, Err)
        if isinstance(grant, Err):
            raise ServerRefused(f"{endpoint}: refused ({grant.code}, again in {grant.retry_after} s)")
        try:
            ack = await keeper.granted(grant)
        except (Refused, CacheError) as e:
            # No ack: the server keeps the grant pending, the account its password.
            raise RegistrationFailed(f"{endpoint}: a grant this device cannot keep ({e})") from None
        writer.write(protocol.encode(ack))
        done = await protocol.read(reader, EXCHANGE_SECONDS, Done, Err)
        if isinstance(done, Err) or done.epoch != grant.epoch:
            raise RegistrationFailed(f"{endpoint}: the grant was not committed")
        try:
            await keeper.committed(done)
        except (Refused, CacheError) as e:
            raise RegistrationFailed(f"{endpoint}: a done this device cannot take ({e})") from None
        return grant
    except (protocol.Malformed, TimeoutError, OSError) as e:
        raise RegistrationFailed(f"{endpoint}: {type(e).__name__}: {e}") from None
    finally:
        writer.close()


Attempt = Callable[[Endpoint, asyncio.Event], Awaitable[Grant]]


async def hedged(endpoints: Sequence[Endpoint], run: Attempt, stagger: float = STAGGER) -> Grant:
    """The first grant of `run` over the endpoints in order: the next
    endpoint starts when the newest attempt has not finished its handshake
    within `stagger` seconds, or when an attempt fails."""
    loop = asyncio.get_running_loop()
    waiting = list(endpoints)
    running: set[asyncio.Task[Grant]] = set()
    failures: list[str] = []

    def start() -> tuple[asyncio.Event, float]:
        handshaken = asyncio.Event()
        running.add(asyncio.create_task(run(waiting.pop(0), handshaken)))
        return handshaken, loop.time() + stagger

    try:
        if not waiting:
            raise RegistrationFailed("no registration server")
        newest, due = start()
        while running:
            watcher = None
            timeout = None
            if waiting and not newest.is_set():
                watcher = asyncio.create_task(newest.wait())
                timeout = max(0.0, due - loop.time())
            done, _ = await asyncio.wait(running | ({watcher} if watcher else set()), timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if watcher is not None:
                watcher.cancel()
            failed = False
            for task in done - {watcher}:
                running.discard(task)
                try:
                    return task.result()
                except RegistrationFailed as e:
                    failures.append(str(e))
                    failed = True
            if waiting and (failed or not done):
                newest, due = start()
        raise RegistrationFailed("; ".join(failures))
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
