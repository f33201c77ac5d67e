"""AAA's password check against a real user database: the IdP's policy
(counted attempts, lockout, decoy, audit), remembered passwords that spare
the Argon2 check and are dropped by a new hash or a disabled account, and
the profile a user's groups give, per kind of NAS."""
from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg2
import pytest
from argon2 import PasswordHasher

import local_servers

from dmzkit_remote_access.aaa.check import PasswordCheck, Remembered, source_of
from dmzkit_remote_access.aaa.settings import Settings

# Cheap, so the tests are quick; the check takes any hash within the bounds.
CHEAP = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1, hash_len=16, salt_len=16)
PASSWORD = "correct horse battery staple"
LOCKOUT = 3
PROFILES = [
    {"name": "engineering", "groups": ["engineers"], "im": True},
    {"name": "contractors", "groups": ["contractors", "vendors"], "im": False},
]


def settings(userdb: dict[str, str], **changes: object) -> Settings:
    raw = {"db_host": userdb["host"], "db_name": userdb["database"], "db_user": userdb["user"],
           "db_passfile": "/unused", "profiles": PROFILES, "lockout_attempts": LOCKOUT,
           "lockout_seconds": 60} | changes
    return Settings.from_dict(raw)


def connector(userdb: dict[str, str]):
    def connect():
        connection = psycopg2.connect(host=userdb["host"], dbname=userdb["database"], user=userdb["user"],
                                      password=userdb["password"])
        connection.autocommit = True
        return connection
    return connect


class Counted(PasswordCheck):
    """Records each stored hash a password is verified against."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.verified: list[str] = []

    def _verify(self, stored: str, password: str) -> bool:
        self.verified.append(stored)
        return super()._verify(stored, password)


@pytest.fixture
def users(userdb: dict[str, str], request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Users of this test only: <test>-eng (engineers), -con (contractors
    and engineers: the first profile in order decides), -none (no profile
    group); their stored hashes by suffix."""
    prefix = request.node.name.removeprefix("test_")[:40].replace("_", "-")
    made = {"eng": ("engineers",), "both": ("contractors", "engineers"), "con": ("vendors",), "none": ("staff",)}
    for suffix, groups in made.items():
        local_servers.add_user(userdb, f"{prefix}-{suffix}", CHEAP.hash(PASSWORD), groups)
    yield {suffix: f"{prefix}-{suffix}" for suffix in made}
    for suffix in made:
        local_servers.remove_user(userdb, f"{prefix}-{suffix}")


def query(userdb: dict[str, str], statement: str, *args: object) -> list[tuple]:
    with psycopg2.connect(host=userdb["host"], dbname="dmzkit", user="postgres") as connection:
        with connection.cursor() as cursor:
            cursor.execute(statement, args)
            return cursor.fetchall()


def audited(userdb: dict[str, str], username: str) -> list[tuple[str, dict]]:
    return [(outcome, detail) for outcome, detail in query(
        userdb, "SELECT outcome, detail FROM dmzkit.audit_log WHERE subject = %s AND event = 'aaa.access' "
                "ORDER BY id", username)]


def test_the_right_password_gives_the_profile_of_the_first_matching_group(userdb, users) -> None:
    check = Counted(settings(userdb), connector(userdb))
    for suffix, profile in (("eng", "engineering"), ("both", "engineering"), ("con", "contractors")):
        decision = check.decide(users[suffix], PASSWORD, "gw1", "strongswan", "198.18.0.5")
        assert decision.accepted and decision.profile is not None and decision.profile.name == profile
    assert audited(userdb, users["eng"]) == [
        ("success", {"nas": "gw1", "profile": "engineering", "reason": "password checked"})]
    assert query(userdb, "SELECT host(source) FROM dmzkit.audit_log WHERE subject = %s", users["eng"]) == [
        ("198.18.0.5",)]


def test_a_user_in_no_profile_is_refused(userdb, users) -> None:
    decision = PasswordCheck(settings(userdb), connector(userdb)).decide(users["none"], PASSWORD, "gw1",
                                                                         "ocserv", None)
    assert not decision.accepted and decision.reason == "no profile"
    assert audited(userdb, users["none"])[0][0] == "failure"


