"""dmzkit-registration: the registration service of device auto-login.

    dmzkit-registration --config FILE [--check]

A device connects over TLS 1.3 with its certificate (the collection's CA,
its key the one recorded when it was enrolled) and registers (RegProto/1,
protocol.py): its reg, the server's grant (the device's business account,
a new password, the business servers nearest the address the server sees),
its ack, the server's done, which commits the password (rotation.py). One
asyncio task per connection, nothing started per device.

Refused before any answer, the connection just closed: a frame that is not
the message expected (Malformed), one late (TimeoutError), a reg naming
another serial. Answered with err, the connection then closed: a
certificate whose key no enrolled device has (unknown_device), a clock too
far from ours (clock), a nonce seen before or an epoch older than the
account's password (replay).
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import ssl
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .. import metrics_http
from ..config import ConfigError, read_secret
from ..daemon import Notifier, StartupError, service_main
from ..sealing import Sealer, load_key
from ..tls import client_context, common_name, peer_certificate, server_context, spki_sha256
from ..userdb import QuietConnection, device_hash
from . import protocol
from .metrics import Metrics
from .protocol import Ack, Done, Err, Grant, Malformed, Reg, Server
from .rotation import Pending, Refused, Rotation, Step
from .settings import Settings

log = logging.getLogger("dmzkit-registration")

# The device a certificate's key was enrolled with, its account, and its rotation.
DEVICE = """
SELECT d.id, d.serial, u.username AS account,
       l.committed, l.issued, l.pending_epoch, l.pending_password, l.pending_expires
FROM devices d
JOIN device_logins l ON l.device_id = d.id
JOIN users u ON u.id = l.account_id
WHERE d.spki_sha256 = $1 AND d.revoked_at IS NULL
"""
ROTATION = """
SELECT committed, issued, pending_epoch, pending_password, pending_expires
FROM device_logins WHERE device_id = $1 FOR UPDATE
"""
WRITE_ROTATION = """
UPDATE device_logins SET committed = $2, issued = $3, pending_epoch = $4, pending_password = $5, pending_expires = $6
WHERE device_id = $1
"""
# The servers the device may use, those of the site whose network holding
# the address seen is the longest first (then, among those, the least
# loaded: Registrar._servers).
SERVERS = """
SELECT b.host, b.port, s.name AS site,
       (SELECT max(masklen(n)) FROM unnest(s.networks) AS n WHERE $2::inet <<= n) AS prefix
