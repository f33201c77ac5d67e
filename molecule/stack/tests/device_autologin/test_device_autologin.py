"""Seed 002's device auto-login, from where the device stands: at start it
registers with reg1 (or reg2), is told its account, a new password and its
site's business server (by the address the registration server saw), and
logs in there, the collection's SSL VPN, whose AAA checks the password in
the user database. Nobody types anything."""
from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from lab_devices import DEVICES, REG, UNIT, Device, kept, last_registration, run_agent, vpn_login

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

    assert vpn_login(lab, device, device.server, after["current"][1])
    assert not vpn_login(lab, device, device.server, before["current"][1])


def test_a_primary_that_refuses_sends_the_device_to_the_backup_at_once(lab, stopped) -> None:
    device = DEVICES[0]
    stopped(REG[0])
    ran = run_agent(lab, device)
    assert ran.returncode == 0, ran.stderr[-800:]
    match = REGISTERED.search(ran.stdout)
    assert match and float(match.group(2)) < 1.0, ran.stdout
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
