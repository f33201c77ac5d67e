"""The registration service's test lab (the `lab` fixture, conftest.py): a PKI (a device CA, a server, two
enrolled devices, a stranger with the first's serial, another CA's device),
the user database with sites, business servers and the devices' logins,
Redis, the service itself on a free loopback port, and a device's side of one
exchange with it."""
from __future__ import annotations

import asyncio
import json
import datetime as dt
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from redis.asyncio import Redis

import local_servers
from local_servers import as_postgres, superuser_rows
from testpki import NOW, make_ca, make_crl, make_leaf, pem, write_key

from dmzkit_remote_access.registration import protocol
from dmzkit_remote_access.registration.metrics import Metrics
from dmzkit_remote_access.registration.protocol import Ack, Done, Err, Grant, Malformed, Reg
from dmzkit_remote_access.registration.server import Registrar, context
from dmzkit_remote_access.registration.settings import Settings
from dmzkit_remote_access.tls import spki_sha256

SERIALS = ("DEV-S-0001", "DEV-S-0002")


@dataclass
class Lab:
    where: Path
    userdb: dict[str, str]
    redis_socket: Path
    settings: Settings

    def path(self, name: str) -> str:
        return str(self.where / name)


def sql(userdb: dict[str, str], statements: str) -> None:
    as_postgres(str(local_servers.POSTGRES_BIN / "psql"), "-h", userdb["host"], "-U", "postgres", "-d", "dmzkit",
                "-v", "ON_ERROR_STOP=1", "-q", sql=statements)


