"""AAA's password check against a real user database: the IdP's own check
(counted attempts, the shared lockout, the decoy, the audit log), under
AAA's event and with the NAS in every record, run on its own loop for
FreeRADIUS's threads."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

import local_servers

from dmzkit_remote_access.aaa.password import EVENT, PasswordCheck
from dmzkit_remote_access.aaa.settings import Settings
from dmzkit_remote_access.config import ConfigError

# Cheap, so the tests are quick; the check takes any hash within the bounds.
CHEAP = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1, hash_len=16, salt_len=16)
PASSWORD = "correct horse battery staple"
LOCKOUT = 3


def passfile(userdb: dict[str, str], where: Path) -> str:
    path = where / "userdb.pgpass"
    path.write_text(f"*:*:*:{userdb['user']}:{userdb['password']}\n")
    path.chmod(0o600)
    return str(path)


def settings(userdb: dict[str, str], where: Path, **changes: object) -> Settings:
    return Settings.from_dict({"db_host": userdb["host"], "db_name": userdb["database"], "db_user": userdb["user"],
                               "db_passfile": passfile(userdb, where), "lockout_attempts": LOCKOUT,
                               "lockout_seconds": 60} | changes)


@pytest.fixture
def user(userdb: dict[str, str], request: pytest.FixtureRequest) -> Iterator[str]:
    name = request.node.name.removeprefix("test_")[:50].replace("_", "-")
    local_servers.add_user(userdb, name, CHEAP.hash(PASSWORD), ("staff",))
    yield name
    local_servers.remove_user(userdb, name)


query = local_servers.superuser_rows


def audited(userdb: dict[str, str], username: str) -> list[tuple[str, dict]]:
    rows = query(userdb, "SELECT outcome, detail::text FROM dmzkit.audit_log WHERE subject = $1 AND event = $2 "
                         "ORDER BY id", username, EVENT)
    return [(outcome, json.loads(detail)) for outcome, detail in rows]


def test_the_right_password_passes_and_is_audited_with_the_nas(userdb, user, tmp_path) -> None:
    check = PasswordCheck(settings(userdb, tmp_path))
    assert check.check(user, PASSWORD, "198.18.0.5", "gw1")
    assert not check.check(user, "wrong", None, "im1")
    assert audited(userdb, user) == [("success", {"nas": "gw1"}),
                                     ("failure", {"nas": "im1", "reason": "wrong password"})]
    assert query(userdb, "SELECT host(source) FROM dmzkit.audit_log WHERE subject = $1 ORDER BY id LIMIT 1",
                 user) == [("198.18.0.5",)]


def test_failures_lock_the_account_for_the_idp_too(userdb, user, tmp_path) -> None:
    check = PasswordCheck(settings(userdb, tmp_path))
    for _ in range(LOCKOUT):
        assert not check.check(user, "guess", None, "gw1")
    assert not check.check(user, PASSWORD, None, "gw1")
    assert audited(userdb, user)[-1] == ("failure", {"nas": "gw1", "reason": "locked"})
    assert query(userdb, "SELECT locked_until > now() FROM dmzkit.credentials c JOIN dmzkit.users u "
                         "ON u.id = c.user_id WHERE username = $1", user) == [(True,)]


def test_an_unknown_or_disabled_user_is_refused_after_a_decoy_check(userdb, user, tmp_path, monkeypatch) -> None:
    check = PasswordCheck(settings(userdb, tmp_path))
    check.prepare()
    verified: list[str] = []
    verify = check.directory._verify

    async def recorded(stored: str, password: str) -> bool:
        verified.append(stored)
        return await verify(stored, password)
    monkeypatch.setattr(check.directory, "_verify", recorded)
    assert not check.check("nobody-at-all", PASSWORD, None, "gw1")
    query(userdb, "UPDATE dmzkit.users SET enabled = false WHERE username = $1", user)
    assert not check.check(user, PASSWORD, None, "gw1")
    assert len(verified) == 2 and verified[0] == verified[1]
    assert audited(userdb, "nobody-at-all")[-1] == ("failure", {"nas": "gw1", "reason": "unknown or disabled user"})


def test_a_database_that_cannot_be_reached_raises(userdb, tmp_path) -> None:
    check = PasswordCheck(settings(userdb, tmp_path, db_host=str(tmp_path), timeout=2))
    with pytest.raises(OSError):
        check.check("anyone", PASSWORD, None, "gw1")


@pytest.mark.parametrize(("changes", "message"), [
    ({"db_host": "db1.example", "ca_chain": "/x"}, "ca_chain and crl"),
    ({"lockout_attempts": 0}, "lockout"),
    ({"timeout": 0}, "timeout"),
    ({"profiles": []}, "unknown settings: profiles"),
])
def test_settings_it_cannot_use_are_refused(changes: dict, message: str) -> None:
    raw = {"db_host": "/run/postgresql", "db_name": "dmzkit", "db_user": "aaa", "db_passfile": "/x"} | changes
    with pytest.raises(ConfigError, match=message):
        Settings.from_dict(raw)


def test_the_settings_command_checks_the_files_they_name(tmp_path, capsys) -> None:
    from dmzkit_remote_access.aaa.__main__ import main

    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"db_host": "/run/postgresql", "db_name": "dmzkit", "db_user": "aaa",
                                  "db_passfile": str(tmp_path / "missing")}))
    assert main(["--check", "--config", str(config)]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "missing").write_text("*:*:*:aaa:secret\n")
    assert main(["--check", "--config", str(config)]) == 0