FROM device_servers ds
JOIN business_servers b ON b.id = ds.server_id
JOIN sites s ON s.id = b.site_id
WHERE ds.device_id = $1
ORDER BY prefix DESC NULLS LAST, b.host, b.port
"""
AUDIT = ("INSERT INTO audit_log (subject, event, outcome, source, detail) "
         "VALUES ($1, 'registration', $2, $3::inet, $4::jsonb)")


# TLS handshakes under way at once, in all and from one address: a
# connection beyond is closed before any TLS, so that a flood of idle ones
# holds a bounded number of sockets (the unit's LimitNOFILE is above).
MAX_HANDSHAKES = 256
MAX_HANDSHAKES_PER_SOURCE = 8
# Registrations past TLS under way at once with one certificate's key: one
# key cannot take the slots of max_registrations (a device revoked in the
# user database only still passes TLS).
MAX_REGISTRATIONS_PER_KEY = 2
# A device's registrations are counted in a window that opens with the first.
RATE_WINDOW = 60
# A business server's load: the devices sent to it first, counted in a
# window that opens with the first of them.
LOAD_WINDOW = 600


class StoreFailed(Exception):
    """The user database or Redis did not answer in time, or failed."""


@dataclass
class Record:
    """What a connection's audit record says, filled in as it goes: the
    subject is the certificate's name; what the device claimed is in the
    detail."""
    subject: str | None
    outcome: str = "failure"
    detail: dict = field(default_factory=dict)

    def fail(self, reason: str, why: str | None = None) -> None:
        self.detail["reason"] = reason
        if why is not None:
            self.detail["detail"] = why


@asynccontextmanager
async def store(seconds: float) -> AsyncIterator[None]:
    """A call to the user database or Redis, within `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise StoreFailed(f"no answer within {seconds} s") from None
    except (asyncpg.PostgresError, RedisError, OSError) as e:
        raise StoreFailed(f"{type(e).__name__}: {e}") from None


def _load_key(server: Server) -> str:
    return f"dmzkit:registration:load:{server.host}:{server.port}"


@dataclass(frozen=True)
class Device:
    id: int
    serial: str
    account: str


class Registrar:
    def __init__(self, settings: Settings, tls: ssl.SSLContext, pool: asyncpg.Pool, redis: Redis,
                 seal_key: bytes, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.tls = tls
        self.pool = pool
        self.redis = redis
        self.sealer = Sealer(seal_key)
        # TLS handshakes under way, by address.
        self.handshaking: Counter[str] = Counter()
        # Registrations past TLS under way (each holds the user database and
        # Redis for a moment): beyond max_registrations, `err busy`.
        self.registering = 0
        self.registering_by_key: Counter[str] = Counter()

    def _purpose(self, device: Device, epoch: int) -> bytes:
        return f"dmzkit registration pending {device.id} {epoch}".encode()

    def _rotation(self, device: Device, row: asyncpg.Record) -> Rotation:
        pending = None
        if row["pending_epoch"] is not None:
            password = self.sealer.unseal_bytes(row["pending_password"], self._purpose(device, row["pending_epoch"]))
            if password is not None:
                pending = Pending(row["pending_epoch"], password.decode(), row["pending_expires"].timestamp())
            else:
                # Sealed with another key (a new one): as if it had expired.
                log.warning("the pending grant of device %s does not open; a new one is made", device.serial)
        return Rotation(row["committed"], row["issued"], pending)

    async def _step(self, device: Device, move: Callable[[Rotation, float], Step]) -> Step:
        """One step of the device's rotation (`move`: its reg or its ack, at
        a time), read and written back in one transaction, with the
        account's password when it commits one."""
        async with store(self.settings.frame_seconds), self.pool.acquire() as connection, connection.transaction():
            step = move(self._rotation(device, await connection.fetchrow(ROTATION, device.id)), time.time())
            pending = step.rotation.pending
            await connection.execute(
                WRITE_ROTATION, device.id, step.rotation.committed, step.rotation.issued,
                pending and pending.epoch,
                pending and self.sealer.seal_bytes(pending.password.encode(), self._purpose(device, pending.epoch)),
                pending and datetime.fromtimestamp(pending.expires, timezone.utc))
            if step.committed is not None:
                await connection.execute("SELECT set_device_password($1, $2)", device.id,
                                         device_hash(step.committed.password))
        return step

    async def _device(self, certificate) -> Device | None:
        async with store(self.settings.frame_seconds):
            row = await self.pool.fetchrow(DEVICE, spki_sha256(certificate.public_key()))
        if row is None or row["serial"] != common_name(certificate):
            return None
        return Device(row["id"], row["serial"], row["account"])

    async def _servers(self, device: Device, seen: str) -> tuple[Server, ...]:
        async with store(self.settings.frame_seconds):
            rows = await self.pool.fetch(SERVERS, device.id, seen)
        servers: list[tuple[int | None, Server]] = []
        for row in rows:
            try:
                server = Server.from_json({"host": row["host"], "port": row["port"], "site": row["site"]})
            except Malformed as e:
                log.error("business server %s:%s (site %s) cannot be sent to a device (%s); skipped",
                          row["host"], row["port"], row["site"], e)
                continue
            servers.append((row["prefix"], server))
        first = servers[0][0] if servers else None
        nearest = [server for prefix, server in servers if prefix is not None and prefix == first]
        if len(nearest) > 1:
            async with store(self.settings.frame_seconds):
                loads = await self.redis.mget([_load_key(server) for server in nearest])
            # sorted() is stable: equal loads keep the database's order.
            order = sorted(range(len(nearest)), key=lambda i: int(loads[i] or 0))
            nearest = [nearest[i] for i in order]
        ordered = nearest + [server for _, server in servers[len(nearest):]]
        return tuple(ordered[:protocol.MAX_SERVERS])

    async def _count(self, key: str, window: int) -> tuple[int, int]:
        """One more in the window of `window` seconds that opened with the
        first: the count, and the seconds left. A pipeline, not MULTI (the
        service's Redis user needs no transactions): a key left without
        its expiry gets it at the next count (EXPIRE NX)."""
        async with store(self.settings.frame_seconds):
            async with self.redis.pipeline(transaction=False) as pipe:
                count, _, ttl = await pipe.incr(key).expire(key, window, nx=True).ttl(key).execute()
        return count, ttl

    async def _rate(self, serial: str) -> int:
        """0 when the device may register now, else the seconds until it
        may: at most rate_per_minute registrations in the minute that
        began with the first of them."""
        count, ttl = await self._count(f"dmzkit:registration:rate:{serial}", RATE_WINDOW)
        return 0 if count <= self.settings.rate_per_minute else max(1, ttl)

    async def _fresh(self, reg: Reg) -> str | None:
        """Why a reg is not fresh (clock, replay), or None."""
        skew = self.settings.skew_seconds
        if abs(reg.ts / 1000 - time.time()) > skew:
            return "clock"
        # Kept for twice the skew: a reg within the window has its nonce here.
        key = f"dmzkit:registration:nonce:{reg.serial}:{reg.nonce}"
        async with store(self.settings.frame_seconds):
            fresh = await self.redis.set(key, 1, nx=True, ex=2 * skew)
        if not fresh:
            return "replay"
        return None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: the TLS handshake within its caps, then one
        registration, then its audit record."""
        seen = writer.get_extra_info("peername")[0]
        over = ("total" if self.handshaking.total() >= MAX_HANDSHAKES
                else "per_source" if self.handshaking[seen] >= MAX_HANDSHAKES_PER_SOURCE else None)
        if over is not None:
            # Closed before any TLS: a flood holds at most the caps' sockets.
            self.metrics.refused.labels(over).inc()
            writer.transport.abort()
            return
        self.handshaking[seen] += 1
        self.metrics.handshaking.inc()
        try:
            await writer.start_tls(self.tls, ssl_handshake_timeout=self.settings.frame_seconds)
        except (OSError, TimeoutError, ssl.SSLError):
            self.metrics.handshake_failures.inc()
            writer.transport.abort()
            return
        finally:
            self.metrics.handshaking.dec()
            self.handshaking[seen] -= 1
            if not self.handshaking[seen]:
                del self.handshaking[seen]
        started = time.monotonic()
        certificate = peer_certificate(writer.transport)
        record = Record(common_name(certificate) if certificate else None)
        key = spki_sha256(certificate.public_key()) if certificate else ""
        self.registering += 1
        self.registering_by_key[key] += 1
        try:
            async with asyncio.timeout(self.settings.session_seconds):
                if (self.registering > self.settings.max_registrations
                        or self.registering_by_key[key] > MAX_REGISTRATIONS_PER_KEY):
                    await self._send(writer, Err("busy", 1))
                    record.fail("busy")
                else:
                    await self._session(reader, writer, certificate, seen, record)
        except Malformed as e:
            record.fail("malformed", str(e))
        except TimeoutError:
            record.fail("timeout")
        except (ConnectionError, ssl.SSLError) as e:
            record.fail("connection", type(e).__name__)
        except StoreFailed as e:
            # The user database or Redis is away or slow: the device tries again, or the backup.
            log.error("registration by %s failed: %s", record.subject, e)
            record.fail("store", str(e))
        finally:
            self.registering -= 1
            self.registering_by_key[key] -= 1
            if not self.registering_by_key[key]:
                del self.registering_by_key[key]
            writer.close()
        await self._audit(record, seen)
        self.metrics.connections.labels(record.outcome, record.detail.get("reason", "")).inc()
        self.metrics.seconds.observe(time.monotonic() - started)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, certificate,
                       seen: str, record: Record) -> None:
        frame = self.settings.frame_seconds
        device = await self._device(certificate)
        reg = await protocol.read(reader, frame, Reg)
        record.detail["epoch"] = reg.epoch
        if reg.ip_hint is not None and reg.ip_hint != seen:
            record.detail["ip_hint"] = reg.ip_hint
        if reg.cache_logins:
            record.detail["cache_logins"] = list(reg.cache_logins)
        if reg.serial != record.subject:
            record.detail["claimed"] = reg.serial
        if device is None:
            await self._send(writer, Err("unknown_device", 0))
            return record.fail("unknown device")
        if reg.serial != device.serial:
            return record.fail("another serial")
        wait = await self._rate(device.serial)
        if wait:
            await self._send(writer, Err("rate", wait))
            return record.fail("rate")
        stale = await self._fresh(reg)
        if stale is not None:
            await self._send(writer, Err(stale, 0))
            return record.fail(stale)
        servers = await self._servers(device, seen)
        if not servers:
            await self._send(writer, Err("suspended", 0))
            return record.fail("no business server")
        try:
            step = await self._step(device, lambda rotation, now: rotation.reg(
                reg.epoch, now, self.settings.commit_by, lambda: secrets.token_urlsafe(24)))
        except Refused as e:
            await self._send(writer, Err("replay", 0))
            return record.fail("stale epoch", str(e))
        assert step.grant is not None
        if step.committed is not None:
            record.detail["committed"] = step.committed.epoch
        snonce = secrets.token_hex(16)
        record.detail.update(granted=step.grant.epoch, site=servers[0].site, server=f"{servers[0].host}:{servers[0].port}")
        await self._count(_load_key(servers[0]), LOAD_WINDOW)
        await self._send(writer, Grant(nonce=reg.nonce, snonce=snonce, epoch=step.grant.epoch,
                                       committed=step.rotation.committed, account=device.account,
                                       password=step.grant.password, servers=servers,
                                       commit_by=self.settings.commit_by))
        ack = await protocol.read(reader, frame, Ack)
        if ack.snonce != snonce or ack.epoch != step.grant.epoch:
            return record.fail("ack of another grant")
        try:
            await self._step(device, lambda rotation, now: rotation.ack(ack.epoch, now))
        except Refused as e:
            await self._send(writer, Err("replay", 0))
            return record.fail("late ack", str(e))
        record.detail["committed"] = ack.epoch
        await self._send(writer, Done(epoch=ack.epoch))
        record.outcome = "success"

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, message: protocol.Message) -> None:
        writer.write(protocol.encode(message))
        await writer.drain()

    async def _audit(self, record: Record, seen: str) -> None:
        try:
            async with asyncio.timeout(self.settings.frame_seconds):
                await self.pool.execute(AUDIT, record.subject, record.outcome, seen,
                                        json.dumps(record.detail, sort_keys=True))
        except (asyncpg.PostgresError, OSError, TimeoutError) as e:
            self.metrics.audit_failures.inc()
            log.error("audit record of a registration by %s not written: %s", record.subject, e)


def context(settings: Settings) -> ssl.SSLContext:
    """TLS 1.3 only, a device certificate of the CA required (its CRL checked)."""
    tls = server_context(settings.certificate, settings.private_key, settings.ca_chain, settings.crl,
                         ssl.CERT_REQUIRED)
    tls.minimum_version = ssl.TLSVersion.TLSv1_3
    tls.set_alpn_protocols([protocol.ALPN])
    # Devices make a full handshake each time (the agent keeps no session):
    # tickets would only cost their making and a write.
    tls.num_tickets = 0
    return tls


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        try:
            self.tls = context(settings)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"cannot load the TLS files: {e}") from None
        self.seal_key = load_key(settings.seal_key_file)
        self.store_password = read_secret(settings.store_password_file)

    async def run(self) -> None:
        s = self.settings
        tls = None if s.db_host.startswith("/") else client_context(s.ca_chain, crl=s.crl)
        try:
            pool = await asyncpg.create_pool(host=s.db_host, port=s.db_port, database=s.db_name, user=s.db_user,
                                             passfile=s.db_passfile, ssl=tls, min_size=1, max_size=8,
                                             connection_class=QuietConnection,
                                             command_timeout=s.frame_seconds,
                                             server_settings={"application_name": "dmzkit-registration"})
        except (asyncpg.PostgresError, OSError, TimeoutError) as e:
            raise StartupError(f"cannot use the user database at {s.db_host}:{s.db_port} as {s.db_user}: {e}") from None
        redis = Redis(unix_socket_path=s.store_socket, username=s.store_user, password=self.store_password)
        metrics = Metrics()
        registrar = Registrar(s, self.tls, pool, redis, self.seal_key, metrics)
        host, _, port = s.listen.rpartition(":")
        server = await asyncio.start_server(registrar.handle, host.strip("[]"), int(port))
        metrics_host, _, metrics_port = s.metrics_listen.rpartition(":")
        scrapes = metrics_http.serve(metrics.registry, metrics_host, int(metrics_port))
        Notifier().notify(ready=1, status=f"registering on {s.listen}")
        try:
            async with server:
                await server.serve_forever()
        finally:
            scrapes.shutdown()
            scrapes.server_close()
            await redis.close()
            await pool.close()


def main(argv: list[str] | None = None) -> int:
    return service_main("dmzkit-registration", __doc__, lambda path: Service(Settings.load(path)), argv)


if __name__ == "__main__":
    sys.exit(main())