def test_im_is_refused_to_a_profile_without_it(userdb, users) -> None:
    check = PasswordCheck(settings(userdb), connector(userdb))
    assert check.decide(users["eng"], PASSWORD, "im1", "im", None).accepted
    refused = check.decide(users["con"], PASSWORD, "im1", "im", None)
    assert not refused.accepted and refused.reason == "IM not allowed"
    # The same user reaches the gateway: IM is what the profile forbids.
    assert check.decide(users["con"], PASSWORD, "gw1", "strongswan", None).accepted


def test_a_remembered_password_spares_the_argon2_check(userdb, users) -> None:
    check = Counted(settings(userdb), connector(userdb))
    for _ in range(3):
        assert check.decide(users["eng"], PASSWORD, "gw1", "strongswan", None).accepted
    assert len(check.verified) == 1
    assert [d["reason"] for _, d in audited(userdb, users["eng"])] == [
        "password checked", "password remembered", "password remembered"]
    # A wrong password is never taken from memory, and is checked.
    assert check.decide(users["eng"], "wrong", "gw1", "strongswan", None).reason == "wrong password"
    assert len(check.verified) == 2


def test_a_new_hash_or_a_disabled_account_is_seen_at_once(userdb, users) -> None:
    check = Counted(settings(userdb), connector(userdb))
    assert check.decide(users["eng"], PASSWORD, "gw1", "strongswan", None).accepted
    query(userdb, "UPDATE dmzkit.credentials SET password_hash = %s WHERE user_id = "
                  "(SELECT id FROM dmzkit.users WHERE username = %s) RETURNING 1", CHEAP.hash("new one"), users["eng"])
    assert check.decide(users["eng"], PASSWORD, "gw1", "strongswan", None).reason == "wrong password"
    assert check.decide(users["eng"], "new one", "gw1", "strongswan", None).accepted
    query(userdb, "UPDATE dmzkit.users SET enabled = false WHERE username = %s RETURNING 1", users["eng"])
    refused = check.decide(users["eng"], "new one", "gw1", "strongswan", None)
    assert not refused.accepted and refused.reason == "unknown or disabled user"


def test_failures_lock_the_account_and_a_locked_one_costs_a_decoy_check(userdb, users) -> None:
    check = Counted(settings(userdb), connector(userdb))
    assert check.decide(users["eng"], PASSWORD, "gw1", "strongswan", None).accepted
    for _ in range(LOCKOUT):
        assert check.decide(users["eng"], "guess", "gw1", "strongswan", None).reason == "wrong password"
    stored = query(userdb, "SELECT password_hash FROM dmzkit.credentials c JOIN dmzkit.users u ON u.id = "
                           "c.user_id WHERE username = %s", users["eng"])[0][0]
    before = len(check.verified)
    # Locked: even the right password, and even one remembered before, is refused...
    locked = check.decide(users["eng"], PASSWORD, "gw1", "strongswan", None)
    assert not locked.accepted and locked.reason == "locked"
    # ... after a check against the decoy, which takes as long as a real one.
    assert len(check.verified) == before + 1 and check.verified[-1] != stored
    unknown = check.decide("nobody-at-all", PASSWORD, "gw1", "strongswan", None)
    assert unknown.reason == "unknown or disabled user" and check.verified[-1] != stored


def test_the_idp_and_aaa_count_the_same_failures(userdb, users) -> None:
    """One lockout for the account, whichever service the guesses go to."""
    check = PasswordCheck(settings(userdb), connector(userdb))
    query(userdb, "UPDATE dmzkit.credentials SET failed_attempts = %s WHERE user_id = "
                  "(SELECT id FROM dmzkit.users WHERE username = %s) RETURNING 1", LOCKOUT - 1, users["eng"])
    assert check.decide(users["eng"], "guess", "gw1", "ocserv", None).reason == "wrong password"
    assert check.decide(users["eng"], PASSWORD, "gw1", "ocserv", None).reason == "locked"


