"""Seed 002's device auto-login, from where the device stands: at start it
registers with reg1 (or reg2), is told its account, a new password and its
site's business server (by the address the registration server saw), and
logs in there, the collection's SSL VPN, whose AAA checks the password in
the user database. Nobody types anything."""
from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from lab_devices import (CACHE, CONFIG, DEVICES, REG, UNIT, Device, audit_verify, im_login, kept, last_registration, psql,
                         run_agent, vpn_login)

REGISTERED = re.compile(r"registered \(epoch (\d+)\) in ([0-9.]+) s; logged in as (\S+)")


@pytest.fixture
def stopped(lab) -> Iterator:
    """stop(host): the registration service on host stopped for the test (its
    port closed), started again after."""
    hosts: list[str] = []

    def stop(host: str) -> None:
        assert lab[host].host.run("systemctl stop dmzkit-registration").rc == 0
        hosts.append(host)

    yield stop
    for host in hosts:
        assert lab[host].host.run("systemctl start dmzkit-registration").rc == 0


@pytest.fixture
def fresh_start(lab) -> None:
    """The device's breakers forgotten: each test sees the hedging itself,
    not a breaker an earlier test opened."""
    assert lab[DEVICES[0].host].host.run(f"rm -f {CACHE}.breakers").rc == 0


@pytest.fixture
def silent(lab, stopped, transient_service) -> Iterator:
    """silent(host): the registration service on host replaced by a listener
    that accepts connections and never says a word."""
    def make(host: str) -> None:
        stopped(host)
        transient_service(host, "verify-silent-registration",
                          "python3 -c 'import socket; s = socket.create_server((\"\", 7443)); "
                          "held = [s.accept() for _ in iter(int, 1)]'", 7443)
    yield make


@pytest.mark.parametrize("device", DEVICES, ids=lambda d: d.host)
def test_the_device_logs_in_at_start_at_its_sites_server(lab, device: Device) -> None:
    """The unit, as at every start: registered, then logged in at the
    server of the site the registration server saw it at."""
    host = lab[device.host].host
    assert host.run(f"systemctl restart {UNIT}").rc == 0
    assert host.run(f"systemctl is-active {UNIT}").stdout.strip() == "active"
    said = host.run(f"journalctl -u {UNIT} -n 5 --no-pager -o cat").stdout
    assert REGISTERED.search(said) and f"logged in as {device.serial}" in said, said

    record = last_registration(lab, device)
    assert record["outcome"] == "success", record
    assert record["source"] == device.seen, record
    assert (record["detail"]["site"], record["detail"]["server"]) == (device.site, device.server), record
    assert kept(lab, device)["servers"][0] == device.server


@pytest.mark.parametrize("device", DEVICES[:1], ids=lambda d: d.host)
def test_each_registration_rotates_the_password_and_the_previous_stops_working(lab, device: Device) -> None:
    before = kept(lab, device)
    ran = run_agent(lab, device)
    assert ran.returncode == 0, ran.stderr[-800:]
    after = kept(lab, device)
    assert after["current"][0] > before["current"][0] and after["candidate"] is None, (before, after)
    assert after["current"][1] != before["current"][1]

    # Both business servers check the account's password at AAA.
    assert vpn_login(lab, device, device.server, after["current"][1])
    assert not vpn_login(lab, device, device.server, before["current"][1])
    assert im_login(lab, device, after["current"][1])
    assert not im_login(lab, device, before["current"][1])


@pytest.mark.parametrize("primary, within", [("refuses", 1.0), ("silent", 2.5)])
def test_a_primary_that_fails_sends_the_device_to_the_backup(lab, stopped, silent, fresh_start, primary: str,
                                                             within: float) -> None:
    """A closed port: the backup at once; a listener that never speaks:
    the backup after the primary's stagger (the agent's own figure)."""
    device = DEVICES[0]
    (stopped if primary == "refuses" else silent)(REG[0])
    ran = run_agent(lab, device)
    assert ran.returncode == 0, ran.stderr[-800:]
    match = REGISTERED.search(ran.stdout)
    assert match and float(match.group(2)) < within, ran.stdout
    assert last_registration(lab, device)["outcome"] == "success"


def test_with_both_registration_servers_down_the_device_logs_in_from_its_cache(lab, stopped) -> None:
    device = DEVICES[0]
    password = kept(lab, device)["current"]
    for host in REG:
        stopped(host)
    ran = run_agent(lab, device)
    assert ran.returncode == 0, ran.stderr[-800:]
    assert f"logged in from the cache as {device.serial}" in ran.stdout, ran.stdout
    now = kept(lab, device)
    assert now["current"] == password and now["cache_logins"] >= 1


