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
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..config import ConfigError, read_secret
from ..daemon import Notifier, service_main
from ..sealing import Sealer, load_key
from ..tls import client_context, common_name, peer_certificate, server_context, spki_sha256
from ..userdb import device_hash
from . import protocol
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
# the address seen is the longest first.
SERVERS = """
SELECT b.host, b.port, s.name AS site,
       (SELECT max(masklen(n)) FROM unnest(s.networks) AS n WHERE $2::inet <<= n) AS prefix
FROM device_servers ds
JOIN business_servers b ON b.id = ds.server_id
JOIN sites s ON s.id = b.site_id
WHERE ds.device_id = $1
ORDER BY prefix DESC NULLS LAST, b.host, b.port
LIMIT $3
"""
AUDIT = ("INSERT INTO audit_log (subject, event, outcome, source, detail) "
         "VALUES ($1, 'registration', $2, $3::inet, $4::jsonb)")


@dataclass(frozen=True)
class Device:
    id: int
    serial: str
    account: str


class Registrar:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, redis: Redis, seal_key: bytes) -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self.sealer = Sealer(seal_key)

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

    async def _step(self, device: Device, take: str, epoch: int) -> Step:
        """One step of the device's rotation (`take`: reg or ack), read and
        written back in one transaction, with the account's password when
        it commits one."""
        async with self.pool.acquire() as connection, connection.transaction():
            rotation = self._rotation(device, await connection.fetchrow(ROTATION, device.id))
            now = time.time()
            if take == "reg":
                step = rotation.reg(epoch, now, self.settings.commit_by, lambda: secrets.token_urlsafe(24))
            else:
                step = rotation.ack(epoch, now)
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
        row = await self.pool.fetchrow(DEVICE, spki_sha256(certificate.public_key()))
        if row is None or row["serial"] != common_name(certificate):
            return None
        return Device(row["id"], row["serial"], row["account"])

    async def _servers(self, device: Device, seen: str) -> tuple[Server, ...]:
        rows = await self.pool.fetch(SERVERS, device.id, seen, protocol.MAX_SERVERS)
        return tuple(Server(r["host"], r["port"], r["site"]) for r in rows)

    async def _fresh(self, reg: Reg) -> str | None:
        """Why a reg is not fresh (clock, replay), or None."""
        skew = self.settings.skew_seconds
        if abs(reg.ts / 1000 - time.time()) > skew:
            return "clock"
        # Kept for twice the skew: a reg within the window has its nonce here.
        key = f"dmzkit:registration:nonce:{reg.serial}:{reg.nonce}"
        if not await self.redis.set(key, 1, nx=True, ex=2 * skew):
            return "replay"
        return None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = writer.get_extra_info("peername")[0]
        certificate = peer_certificate(writer.transport)
        subject, outcome, detail = common_name(certificate) if certificate else None, "failure", {}
        try:
            async with asyncio.timeout(self.settings.session_seconds):
                subject, outcome, detail = await self._session(reader, writer, certificate, seen)
        except Malformed as e:
            detail = {"reason": "malformed", "detail": str(e)}
        except TimeoutError:
            detail = {"reason": "timeout"}
        except (ConnectionError, ssl.SSLError) as e:
            detail = {"reason": "connection", "detail": type(e).__name__}
        except (asyncpg.PostgresError, RedisError, OSError) as e:
            # The user database or Redis is away: the device tries again, or the backup.
            log.error("registration by %s failed: %s: %s", subject, type(e).__name__, e)
            detail = {"reason": "store", "detail": type(e).__name__}
        finally:
            writer.close()
        await self._audit(subject, outcome, seen, detail)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, certificate,
                       seen: str) -> tuple[str | None, str, dict]:
        frame = self.settings.frame_seconds
        device = await self._device(certificate)
        reg = await protocol.read(reader, frame, Reg)
        if device is None:
            await self._send(writer, Err("unknown_device", 0))
            return reg.serial, "failure", {"reason": "unknown device"}
        detail: dict = {"epoch": reg.epoch}
        if reg.ip_hint is not None and reg.ip_hint != seen:
            detail["ip_hint"] = reg.ip_hint
        if reg.cache_logins:
            detail["cache_logins"] = list(reg.cache_logins)
        if reg.serial != device.serial:
            return device.serial, "failure", {**detail, "reason": "another serial", "claimed": reg.serial}
        stale = await self._fresh(reg)
        if stale is not None:
            await self._send(writer, Err(stale, 0))
            return device.serial, "failure", {**detail, "reason": stale}
        servers = await self._servers(device, seen)
        if not servers:
            await self._send(writer, Err("suspended", 0))
            return device.serial, "failure", {**detail, "reason": "no business server"}
        try:
            step = await self._step(device, "reg", reg.epoch)
        except Refused as e:
            await self._send(writer, Err("replay", 0))
            return device.serial, "failure", {**detail, "reason": "stale epoch", "detail": str(e)}
        assert step.grant is not None
        snonce = secrets.token_hex(16)
        detail.update(granted=step.grant.epoch, site=servers[0].site)
        await self._send(writer, Grant(nonce=reg.nonce, snonce=snonce, epoch=step.grant.epoch,
                                       committed=step.rotation.committed, account=device.account,
                                       password=step.grant.password, servers=servers,
                                       commit_by=self.settings.commit_by))
        ack = await protocol.read(reader, frame, Ack)
        if ack.snonce != snonce or ack.epoch != step.grant.epoch:
            return device.serial, "failure", {**detail, "reason": "ack of another grant"}
        try:
            await self._step(device, "ack", ack.epoch)
        except Refused as e:
            await self._send(writer, Err("replay", 0))
            return device.serial, "failure", {**detail, "reason": "late ack", "detail": str(e)}
        await self._send(writer, Done(epoch=ack.epoch))
        return device.serial, "success", {**detail, "committed": ack.epoch}

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, message: protocol.Message) -> None:
        writer.write(protocol.encode(message))
        await writer.drain()

    async def _audit(self, subject: str | None, outcome: str, seen: str, detail: dict) -> None:
        try:
            await self.pool.execute(AUDIT, subject, outcome, seen, json.dumps(detail, sort_keys=True))
        except (asyncpg.PostgresError, OSError) as e:
            log.error("audit record of a registration by %s not written: %s", subject, e)