def test_when_every_check_is_busy_an_attempt_is_refused_at_once(userdb, users) -> None:
    check = Counted(settings(userdb, checks=1), connector(userdb))
    check.slots.acquire()
    try:
        busy = check.decide(users["eng"], PASSWORD, "gw1", "strongswan", None)
    finally:
        check.slots.release()
    assert not busy.accepted and busy.reason == "busy" and check.verified == []
    # Not counted against the account: no password was tried on it.
    assert query(userdb, "SELECT failed_attempts FROM dmzkit.credentials c JOIN dmzkit.users u "
                         "ON u.id = c.user_id WHERE username = %s", users["eng"]) == [(0,)]


def test_a_broken_connection_is_replaced(userdb, users) -> None:
    check = PasswordCheck(settings(userdb), connector(userdb))
    assert check.decide(users["eng"], PASSWORD, "gw1", "strongswan", None).accepted
    first = check._local.connection
    query(userdb, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '' AND "
                  "usename = %s AND pid <> pg_backend_pid()", userdb["user"])
    with pytest.raises(psycopg2.Error):
        check.decide(users["eng"], PASSWORD, "gw1", "strongswan", None)
    assert first.closed
    assert check.decide(users["eng"], PASSWORD, "gw1", "strongswan", None).accepted


# -- remembered passwords ----------------------------------------------------------


def test_remembered_passwords_expire_are_bounded_and_bound_to_the_hash() -> None:
    now = [0.0]
    remembered = Remembered(seconds=10, entries=2, clock=lambda: now[0])
    remembered.remember("a", "hash1", "pw")
    assert remembered.knows("a", "hash1", "pw")
    assert not remembered.knows("a", "hash2", "pw") and not remembered.knows("a", "hash1", "pw2")
    assert not remembered.knows("b", "hash1", "pw")
    now[0] = 10.0
    assert not remembered.knows("a", "hash1", "pw")
    for name in ("a", "b", "c"):
        remembered.remember(name, "h", "pw")
    assert not remembered.knows("a", "h", "pw") and remembered.knows("c", "h", "pw")
    assert "pw" not in repr(remembered._items)
    # Fields are length-prefixed: no two (user, hash, password) share a digest.
    assert remembered._digest("ab", "c", "d") != remembered._digest("a", "bc", "d")


def test_remembering_can_be_switched_off() -> None:
    remembered = Remembered(seconds=0, entries=10)
    remembered.remember("a", "h", "pw")
    assert not remembered.knows("a", "h", "pw")


@pytest.mark.parametrize(("station", "source"), [
    ("198.18.0.5", "198.18.0.5"), ("198.18.0.5[4500]", "198.18.0.5"), ("2001:db8::1", "2001:db8::1"),
    ("00-11-22-33-44-55", None), ("", None), (None, None)])
def test_the_source_is_the_calling_stations_address(station: str | None, source: str | None) -> None:
    assert source_of(station) == source


# -- settings ----------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "message"), [
    ({"profiles": []}, "at least one"),
    ({"profiles": [{"name": "Bad Name", "groups": ["g"]}]}, "must be 1-32"),
    ({"profiles": [{"name": "a", "groups": ["g"]}, {"name": "a", "groups": ["h"]}]}, "unique"),
    ({"profiles": [{"name": "a", "groups": []}]}, "names no group"),
    ({"db_host": "db1.example", "ca_chain": ""}, "ca_chain"),
    ({"checks": 0}, "checks"),
    ({"verified_seconds": 7200}, "verified_seconds"),
    ({"profiles": [{"name": "a", "groups": ["g"], "rate": 5}]}, "unknown settings: profiles[0].rate"),
])
def test_settings_it_cannot_use_are_refused(changes: dict, message: str) -> None:
    from dmzkit_remote_access.config import ConfigError

    raw = {"db_host": "/run/postgresql", "db_name": "dmzkit", "db_user": "aaa", "db_passfile": "/x",
           "profiles": PROFILES} | changes
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Settings.from_dict(raw)


def test_the_settings_command_checks_the_secret_too(tmp_path, capsys) -> None:
    from dmzkit_remote_access.aaa.__main__ import main

    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"db_host": "/run/postgresql", "db_name": "dmzkit", "db_user": "aaa",
                                  "db_passfile": str(tmp_path / "missing"), "profiles": PROFILES}))
    assert main(["--check", "--config", str(config)]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "missing").write_text("secret\n")
    assert main(["--check", "--config", str(config)]) == 0
