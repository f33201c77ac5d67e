"""The registration service against real PostgreSQL (the userdb migrations)
and Redis, over real TLS 1.3 with device certificates: a registration
grants the device's account a new password that the password check takes
once the device acknowledges it; the nearest servers come from the address
the server sees; replays, clocks off, other serials, other keys and other
CAs are refused; a bad frame ends the connection with no answer."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from redis.asyncio import Redis

import local_servers
from local_servers import as_postgres, superuser_rows
from testpki import NOW, make_ca, make_crl, make_leaf, pem, write_key

from dmzkit_remote_access.registration import protocol
from dmzkit_remote_access.registration.protocol import Ack, Done, Err, Grant, Malformed, Reg
from dmzkit_remote_access.registration.server import Registrar, context
from dmzkit_remote_access.registration.settings import Settings
from dmzkit_remote_access.tls import spki_sha256
from dmzkit_remote_access.userdb import Directory

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


@pytest.fixture(scope="module")
def lab(userdb: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    where = tmp_path_factory.mktemp("registration")
    ca_key, ca = make_ca("Unit Device CA")
    (where / "ca.pem").write_bytes(pem(ca))
    (where / "crl.pem").write_bytes(pem(make_crl(ca_key, ca, NOW - dt.timedelta(hours=1), NOW + dt.timedelta(days=1))))
    key, cert = make_leaf(ca_key, ca, "localhost", server=True)
    write_key(where / "server.key", key)
    (where / "server.pem").write_bytes(pem(cert))
    spkis = []
    for serial in SERIALS:
        key, cert = make_leaf(ca_key, ca, serial)
        write_key(where / f"{serial}.key", key)
        (where / f"{serial}.pem").write_bytes(pem(cert))
        spkis.append(spki_sha256(cert.public_key()))
    # The first device's key under another name.
    renamed = x509.CertificateBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "DEV-S-9999")])).issuer_name(ca.subject).public_key(
        serialization.load_pem_private_key((where / f"{SERIALS[0]}.key").read_bytes(), None).public_key()).serial_number(
        x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(
        NOW + dt.timedelta(days=1)).add_extension(
        x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False).sign(ca_key, hashes.SHA256())
    (where / "renamed.key").write_bytes((where / f"{SERIALS[0]}.key").read_bytes())
    (where / "renamed.pem").write_bytes(pem(renamed))
    # The first device's serial with another key, and from another CA.
    key, cert = make_leaf(ca_key, ca, SERIALS[0])
    write_key(where / "stranger.key", key)
    (where / "stranger.pem").write_bytes(pem(cert))
    other_key, other = make_ca("Another CA")
    key, cert = make_leaf(other_key, other, SERIALS[0])
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
    for serial, spki in zip(SERIALS, spkis):
        account = serial.lower()
        statements.append(f"""
            INSERT INTO dmzkit.users (username) VALUES ('{account}');
            INSERT INTO dmzkit.devices (user_id, name, spki_sha256, serial)
                SELECT id, '{serial}', '{spki}', '{serial}' FROM dmzkit.users WHERE username = '{owner}';
            INSERT INTO dmzkit.device_logins (device_id, account_id)
                SELECT d.id, u.id FROM dmzkit.devices d, dmzkit.users u
                WHERE d.serial = '{serial}' AND u.username = '{account}';
            INSERT INTO dmzkit.device_servers SELECT l.device_id, b.id FROM dmzkit.device_logins l
                JOIN dmzkit.devices d ON d.id = l.device_id, dmzkit.business_servers b WHERE d.serial = '{serial}';
        """)
    sql(userdb, "".join(statements))
    with local_servers.redis_server(where) as redis_socket:
        settings = Settings.from_dict({
            "listen": "127.0.0.1:0", "certificate": str(where / "server.pem"),
            "private_key": str(where / "server.key"), "ca_chain": str(where / "ca.pem"), "crl": str(where / "crl.pem"),
            "seal_key_file": str(where / "seal.key"), "store_socket": str(redis_socket), "store_user": "default",
            "store_password_file": str(where / "seal.key"), "db_host": userdb["host"], "db_name": "dmzkit",
            "db_user": "registration_server_unit", "db_passfile": "/dev/null", "commit_by": 60,
            "frame_seconds": 1.0, "session_seconds": 3.0,
        })
        yield Lab(where, userdb, redis_socket, settings)


@asynccontextmanager
async def serving(lab: Lab) -> AsyncIterator[int]:
    """The service on a free loopback port."""
    pool = await asyncpg.create_pool(host=lab.userdb["host"], database="dmzkit", user="registration_server_unit",
                                     min_size=1, max_size=4)
    redis = Redis(unix_socket_path=str(lab.redis_socket))
    registrar = Registrar(lab.settings, context(lab.settings), pool, redis,
                          bytes.fromhex((lab.where / "seal.key").read_text()))
    server = await asyncio.start_server(registrar.handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
        await redis.close()
        await pool.close()


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


def run(lab: Lab, body):
    async def main():
        async with serving(lab) as port:
            return await body(port)
    return asyncio.run(main())


def password_works(lab: Lab, account: str, password: str) -> bool:
    async def main() -> bool:
        pool = await asyncpg.create_pool(host=lab.userdb["host"], database="dmzkit", user=lab.userdb["user"],
                                         password=lab.userdb["password"], min_size=1, max_size=1)
        try:
            return await Directory(pool, 5, 60).check_password(account, password, "127.0.0.1") is not None
        finally:
            await pool.close()
    return asyncio.run(main())


def state(lab: Lab, serial: str) -> tuple[int, int, int | None]:
    [row] = superuser_rows(lab.userdb, "SELECT l.committed, l.issued, l.pending_epoch FROM dmzkit.device_logins l"
                                       " JOIN dmzkit.devices d ON d.id = l.device_id WHERE d.serial = $1", serial)
    return row  # type: ignore[return-value]


def test_a_registration_grants_a_new_password_that_works_once_acknowledged(lab: Lab) -> None:
    before = state(lab, SERIALS[0])
    answers = run(lab, lambda port: exchange(port, client_tls(lab, SERIALS[0]), protocol.encode(reg(epoch=before[0]))))
    grant, done = answers
    assert isinstance(grant, Grant) and isinstance(done, Done)
    assert grant.account == SERIALS[0].lower() and grant.epoch == before[1] + 1 and grant.committed == before[0]
    assert done.epoch == grant.epoch
    assert state(lab, SERIALS[0]) == (grant.epoch, grant.epoch, None)
    assert password_works(lab, grant.account, grant.password)

    again = run(lab, lambda port: exchange(port, client_tls(lab, SERIALS[0]), protocol.encode(reg(epoch=grant.epoch))))
    assert again[0].password != grant.password
    assert password_works(lab, grant.account, again[0].password)
    assert not password_works(lab, grant.account, grant.password)


def test_the_nearest_servers_come_from_the_address_the_server_sees(lab: Lab) -> None:
    committed = state(lab, SERIALS[1])[0]
    from_hq = run(lab, lambda port: exchange(port, client_tls(lab, SERIALS[1]),
                                             protocol.encode(reg(SERIALS[1], committed, ip_hint="127.0.0.2"))))
    assert [s.host for s in from_hq[0].servers] == ["biz-hq.test", "biz-branch.test"]
    from_branch = run(lab, lambda port: exchange(port, client_tls(lab, SERIALS[1]),
                                                 protocol.encode(reg(SERIALS[1], from_hq[0].epoch)),
                                                 source="127.0.0.2"))
    assert [s.site for s in from_branch[0].servers] == ["branch", "hq"]


def test_a_lost_ack_is_committed_by_the_next_reg_that_reports_it(lab: Lab) -> None:
    committed = state(lab, SERIALS[0])[0]
    [grant] = run(lab, lambda port: exchange(port, client_tls(lab, SERIALS[0]), protocol.encode(reg(epoch=committed)),
                                             ack=False))
    assert state(lab, SERIALS[0]) == (committed, grant.epoch, grant.epoch)
    assert not password_works(lab, grant.account, grant.password)
    answers = run(lab, lambda port: exchange(port, client_tls(lab, SERIALS[0]), protocol.encode(reg(epoch=grant.epoch)),
                                             ack=False))
    assert answers[0].committed == grant.epoch
    assert password_works(lab, grant.account, grant.password)


@pytest.mark.parametrize("change, code", [
    pytest.param({"ts": int((time.time() - 600) * 1000)}, "clock", id="clock ten minutes behind"),
    pytest.param({"epoch": 0}, "replay", id="an epoch older than the account's"),
])
def test_a_stale_reg_is_answered_with_err(lab: Lab, change: dict, code: str) -> None:
    before = state(lab, SERIALS[0])
    answers = run(lab, lambda port: exchange(port, client_tls(lab, SERIALS[0]),
                                             protocol.encode(reg(**{"epoch": before[0], **change}))))
    assert answers == [Err(code, 0)]
    assert state(lab, SERIALS[0])[0] == before[0]


def test_a_nonce_is_taken_once(lab: Lab) -> None:
    first = reg(epoch=state(lab, SERIALS[0])[0])

    async def twice(port: int) -> list:
        await exchange(port, client_tls(lab, SERIALS[0]), protocol.encode(first), ack=False)
        return await exchange(port, client_tls(lab, SERIALS[0]), protocol.encode(first))
    assert run(lab, twice) == [Err("replay", 0)]


def test_a_reg_naming_another_serial_gets_no_answer(lab: Lab) -> None:
    other = reg(SERIALS[1], state(lab, SERIALS[1])[0])
    answers = run(lab, lambda port: exchange(port, client_tls(lab, SERIALS[0]), protocol.encode(other)))
    assert answers == []


@pytest.mark.parametrize("name", ["stranger", "renamed"])
def test_a_certificate_not_as_enrolled_is_an_unknown_device(lab: Lab, name: str) -> None:
    """Its serial with another key, or its key under another name; the
    record names the certificate, and what it claimed apart."""
    answers = run(lab, lambda port: exchange(port, client_tls(lab, name), protocol.encode(reg(SERIALS[1]))))
    assert answers == [Err("unknown_device", 0)]
    subject, detail = last_record(lab)
    assert subject == ("DEV-S-9999" if name == "renamed" else SERIALS[0])
    assert detail["reason"] == "unknown device" and detail["claimed"] == SERIALS[1]


def audit_records(lab: Lab) -> int:
    return superuser_rows(lab.userdb, "SELECT count(*) FROM dmzkit.audit_log WHERE event = 'registration'")[0][0]


def last_record(lab: Lab) -> tuple[str, dict]:
    [(subject, detail)] = superuser_rows(lab.userdb, "SELECT subject, detail FROM dmzkit.audit_log"
                                                     " WHERE event = 'registration' ORDER BY id DESC LIMIT 1")
    return subject, json.loads(detail)


def test_another_cas_certificate_with_the_same_serial_gets_nothing(lab: Lab) -> None:
    """TLS 1.3: the client's certificate is checked after the client has
    finished its handshake; the server refuses it there, and never reads
    the reg (no registration, so no record either)."""
    before = audit_records(lab)
    assert run(lab, lambda port: exchange(port, client_tls(lab, "other-ca"), protocol.encode(reg()))) == []
    assert audit_records(lab) == before


def test_a_tls_1_2_client_gets_no_connection(lab: Lab) -> None:
    # The same device with TLS 1.3 registers (the tests above).
    tls = client_tls(lab, SERIALS[0], minimum=ssl.TLSVersion.TLSv1_2, maximum=ssl.TLSVersion.TLSv1_2)
    before = audit_records(lab)
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        run(lab, lambda port: exchange(port, tls, protocol.encode(reg())))
    assert audit_records(lab) == before


@pytest.mark.parametrize("first", [b"\x00\x05{}{}{", b"\x20\x00", protocol.encode(Ack(epoch=1, snonce="0" * 32))],
                         ids=["bad json", "too long", "an ack first"])
def test_a_bad_first_frame_ends_the_connection_with_no_answer_and_no_change(lab: Lab, first: bytes) -> None:
    before = state(lab, SERIALS[0])
    start = time.monotonic()
    assert run(lab, lambda port: exchange(port, client_tls(lab, SERIALS[0]), first)) == []
    # At once, not when the frame's deadline passes.
    assert time.monotonic() - start < lab.settings.frame_seconds
    assert state(lab, SERIALS[0]) == before
    assert last_record(lab)[1]["reason"] == "malformed"


def test_each_registration_has_its_audit_record(lab: Lab) -> None:
    start = audit_records(lab)
    claimed = reg(epoch=state(lab, SERIALS[0])[0], ip_hint="198.18.9.9")
    run(lab, lambda port: exchange(port, client_tls(lab, SERIALS[0]), protocol.encode(claimed)))
    rows = superuser_rows(lab.userdb, "SELECT subject, outcome, host(source), detail FROM dmzkit.audit_log"
                                      " WHERE event = 'registration' ORDER BY id DESC LIMIT 1")
    [(subject, outcome, source, detail)] = rows
    assert (subject, outcome, source) == (SERIALS[0], "success", "127.0.0.1")
    assert json.loads(detail)["ip_hint"] == "198.18.9.9"
    assert audit_records(lab) == start + 1


def test_a_device_that_leaves_after_its_grant_is_recorded_with_what_it_said(lab: Lab) -> None:
    claimed = reg(epoch=state(lab, SERIALS[0])[0], ip_hint="198.18.9.8", cache_logins=(1_796_000_000_000,))
    [grant] = run(lab, lambda port: exchange(port, client_tls(lab, SERIALS[0]), protocol.encode(claimed), ack=False))
    subject, detail = last_record(lab)
    assert subject == SERIALS[0]
    assert detail["reason"] == "malformed" and detail["granted"] == grant.epoch
    assert detail["ip_hint"] == "198.18.9.8" and detail["cache_logins"] == [1_796_000_000_000]


def test_a_business_server_the_protocol_cannot_name_is_skipped(lab: Lab) -> None:
    sql(lab.userdb, "INSERT INTO dmzkit.business_servers (site_id, host, port) SELECT id, '1.2.3', 443"
                    " FROM dmzkit.sites WHERE name = 'hq';"
                    "INSERT INTO dmzkit.device_servers SELECT d.id, b.id FROM dmzkit.devices d, dmzkit.business_servers b"
                    f" WHERE d.serial = '{SERIALS[0]}' AND b.host = '1.2.3';")
    try:
        fresh = reg(epoch=state(lab, SERIALS[0])[0])
        answers = run(lab, lambda port: exchange(port, client_tls(lab, SERIALS[0]), protocol.encode(fresh)))
        assert "1.2.3" not in [s.host for s in answers[0].servers] and isinstance(answers[1], Done)
    finally:
        sql(lab.userdb, "DELETE FROM dmzkit.business_servers WHERE host = '1.2.3';")


def test_a_flood_of_unfinished_handshakes_holds_a_few_sockets_and_registrations_go_on(lab: Lab) -> None:
    """40 connections from one address that never start TLS: 8 are held
    (the cap per source), the others closed at once; a device from another
    address registers meanwhile."""
    committed = state(lab, SERIALS[1])[0]

    async def flood(port: int):
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
        await asyncio.sleep(0.2)
        closed = 0
        for reader, _ in idle:
            try:
                if await asyncio.wait_for(reader.read(1), 0.05) == b"":
                    closed += 1
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
        answers = await exchange(port, client_tls(lab, SERIALS[1]), protocol.encode(reg(SERIALS[1], committed)),
                                 source="127.0.0.2")
        for _, writer in idle:
            writer.close()
        return closed, answers
    closed, answers = run(lab, flood)
    assert closed == 40 - 8
    assert [type(a) for a in answers] == [Grant, Done]