@contextmanager
def built(userdb: dict[str, str], where: Path, serials: tuple[str, ...] = SERIALS) -> Iterator[Lab]:
    """The lab in `where`, on the test user database: devices `serials`
    (the first is the one the odd certificates below copy)."""
    ca_key, ca = make_ca("Unit Device CA")
    (where / "ca.pem").write_bytes(pem(ca))
    (where / "crl.pem").write_bytes(pem(make_crl(ca_key, ca, NOW - dt.timedelta(hours=1), NOW + dt.timedelta(days=1))))
    key, cert = make_leaf(ca_key, ca, "localhost", server=True)
    write_key(where / "server.key", key)
    (where / "server.pem").write_bytes(pem(cert))
    spkis = []
    for serial in serials:
        key, cert = make_leaf(ca_key, ca, serial)
        write_key(where / f"{serial}.key", key)
        (where / f"{serial}.pem").write_bytes(pem(cert))
        spkis.append(spki_sha256(cert.public_key()))
    # The first device's key under another name.
    renamed = x509.CertificateBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "DEV-S-9999")])).issuer_name(ca.subject).public_key(
        serialization.load_pem_private_key((where / f"{serials[0]}.key").read_bytes(), None).public_key()).serial_number(
        x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(
        NOW + dt.timedelta(days=1)).add_extension(
        x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False).sign(ca_key, hashes.SHA256())
    (where / "renamed.key").write_bytes((where / f"{serials[0]}.key").read_bytes())
    (where / "renamed.pem").write_bytes(pem(renamed))
    # The first device's serial with another key, and from another CA.
    key, cert = make_leaf(ca_key, ca, serials[0])
    write_key(where / "stranger.key", key)
    (where / "stranger.pem").write_bytes(pem(cert))
    other_key, other = make_ca("Another CA")
    key, cert = make_leaf(other_key, other, serials[0])
    write_key(where / "other-ca.key", key)
    (where / "other-ca.pem").write_bytes(pem(cert))
    (where / "seal.key").write_text(secrets.token_hex(32))

    owner = "owner-of-unit-devices"
    statements = [f"INSERT INTO dmzkit.users (username) VALUES ('{owner}');",
                  "INSERT INTO dmzkit.sites (name, networks) VALUES ('hq', '{127.0.0.1/32}'),"
                  " ('branch', '{127.0.0.0/8, 127.0.0.2/32}');",
                  "INSERT INTO dmzkit.business_servers (site_id, host, port) SELECT id, 'biz-' || name || '.test', 443"
                  " FROM dmzkit.sites WHERE name IN ('hq', 'branch');",
                  "CREATE ROLE registration_server_unit LOGIN IN ROLE dmzkit_registration;"]
    for serial, spki in zip(serials, spkis):
        account = serial.lower()
        statements.append(f"""
            INSERT INTO dmzkit.users (username) VALUES ('{account}');
            INSERT INTO dmzkit.devices (user_id, name, spki_sha256, serial)
                SELECT id, '{serial}', '{spki}', '{serial}' FROM dmzkit.users WHERE username = '{owner}';
            INSERT INTO dmzkit.device_logins (device_id, account_id)
                SELECT d.id, u.id FROM dmzkit.devices d, dmzkit.users u
                WHERE d.serial = '{serial}' AND u.username = '{account}';
            INSERT INTO dmzkit.device_servers SELECT l.device_id, b.id FROM dmzkit.device_logins l
                JOIN dmzkit.devices d ON d.id = l.device_id, dmzkit.business_servers b
                WHERE d.serial = '{serial}' AND b.host LIKE 'biz-%.test';
        """)
    sql(userdb, "".join(statements))
    with local_servers.redis_server(where) as redis_socket:
        settings = Settings.from_dict({
            "listen": "127.0.0.1:0", "certificate": str(where / "server.pem"),
            "private_key": str(where / "server.key"), "ca_chain": str(where / "ca.pem"), "crl": str(where / "crl.pem"),
            "seal_key_file": str(where / "seal.key"), "store_socket": str(redis_socket), "store_user": "default",
            "store_password_file": str(where / "seal.key"), "db_host": userdb["host"], "db_name": "dmzkit",
            "db_user": "registration_server_unit", "db_passfile": "/dev/null", "commit_by": 60,
            "frame_seconds": 1.0, "session_seconds": 3.0, "rate_per_minute": 100_000,
        })
        yield Lab(where, userdb, redis_socket, settings)


@asynccontextmanager
async def serving(lab: Lab, settings: Settings | None = None, metrics: Metrics | None = None) -> AsyncIterator[int]:
    """The service on a free loopback port (with the lab's settings, or these)."""
    pool = await asyncpg.create_pool(host=lab.userdb["host"], database="dmzkit", user="registration_server_unit",
                                     min_size=1, max_size=4)
    redis = Redis(unix_socket_path=str(lab.redis_socket))
    registrar = Registrar(settings or lab.settings, context(lab.settings), pool, redis,
                          bytes.fromhex((lab.where / "seal.key").read_text()), metrics)
    server = await asyncio.start_server(registrar.handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
        await redis.close()
        await pool.close()


def run(lab: Lab, body, settings: Settings | None = None, metrics: Metrics | None = None):
    """body(port) with the service serving on that port."""
    async def main():
        async with serving(lab, settings, metrics) as port:
            return await body(port)
    return asyncio.run(main())


def client_tls(lab: Lab, name: str, minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
               maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED) -> ssl.SSLContext:
    tls = ssl.create_default_context(cafile=lab.path("ca.pem"))
    tls.minimum_version, tls.maximum_version = minimum, maximum
    tls.load_cert_chain(lab.path(f"{name}.pem"), lab.path(f"{name}.key"))
    tls.set_alpn_protocols([protocol.ALPN])
    return tls


def reg(serial: str = SERIALS[0], epoch: int = 0, **changes) -> Reg:
    fields = {"serial": serial, "nonce": secrets.token_hex(16), "ts": int(time.time() * 1000), "epoch": epoch,
              "cache_logins": ()}
    return Reg(**{**fields, **changes})


async def exchange(port: int, tls: ssl.SSLContext, first: bytes, *, ack: bool = True, source: str = "127.0.0.1"
                   ) -> list[protocol.Message]:
    """A device's side: `first` (a reg's frame, or anything), then an ack
    of the grant if asked; the server's messages until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname="localhost",
                                                   local_addr=(source, 0))
    answers: list[protocol.Message] = []
    try:
        writer.write(first)
        while True:
            try:
                message = await protocol.read(reader, 2, Grant, Err, Done)
            except Malformed:
                return answers  # closed
            answers.append(message)
            if isinstance(message, Grant) and ack:
                writer.write(protocol.encode(Ack(epoch=message.epoch, snonce=message.snonce)))
            elif isinstance(message, Grant):
                return answers
    finally:
        writer.close()


def state(lab: Lab, serial: str) -> tuple[int, int, int | None]:
    [row] = superuser_rows(lab.userdb, "SELECT l.committed, l.issued, l.pending_epoch FROM dmzkit.device_logins l"
                                       " JOIN dmzkit.devices d ON d.id = l.device_id WHERE d.serial = $1", serial)
    return row  # type: ignore[return-value]


def last_record(lab: Lab, subject: str | None = None) -> tuple[str, dict]:
    """The newest registration record (of `subject`)."""
    [(subject, detail)] = superuser_rows(lab.userdb, "SELECT subject, detail FROM dmzkit.audit_log"
                                                     " WHERE event = 'registration' AND subject = coalesce($1, subject)"
                                                     " ORDER BY id DESC LIMIT 1", subject)
    return subject, json.loads(detail)
