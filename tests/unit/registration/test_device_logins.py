"""The user database's side of device auto-login (migration 0005): a
device's account and its password, which only the registration service
sets, only for a device's own account and only with a device password's
hash; and the password check (userdb.Directory) taking that hash, in
microseconds and with no lockout, while people's accounts keep theirs."""
from __future__ import annotations

import asyncio
import hashlib
import secrets

import asyncpg
import pytest
from argon2 import PasswordHasher, extract_parameters

import local_servers
from local_servers import add_user, as_postgres, superuser_rows

from dmzkit_remote_access.userdb import Directory, checkable, device_hash

DEVICE = "dev-unit-0001"
PERSON = "pat-of-device-logins"
# Unlike anything else in the test database: the decoy's parameters show
# which hash it was made like.
PERSON_HASHER = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1, hash_len=16, salt_len=16)


def run_sql(userdb: dict[str, str], sql: str) -> None:
    as_postgres(str(local_servers.POSTGRES_BIN / "psql"), "-h", userdb["host"], "-U", "postgres", "-d", "dmzkit",
                "-v", "ON_ERROR_STOP=1", "-q", sql=sql)


@pytest.fixture(scope="module")
def device(userdb: dict[str, str]) -> dict[str, str]:
    """A person, and a device with a login: its account has no password yet."""
    add_user(userdb, PERSON, PERSON_HASHER.hash("a person's password"))
    run_sql(userdb, f"""
        INSERT INTO dmzkit.users (username) VALUES ('{DEVICE}');
        INSERT INTO dmzkit.devices (user_id, name, spki_sha256, serial)
            SELECT id, 'unit device', '{"ab" * 32}', 'DEV-UNIT-0001' FROM dmzkit.users WHERE username = '{PERSON}';
        INSERT INTO dmzkit.device_logins (device_id, account_id)
            SELECT d.id, u.id FROM dmzkit.devices d, dmzkit.users u
            WHERE d.serial = 'DEV-UNIT-0001' AND u.username = '{DEVICE}';
        CREATE ROLE registration_unit LOGIN IN ROLE dmzkit_registration;
    """)
    [(device_id,)] = superuser_rows(userdb, "SELECT id FROM dmzkit.devices WHERE serial = 'DEV-UNIT-0001'")
    return {**userdb, "device_id": str(device_id)}


def as_registration(device: dict[str, str], query: str, *args: object, before: str = "") -> object:
    """One query as the registration privilege, after `before` on the same connection."""
    async def main() -> object:
        conn = await asyncpg.connect(host=device["host"], database=device["database"], user="registration_unit")
        try:
            if before:
                await conn.execute(before)
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()
    return asyncio.run(main())


def stored_hash(device: dict[str, str], name: str) -> str:
    [(stored,)] = superuser_rows(device, "SELECT c.password_hash FROM dmzkit.credentials c JOIN dmzkit.users u"
                                         " ON u.id = c.user_id WHERE u.username = $1", name)
    return str(stored)


def test_a_device_hash_is_the_sha256_of_its_password() -> None:
    assert device_hash("p") == "$sha256$" + hashlib.sha256(b"p").hexdigest()
    assert checkable(device_hash("p"))
    assert not checkable("$sha256$" + "A" * 64)
    assert not checkable("$sha256$" + "a" * 63)


def test_the_registration_service_sets_the_password_of_the_devices_account(device) -> None:
    password = secrets.token_urlsafe(24)
    as_registration(device, "SELECT dmzkit.set_device_password($1, $2)", int(device["device_id"]),
                    device_hash(password))
    assert stored_hash(device, DEVICE) == device_hash(password)


@pytest.mark.parametrize("hash_", [PasswordHasher().hash("x"), "$sha256$" + "0" * 63, "plain"])
def test_it_sets_no_other_kind_of_hash(device, hash_: str) -> None:
    with pytest.raises(asyncpg.RaiseError, match="not the hash of a device password"):
        as_registration(device, "SELECT dmzkit.set_device_password($1, $2)", int(device["device_id"]), hash_)


def test_it_sets_no_password_of_an_account_that_is_not_a_devices(device) -> None:
    with pytest.raises(asyncpg.RaiseError, match="has no account"):
        as_registration(device, "SELECT dmzkit.set_device_password($1, $2)", 10**9, device_hash("x"))
    before = stored_hash(device, PERSON)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        as_registration(device, "UPDATE dmzkit.credentials SET password_hash = $1", device_hash("x"))
    assert stored_hash(device, PERSON) == before


@pytest.mark.parametrize("whose", ["the owner of devices", "an account with a person's hash"])
def test_it_sets_no_password_of_a_person_linked_to_a_device(device, whose: str) -> None:
    """A device whose account is, by mistake, its owner's or another
    person's: the person's password stays."""
    person = PERSON if whose == "the owner of devices" else "pat-of-device-logins-2"
    if person != PERSON:
        add_user(device, person, PERSON_HASHER.hash("another person's password"))
    run_sql(device, f"""
        INSERT INTO dmzkit.devices (user_id, name, spki_sha256, serial)
            SELECT id, 'misfiled device {person}', md5('{person}') || md5('{person}'), 'DEV-MISFILED'
            FROM dmzkit.users WHERE username = '{PERSON}';
        INSERT INTO dmzkit.device_logins (device_id, account_id)
            SELECT d.id, u.id FROM dmzkit.devices d, dmzkit.users u
            WHERE d.name = 'misfiled device {person}' AND u.username = '{person}';""")
    [(misfiled,)] = superuser_rows(device, "SELECT id FROM dmzkit.devices WHERE name = $1", f"misfiled device {person}")
    before = stored_hash(device, person)
    try:
        with pytest.raises(asyncpg.RaiseError, match="is a person's"):
            as_registration(device, "SELECT dmzkit.set_device_password($1, $2)", misfiled, device_hash("x"))
        assert stored_hash(device, person) == before
    finally:
        run_sql(device, f"DELETE FROM dmzkit.devices WHERE name = 'misfiled device {person}';")


