"""The modules that enrol device auto-login's sites and devices (userdb_site,
userdb_device), run in this process against the user database's real schema."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import pytest
from ansible.module_utils.testing import patch_module_args
from testpki import make_ca, make_leaf, pem

from ansible_collections.dmzkit.remote_access.plugins.modules import userdb_device, userdb_site

Run = Callable[..., dict[str, Any]]


@pytest.fixture
def run(userdb: dict[str, str], capsys: pytest.CaptureFixture[str]) -> Run:
    def module(main: Callable[[], None], check: bool = False, **args: Any) -> dict[str, Any]:
        with patch_module_args({"login_unix_socket": userdb["host"], "_ansible_check_mode": check,
                                "_ansible_diff": True, **args}):
            with pytest.raises(SystemExit):
                main()
        return json.loads(capsys.readouterr().out)
    return module


@pytest.fixture
def query(userdb: dict[str, str]) -> Iterator[Callable[[str, tuple], list[tuple]]]:
    """Statements as the superuser; what the tests made (named mod-*) is
    removed after each, since the unit session shares one database."""
    def rows(sql: str, params: tuple = ()) -> list[tuple]:
        with psycopg2.connect(dbname="dmzkit", user="postgres", host=userdb["host"]) as conn, conn.cursor() as cur:
            cur.execute(sql, params or None)
            return cur.fetchall() if cur.description else []
    yield rows
    rows("DELETE FROM dmzkit.credentials WHERE user_id IN (SELECT id FROM dmzkit.users WHERE username LIKE 'device-mod-%')")
    rows("DELETE FROM dmzkit.devices WHERE serial LIKE 'MOD-%'")
    rows("DELETE FROM dmzkit.users WHERE username LIKE 'mod-%' OR username LIKE 'device-mod-%'")
    rows("DELETE FROM dmzkit.sites WHERE name LIKE 'mod-%'")


CA = make_ca("devices CA")


def certificate(serial: str) -> str:
    return pem(make_leaf(*CA, serial)[1]).decode()


def test_a_site_in_check_mode_then_applied_then_nothing_to_do(run: Run, query) -> None:
    site = {"name": "mod-branch", "networks": ["198.18.3.0/24", "198.18.0.7/32"],
            "servers": [{"host": "vpn-mod-branch.test", "port": 443}]}
    checked = run(userdb_site.main, check=True, **site)
    assert checked["changed"] and checked["diff"]["before"] == {}
    assert query("SELECT 1 FROM dmzkit.sites WHERE name = 'mod-branch'") == []

    assert run(userdb_site.main, **site)["site"]["networks"] == ["198.18.0.7/32", "198.18.3.0/24"]
    assert run(userdb_site.main, **site)["changed"] is False
    assert query("SELECT count(*) FROM dmzkit.audit_log WHERE subject = 'mod-branch' AND event = 'site.create'"
                 ) == [(1,)]

    moved = run(userdb_site.main, name="mod-other", servers=site["servers"])
    assert moved["failed"] and "vpn-mod-branch.test:443 (site mod-branch)" in moved["msg"]
    assert query("SELECT 1 FROM dmzkit.sites WHERE name = 'mod-other'") == []

    bad = run(userdb_site.main, name="mod-branch", networks=["198.18.3.1/24"])
    assert bad["failed"] and "host bits" in bad["msg"] and "Traceback" not in bad["msg"]


def test_a_device_is_enrolled_with_its_own_account_and_servers(run: Run, query) -> None:
    run(userdb_site.main, name="mod-hq", servers=[{"host": "vpn-mod-hq.test", "port": 443}])
    query("INSERT INTO dmzkit.users (username) VALUES ('mod-owner') RETURNING id")
    device = {"serial": "MOD-0001", "owner": "mod-owner", "certificate": certificate("MOD-0001"),
              "groups": ["staff"], "servers": [{"host": "vpn-mod-hq.test", "port": 443}]}

    enrolled = run(userdb_device.main, **device)
    assert enrolled["changed"] and enrolled["device"]["account"] == "device-mod-0001"
    assert run(userdb_device.main, **device)["changed"] is False
    # What the registration service reads (registration/server.py).
    assert query("SELECT a.username, b.host FROM dmzkit.devices d JOIN dmzkit.device_logins l ON l.device_id = d.id"
                 " JOIN dmzkit.users a ON a.id = l.account_id JOIN dmzkit.device_servers s ON s.device_id = d.id"
                 " JOIN dmzkit.business_servers b ON b.id = s.server_id WHERE d.serial = 'MOD-0001'"
                 ) == [("device-mod-0001", "vpn-mod-hq.test")]

    # Re-keyed: the password the old key was given goes, and the rotation starts again.
    query("INSERT INTO dmzkit.credentials (user_id, password_hash) SELECT id, %s FROM dmzkit.users"
          " WHERE username = 'device-mod-0001' RETURNING user_id", ("$sha256$" + "ab" * 32,))
    query("UPDATE dmzkit.device_logins SET committed = 3, issued = 3 WHERE device_id ="
          " (SELECT id FROM dmzkit.devices WHERE serial = 'MOD-0001') RETURNING device_id")
    rekeyed = run(userdb_device.main, **dict(device, certificate=certificate("MOD-0001")))
    assert rekeyed["changed"] and rekeyed["diff"]["after"]["spki_sha256"] != rekeyed["diff"]["before"]["spki_sha256"]
    assert query("SELECT count(*) FROM dmzkit.credentials c JOIN dmzkit.users u ON u.id = c.user_id"
                 " WHERE u.username = 'device-mod-0001'") == [(0,)]
    assert query("SELECT committed, issued FROM dmzkit.device_logins l JOIN dmzkit.devices d ON d.id = l.device_id"
                 " WHERE d.serial = 'MOD-0001'") == [(0, 0)]

    # Removed, its account goes with its password, and the serial may be enrolled again.
    query("INSERT INTO dmzkit.credentials (user_id, password_hash) SELECT id, %s FROM dmzkit.users"
          " WHERE username = 'device-mod-0001' RETURNING user_id", ("$sha256$" + "cd" * 32,))
    assert run(userdb_device.main, serial="MOD-0001", state="absent")["changed"]
    assert query("SELECT count(*) FROM dmzkit.users WHERE username = 'device-mod-0001'") == [(0,)]
    assert run(userdb_device.main, **device)["changed"]


@pytest.mark.parametrize("change, why", [
    ({"certificate": certificate("MOD-OTHER")}, "checks the common name is the serial"),
    ({"account": "mod-owner2"}, "is not this device's account"),
    ({"servers": [{"host": "nowhere.test", "port": 443}]}, "no site has these servers"),
    ({"owner": "nobody-at-all"}, "no user nobody-at-all"),
    ({"certificate": "not a certificate"}, "not a PEM certificate"),
])
def test_a_refused_enrolment_changes_nothing(run: Run, query, change: dict, why: str) -> None:
    query("INSERT INTO dmzkit.users (username) VALUES ('mod-owner2') ON CONFLICT DO NOTHING RETURNING id")
    device = {"serial": "MOD-0002", "owner": "mod-owner2", "certificate": certificate("MOD-0002"), **change}
    refused = run(userdb_device.main, **device)
    assert refused["failed"] and why in refused["msg"] and "Traceback" not in refused["msg"]
    assert query("SELECT 1 FROM dmzkit.devices WHERE serial = 'MOD-0002'") == []
    assert query("SELECT 1 FROM dmzkit.users WHERE username = 'device-mod-0002'") == []


def test_revoked_then_removed_leaves_no_password(run: Run, query) -> None:
    query("INSERT INTO dmzkit.users (username) VALUES ('mod-owner3') RETURNING id")
    device = {"serial": "MOD-0003", "owner": "mod-owner3", "certificate": certificate("MOD-0003")}
    account = run(userdb_device.main, **device)["device"]["account"]
    password = "$sha256$" + "ab" * 32
    query("INSERT INTO dmzkit.credentials (user_id, password_hash) SELECT id, %s FROM dmzkit.users"
          " WHERE username = %s RETURNING user_id", (password, account))

    assert run(userdb_device.main, serial="MOD-0003", state="revoked", check=True)["changed"]
    assert query("SELECT count(*) FROM dmzkit.credentials c JOIN dmzkit.users u ON u.id = c.user_id"
                 " WHERE u.username = %s", (account,)) == [(1,)]
    assert run(userdb_device.main, serial="MOD-0003", state="revoked")["device"]["revoked"]
    assert query("SELECT count(*) FROM dmzkit.credentials c JOIN dmzkit.users u ON u.id = c.user_id"
                 " WHERE u.username = %s", (account,)) == [(0,)]
    again = run(userdb_device.main, **device)
    assert again["failed"] and "it is revoked" in again["msg"]

    assert run(userdb_device.main, serial="MOD-0003", state="absent")["changed"]
    assert query("SELECT 1 FROM dmzkit.devices WHERE serial = 'MOD-0003'") == []
    assert run(userdb_device.main, serial="MOD-0003", state="absent")["changed"] is False


def test_in_check_mode_a_database_not_made_yet_would_be_made_and_otherwise_fails(tmp_path, capsys) -> None:
    # A fresh host in check mode: the userdb role's play has not made PostgreSQL's socket.
    def module(check: bool) -> dict[str, Any]:
        with patch_module_args({"login_unix_socket": str(tmp_path), "_ansible_check_mode": check, "name": "mod-fresh"}):
            with pytest.raises(SystemExit):
                userdb_site.main()
        return json.loads(capsys.readouterr().out)

    checked = module(check=True)
    assert checked["changed"] and "does not exist yet" in checked["msg"] and not checked.get("failed")
    applied = module(check=False)
    assert applied["failed"] and "cannot connect to database dmzkit" in applied["msg"]