def test_with_both_down_and_no_cache_the_device_says_so_within_10_s(lab, stopped) -> None:
    device = DEVICES[0]
    cache = "/var/lib/dmzkit-device/cache"
    host = lab[device.host].host
    for name in REG:
        stopped(name)
    assert host.run(f"mv {cache} {cache}.aside").rc == 0
    try:
        ran = run_agent(lab, device, timeout=10)
    finally:
        assert host.run(f"mv {cache}.aside {cache}").rc == 0
    assert ran.returncode == 1 and "no cache to log in with" in ran.stderr, (ran.returncode, ran.stderr[-800:])


def test_a_certificate_of_another_ca_with_the_devices_serial_is_refused(lab) -> None:
    """Someone with a CA of their own makes a certificate with the device's
    serial: no registration server takes it (TLS ends before a reg is read)."""
    device = DEVICES[0]
    host = lab[device.host].host
    before = psql(lab, f"SELECT count(*) FROM audit_log WHERE event = 'registration' AND subject = '{device.serial}'")
    forged = "/run/dmzkit-forged"
    try:
        host.run_expect([0], f"rm -rf {forged} && mkdir {forged} && cd {forged}"
                             " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1"
                             " -subj /CN=forged-ca -keyout ca.key -out ca.pem 2>/dev/null"
                             f" && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN={device.serial}"
                             " -keyout device.key -out device.csr 2>/dev/null"
                             " && echo extendedKeyUsage=clientAuth > ext"
                             " && openssl x509 -req -in device.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1"
                             " -extfile ext -out device.pem 2>/dev/null"
                             " && chown -R dmzkit-device . && chmod 0700 .")
        host.run_expect([0], f"python3 -c 'import json, sys; c = json.load(open(\"{CONFIG}\")); c.update("
                             f"certificate=\"{forged}/device.pem\", private_key=\"{forged}/device.key\", "
                             f"cache=\"{forged}/cache\"); json.dump(c, open(\"{forged}/agent.json\", \"w\"))'"
                             f" && chown dmzkit-device {forged}/agent.json")
        ran = run_agent(lab, device, config=f"{forged}/agent.json")
    finally:
        host.run(f"rm -rf {forged}")
    assert ran.returncode == 1 and "no cache to log in with" in ran.stderr, ran.stderr[-800:]
    after = psql(lab, f"SELECT count(*) FROM audit_log WHERE event = 'registration' AND subject = '{device.serial}'")
    assert after == before


def test_a_cache_rolled_back_to_an_older_epoch_is_refused_online(lab) -> None:
    device = DEVICES[0]
    host = lab[device.host].host
    host.run_expect([0], f"cp -p {CACHE} {CACHE}.older")
    try:
        assert run_agent(lab, device).returncode == 0
        host.run_expect([0], f"cp -p {CACHE} {CACHE}.newest && cp -p {CACHE}.older {CACHE}")
        ran = run_agent(lab, device)
        record = last_registration(lab, device)
    finally:
        host.run(f"test -f {CACHE}.newest && mv {CACHE}.newest {CACHE}; rm -f {CACHE}.older")
    assert record["outcome"] == "failure" and record["detail"]["reason"] == "stale epoch", record
    # Nor does its password log in anywhere: the account's is newer.
    assert ran.returncode == 1, ran.stderr[-800:]
    assert run_agent(lab, device).returncode == 0


def test_the_registration_audit_chain_verifies(lab) -> None:
    ran = audit_verify(lab)
    assert ran.returncode == 0 and "records verify" in ran.stdout, (ran.stdout, ran.stderr[-800:])


@pytest.mark.irreversible
def test_an_edited_registration_record_is_found_by_the_audit_chain(lab) -> None:
    """The database's superuser edits a record (past the append-only
    trigger); the chain names it. Put back, the chain verifies again."""
    row = psql(lab, "SELECT id || ' ' || chain_seq FROM audit_log WHERE chain = 'registration' ORDER BY id DESC LIMIT 1")
    record, seq = row.split()
    edit = ("BEGIN; SET LOCAL session_replication_role = replica;"
            f" UPDATE audit_log SET outcome = CASE outcome WHEN 'success' THEN 'failure' ELSE 'success' END WHERE id = {record};"
            " COMMIT;")
    psql(lab, edit)
    try:
        ran = audit_verify(lab)
    finally:
        psql(lab, edit)
    assert ran.returncode == 1 and f"record {seq}" in ran.stdout, (ran.stdout, ran.stderr[-800:])
    assert audit_verify(lab).returncode == 0


def test_only_the_registration_servers_reach_the_user_database_from_the_dmz(lab) -> None:
    """fw1 lets the registration servers, and no other host of the DMZ
    (nor the tunnels routed through it), open the database's port."""
    database = lab["db1"].address("internal")
    assert lab[REG[0]].connects(database, 5432)
    assert not lab["gw1"].connects(database, 5432)