def test_a_temporary_table_of_the_callers_cannot_stand_in_for_device_logins(device) -> None:
    person_id = superuser_rows(device, "SELECT id FROM dmzkit.users WHERE username = $1", PERSON)[0][0]
    before = stored_hash(device, PERSON)
    with pytest.raises(asyncpg.RaiseError, match="has no account"):
        as_registration(device, "SELECT dmzkit.set_device_password(424242, $1)", device_hash("x"),
                        before=f"CREATE TEMP TABLE device_logins (device_id bigint, account_id bigint);"
                               f" INSERT INTO device_logins VALUES (424242, {person_id});"
                               f" GRANT SELECT ON device_logins TO PUBLIC;")
    assert stored_hash(device, PERSON) == before


def test_no_other_kind_of_hash_is_stored(device) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        superuser_rows(device, "UPDATE dmzkit.credentials SET password_hash = '$md5$abc' WHERE user_id ="
                               " (SELECT id FROM dmzkit.users WHERE username = $1)", PERSON)


def test_a_pending_grant_is_whole_and_newer_than_the_committed_one(device) -> None:
    mine = f" WHERE device_id = {int(device['device_id'])}"
    with pytest.raises(asyncpg.CheckViolationError):
        as_registration(device, "UPDATE dmzkit.device_logins SET pending_epoch = 1, issued = 1" + mine)
    with pytest.raises(asyncpg.CheckViolationError):
        as_registration(device, "UPDATE dmzkit.device_logins SET pending_epoch = 0, issued = 0,"
                                " pending_password = 'x', pending_expires = now()" + mine)
    as_registration(device, "UPDATE dmzkit.device_logins SET pending_epoch = 1, issued = 1,"
                            " pending_password = 'sealed', pending_expires = now()" + mine)
    as_registration(device, "UPDATE dmzkit.device_logins SET committed = 1, pending_epoch = NULL,"
                            " pending_password = NULL, pending_expires = NULL" + mine)


def with_directory(device: dict[str, str], body, lockout_attempts: int = 3):
    async def main():
        pool = await asyncpg.create_pool(host=device["host"], database=device["database"], user=device["user"],
                                         password=device["password"], min_size=1, max_size=2)
        try:
            return await body(Directory(pool, lockout_attempts, 60))
        finally:
            await pool.close()
    return asyncio.run(main())


def test_a_device_signs_in_with_its_password_and_failures_never_lock_it(device) -> None:
    password = secrets.token_urlsafe(24)
    as_registration(device, "SELECT dmzkit.set_device_password($1, $2)", int(device["device_id"]),
                    device_hash(password))

    async def body(directory: Directory) -> list[bool]:
        outcomes = []
        for _ in range(5):
            outcomes.append(await directory.check_password(DEVICE, "not it", "198.18.0.9") is not None)
        outcomes.append(await directory.check_password(DEVICE, password, "198.18.0.9") is not None)
        return outcomes
    assert with_directory(device, body) == [False] * 5 + [True]
    [(locked,)] = superuser_rows(device, "SELECT locked_until FROM dmzkit.credentials c JOIN dmzkit.users u"
                                         " ON u.id = c.user_id WHERE u.username = $1", DEVICE)
    assert locked is None


def test_a_persons_account_still_locks(device) -> None:
    async def body(directory: Directory) -> bool:
        for _ in range(3):
            await directory.check_password(PERSON, "not it", "198.18.0.9")
        return await directory.check_password(PERSON, "a person's password", "198.18.0.9") is not None
    assert with_directory(device, body) is False
    run_sql(device, f"UPDATE dmzkit.credentials SET failed_attempts = 0, locked_until = NULL WHERE user_id ="
                    f" (SELECT id FROM dmzkit.users WHERE username = '{PERSON}')")


def test_the_decoy_stays_like_a_persons_hash_after_a_device_password_is_set(device, monkeypatch) -> None:
    run_sql(device, f"UPDATE dmzkit.credentials SET changed_at = now() WHERE user_id ="
                    f" (SELECT id FROM dmzkit.users WHERE username = '{PERSON}')")
    as_registration(device, "SELECT dmzkit.set_device_password($1, $2)", int(device["device_id"]),
                    device_hash(secrets.token_urlsafe(24)))
    verified: list[str] = []
    verify = Directory._verify

    async def recorded(directory: Directory, stored: str, password: str) -> bool:
        verified.append(stored)
        return await verify(directory, stored, password)
    monkeypatch.setattr(Directory, "_verify", recorded)

    async def body(directory: Directory) -> None:
        await directory.check_password("nobody-of-device-logins", "x", "198.18.0.9")
    with_directory(device, body)
    assert [extract_parameters(h) for h in verified] == [extract_parameters(PERSON_HASHER.hash("x"))]