def context(settings: Settings) -> ssl.SSLContext:
    """TLS 1.3 only, a device certificate of the CA required (its CRL checked)."""
    tls = server_context(settings.certificate, settings.private_key, settings.ca_chain, settings.crl,
                         ssl.CERT_REQUIRED)
    tls.minimum_version = ssl.TLSVersion.TLSv1_3
    tls.set_alpn_protocols([protocol.ALPN])
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
        pool = await asyncpg.create_pool(host=s.db_host, port=s.db_port, database=s.db_name, user=s.db_user,
                                         passfile=s.db_passfile, ssl=tls, min_size=1, max_size=8,
                                         server_settings={"application_name": "dmzkit-registration"})
        redis = Redis(unix_socket_path=s.store_socket, username=s.store_user, password=self.store_password)
        registrar = Registrar(s, pool, redis, self.seal_key)
        host, _, port = s.listen.rpartition(":")
        server = await asyncio.start_server(registrar.handle, host.strip("[]"), int(port), ssl=self.tls,
                                            ssl_handshake_timeout=s.frame_seconds)
        Notifier().notify(ready=1, status=f"registering on {s.listen}")
        try:
            async with server:
                await server.serve_forever()
        finally:
            await redis.close()
            await pool.close()


def main(argv: list[str] | None = None) -> int:
    return service_main("dmzkit-registration", __doc__, lambda path: Service(Settings.load(path)), argv)
