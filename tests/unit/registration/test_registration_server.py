"""The registration service against real PostgreSQL (the userdb migrations)
and Redis, over real TLS 1.3 with device certificates: a registration
grants the device's account a new password that the password check takes
once the device acknowledges it; the nearest servers come from the address
the server sees; replays, clocks off, other serials, other keys and other
CAs are refused; a bad frame ends the connection with no answer."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
import time

import asyncpg
import pytest
import redis
from local_servers import superuser_rows
from reglab import SERIALS, Lab, client_tls, exchange, last_record, reg, run, sql, state

from dmzkit_remote_access.registration import protocol
from dmzkit_remote_access.registration.metrics import Metrics
from dmzkit_remote_access.registration.protocol import Ack, Done, Err, Grant
from dmzkit_remote_access.userdb import Directory


def password_works(lab: Lab, account: str, password: str) -> bool:
    async def main() -> bool:
        pool = await asyncpg.create_pool(host=lab.userdb["host"], database="dmzkit", user=lab.userdb["user"],
                                         password=lab.userdb["password"], min_size=1, max_size=1)
        try:
            return await Directory(pool, 5, 60).check_password(account, password, "127.0.0.1") is not None
        finally:
            await pool.close()
    return asyncio.run(main())


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


def test_among_the_nearest_servers_the_least_loaded_comes_first(lab: Lab) -> None:
    """Two servers at the site of 127.0.0.3: devices sent first to one and
    then the other, by how many each was sent first; farther sites after."""
    sql(lab.userdb, """
        INSERT INTO dmzkit.sites (name, networks) VALUES ('lb', '{127.0.0.3/32}');
        INSERT INTO dmzkit.business_servers (site_id, host, port)
            SELECT id, h, 443 FROM dmzkit.sites, unnest(ARRAY['lb-b.test', 'lb-a.test']) AS h WHERE name = 'lb';
        INSERT INTO dmzkit.device_servers SELECT l.device_id, b.id FROM dmzkit.device_logins l
            JOIN dmzkit.devices d ON d.id = l.device_id, dmzkit.business_servers b
            WHERE d.serial = '""" + SERIALS[1] + """' AND b.host LIKE 'lb-%';""")
    redis.Redis(unix_socket_path=str(lab.redis_socket)).delete(*(f"dmzkit:registration:load:lb-{x}.test:443" for x in "ab"))
    try:
        committed = state(lab, SERIALS[1])[0]
        regs = [protocol.encode(reg(SERIALS[1], committed + n)) for n in range(4)]

        async def four(port: int) -> list:
            return [await exchange(port, client_tls(lab, SERIALS[1]), r, source="127.0.0.3") for r in regs]
        grants = [answers[0] for answers in run(lab, four)]
        assert [g.servers[0].host for g in grants] == ["lb-a.test", "lb-b.test", "lb-a.test", "lb-b.test"]
        assert [s.site for s in grants[0].servers] == ["lb", "lb", "branch"]  # at most MAX_SERVERS
        assert last_record(lab, SERIALS[1])[1]["server"] == "lb-b.test:443"
    finally:
        sql(lab.userdb, "DELETE FROM dmzkit.sites WHERE name = 'lb';")


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


def test_a_device_over_its_rate_is_told_when_to_come_back(lab: Lab) -> None:
    """Two registrations a minute: the third is `err rate` with the seconds
    left in the minute, before any rotation; the other device goes on."""
    redis.Redis(unix_socket_path=str(lab.redis_socket)).delete(*(f"dmzkit:registration:rate:{s}" for s in SERIALS))
    twice_a_minute = dataclasses.replace(lab.settings, rate_per_minute=2)

    before = state(lab, SERIALS[0])
    # Each registration commits the next epoch.
    regs = [(SERIALS[0], reg(epoch=before[0] + n)) for n in range(3)]
    regs.append((SERIALS[1], reg(SERIALS[1], epoch=state(lab, SERIALS[1])[0])))

    async def three_and_another(port: int) -> list:
        return [await exchange(port, client_tls(lab, serial), protocol.encode(message)) for serial, message in regs]
    first, second, third, other = run(lab, three_and_another, twice_a_minute)
    assert isinstance(first[-1], Done) and isinstance(second[-1], Done) and isinstance(other[-1], Done)
    [refused] = third
    assert refused.code == "rate" and 55 <= refused.retry_after <= 60, refused
    assert state(lab, SERIALS[0])[0] == before[0] + 2
    assert last_record(lab, SERIALS[0])[1]["reason"] == "rate"


def test_the_metrics_count_connections_by_outcome_and_reason(lab: Lab) -> None:
    metrics = Metrics()
    first = protocol.encode(reg(epoch=state(lab, SERIALS[0])[0]))

    async def three(port: int) -> None:
        await exchange(port, client_tls(lab, SERIALS[0]), first)
        await exchange(port, client_tls(lab, SERIALS[0]), b"\x20\x00")
        await exchange(port, client_tls(lab, "other-ca"), protocol.encode(reg()))
    run(lab, three, metrics=metrics)
    value = metrics.registry.get_sample_value
    assert value("dmzkit_registration_connections_total", {"outcome": "success", "reason": ""}) == 1
    assert value("dmzkit_registration_connections_total", {"outcome": "failure", "reason": "malformed"}) == 1
    assert value("dmzkit_registration_handshake_failures_total") == 1
    assert value("dmzkit_registration_seconds_count") == 2
    assert value("dmzkit_registration_handshakes_in_progress") == 0


def test_past_max_registrations_a_device_is_told_the_service_is_busy(lab: Lab) -> None:
    """One registration at a time: while the first waits for its ack, the
    second device gets `err busy` and no rotation."""
    one_at_a_time = dataclasses.replace(lab.settings, max_registrations=1)
    first = protocol.encode(reg(epoch=state(lab, SERIALS[0])[0]))
    before = state(lab, SERIALS[1])
    second = protocol.encode(reg(SERIALS[1], epoch=before[0]))

    async def overlapping(port: int) -> tuple:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls(lab, SERIALS[0]),
                                                       server_hostname="localhost")
        try:
            writer.write(first)
            granted = await protocol.read(reader, 2, Grant, Err)  # and its ack not sent yet
            return granted, await exchange(port, client_tls(lab, SERIALS[1]), second)
        finally:
            writer.close()
    granted, answers = run(lab, overlapping, one_at_a_time)
    assert isinstance(granted, Grant) and answers == [Err("busy", 1)]
    assert state(lab, SERIALS[1]) == before
    assert last_record(lab, SERIALS[1])[1]["reason"] == "busy"


def test_one_certificate_cannot_take_every_registration_slot(lab: Lab) -> None:
    """Two connections past TLS with one key that say nothing: a third with
    that key is busy, while another device registers."""
    third = protocol.encode(reg(epoch=state(lab, SERIALS[0])[0]))
    other = protocol.encode(reg(SERIALS[1], epoch=state(lab, SERIALS[1])[0]))

    async def hold_two(port: int) -> tuple:
        idle = [await asyncio.open_connection("127.0.0.1", port, ssl=client_tls(lab, SERIALS[0]),
                                              server_hostname="localhost") for _ in range(2)]
        try:
            await asyncio.sleep(0.1)  # both past TLS, in the service
            return (await exchange(port, client_tls(lab, SERIALS[0]), third),
                    await exchange(port, client_tls(lab, SERIALS[1]), other))
        finally:
            for _, writer in idle:
                writer.close()
    busy, registered = run(lab, hold_two)
    assert busy == [Err("busy", 1)]
    assert [type(a) for a in registered] == [Grant, Done]


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
    metrics = Metrics()
    closed, answers = run(lab, flood, metrics=metrics)
    assert closed == 40 - 8
    assert metrics.registry.get_sample_value("dmzkit_registration_handshakes_refused_total", {"cap": "per_source"}) == 32
    assert [type(a) for a in answers] == [Grant, Done]


def test_a_database_that_refuses_the_service_at_start_is_said_in_one_line(lab: Lab, tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path
    settings = dataclasses.asdict(dataclasses.replace(lab.settings, db_user="no_such_role_unit",
                                                      metrics_listen="127.0.0.1:0"))
    config = tmp_path / "registration.json"
    config.write_text(json.dumps(settings))
    src = Path(__file__).resolve().parents[3] / "src"
    ran = subprocess.run([sys.executable, "-m", "dmzkit_remote_access.registration.server", "--config", str(config)],
                         capture_output=True, text=True, timeout=30, env={"PYTHONPATH": str(src)})
    assert ran.returncode == 1, ran
    assert "cannot use the user database" in ran.stderr and "no_such_role_unit" in ran.stderr, ran.stderr
    assert "Traceback" not in ran.stderr, ran.stderr
