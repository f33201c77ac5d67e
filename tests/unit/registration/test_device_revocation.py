"""Revoking a device (migration 0007) on real PostgreSQL: in the revoking
transaction its account's password goes (the password check refuses it)
and its pending grant is dropped; no registration sets a password on it
again, nor an administrator; the registration privilege cannot clear the
revocation."""
from __future__ import annotations

import asyncio
import secrets

import asyncpg
import pytest
from local_servers import superuser_rows
from reglab import sql

from dmzkit_remote_access.userdb import Directory, device_hash

SERIAL, ACCOUNT, OWNER = "DEV-UNIT-0002", "dev-unit-0002", "owner-of-a-revoked-device"
REGISTRATION = "registration_revocation_unit"


def as_registration(userdb: dict[str, str], query: str, *args: object) -> object:
    async def main() -> object:
        conn = await asyncpg.connect(host=userdb["host"], database="dmzkit", user=REGISTRATION)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()
    return asyncio.run(main())


def password_works(userdb: dict[str, str], password: str) -> bool:
    async def main() -> bool:
        pool = await asyncpg.create_pool(host=userdb["host"], database="dmzkit", user=userdb["user"],
                                         password=userdb["password"], min_size=1, max_size=1)
        try:
            return await Directory(pool, 5, 60).check_password(ACCOUNT, password, "127.0.0.1") is not None
        finally:
            await pool.close()
    return asyncio.run(main())


@pytest.fixture(scope="module")
def device(userdb: dict[str, str]) -> tuple[dict[str, str], int, str]:
    """A device whose account has a password and a pending grant."""
    sql(userdb, f"""
        INSERT INTO dmzkit.users (username) VALUES ('{OWNER}'), ('{ACCOUNT}');
        INSERT INTO dmzkit.devices (user_id, name, spki_sha256, serial)
            SELECT id, 'a device to revoke', '{"cd" * 32}', '{SERIAL}' FROM dmzkit.users WHERE username = '{OWNER}';
        INSERT INTO dmzkit.device_logins (device_id, account_id)
            SELECT d.id, u.id FROM dmzkit.devices d, dmzkit.users u WHERE d.serial = '{SERIAL}' AND u.username = '{ACCOUNT}';
        CREATE ROLE {REGISTRATION} LOGIN IN ROLE dmzkit_registration;
    """)
    [(device_id,)] = superuser_rows(userdb, "SELECT id FROM dmzkit.devices WHERE serial = $1", SERIAL)
    password = secrets.token_urlsafe(24)
    as_registration(userdb, "SELECT dmzkit.set_device_password($1, $2)", device_id, device_hash(password))
    sql(userdb, f"UPDATE dmzkit.device_logins SET issued = 1, pending_epoch = 1, pending_password = '\\x00',"
                f" pending_expires = now() + interval '1 minute' WHERE device_id = {device_id};")
    return userdb, device_id, password


def test_revoking_a_device_ends_its_accounts_logins(device) -> None:
    userdb, device_id, password = device
    assert password_works(userdb, password)
    sql(userdb, f"UPDATE dmzkit.devices SET revoked_at = now() WHERE id = {device_id};")
    assert not password_works(userdb, password)
    assert superuser_rows(userdb, "SELECT pending_epoch, pending_password FROM dmzkit.device_logins"
                                  " WHERE device_id = $1", device_id) == [(None, None)]
    with pytest.raises(asyncpg.RaiseError, match="the account of a revoked device gets no password"):
        as_registration(userdb, "SELECT dmzkit.set_device_password($1, $2)", device_id, device_hash("x" * 32))
    with pytest.raises(Exception, match="the account of a revoked device gets no password"):
        sql(userdb, f"INSERT INTO dmzkit.credentials (user_id, password_hash) SELECT id, '{device_hash('y' * 32)}'"
                    f" FROM dmzkit.users WHERE username = '{ACCOUNT}';")
    assert not password_works(userdb, "x" * 32) and not password_works(userdb, "y" * 32)


def test_the_registration_privilege_cannot_clear_a_revocation(device) -> None:
    userdb, device_id, _ = device
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        as_registration(userdb, "UPDATE dmzkit.devices SET revoked_at = NULL WHERE id = $1", device_id)


def test_a_password_is_not_moved_onto_a_revoked_devices_account(device) -> None:
    """Also as a session that skips ordinary triggers (replica role)."""
    userdb, device_id, _ = device
    sql(userdb, f"UPDATE dmzkit.devices SET revoked_at = coalesce(revoked_at, now()) WHERE id = {device_id};"
                "INSERT INTO dmzkit.users (username) VALUES ('dev-unit-spare');"
                f"INSERT INTO dmzkit.credentials (user_id, password_hash) SELECT id, '{device_hash('z' * 32)}'"
                " FROM dmzkit.users WHERE username = 'dev-unit-spare';")
    for before in ("", "SET session_replication_role = replica;"):
        with pytest.raises(Exception, match="the account of a revoked device gets no password"):
            sql(userdb, before + f"UPDATE dmzkit.credentials SET user_id = (SELECT id FROM dmzkit.users"
                                 f" WHERE username = '{ACCOUNT}') WHERE user_id = (SELECT id FROM dmzkit.users"
                                 " WHERE username = 'dev-unit-spare');")
    assert not password_works(userdb, "z" * 32)


def test_a_password_set_while_the_device_is_being_revoked_is_refused(device) -> None:
    """The revocation's transaction is open when the registration sets a
    first password (no credentials row to wait on): the registration waits
    for it, then sees the device revoked."""
    userdb = device[0]
    serial, account = "DEV-UNIT-0003", "dev-unit-0003"
    sql(userdb, f"""
        INSERT INTO dmzkit.users (username) VALUES ('{account}');
        INSERT INTO dmzkit.devices (user_id, name, spki_sha256, serial)
            SELECT id, 'revoked mid-registration', '{"ef" * 32}', '{serial}' FROM dmzkit.users WHERE username = '{OWNER}';
        INSERT INTO dmzkit.device_logins (device_id, account_id)
            SELECT d.id, u.id FROM dmzkit.devices d, dmzkit.users u WHERE d.serial = '{serial}' AND u.username = '{account}';
    """)
    [(device_id,)] = superuser_rows(userdb, "SELECT id FROM dmzkit.devices WHERE serial = $1", serial)

    async def main() -> tuple[bool, BaseException | None]:
        revoker = await asyncpg.connect(host=userdb["host"], database="dmzkit", user="postgres")
        registrar = await asyncpg.connect(host=userdb["host"], database="dmzkit", user=REGISTRATION)
        try:
            revoking = revoker.transaction()
            await revoking.start()
            await revoker.execute("UPDATE dmzkit.devices SET revoked_at = now() WHERE id = $1", device_id)
            setting = asyncio.ensure_future(registrar.execute("SELECT dmzkit.set_device_password($1, $2)", device_id,
                                                              device_hash("w" * 32)))
            await asyncio.sleep(0.5)
            waited = not setting.done()
            await revoking.commit()
            error = (await asyncio.gather(setting, return_exceptions=True))[0]
            return waited, error if isinstance(error, BaseException) else None
        finally:
            await revoker.close()
            await registrar.close()
    waited, error = asyncio.run(main())
    assert waited and isinstance(error, asyncpg.RaiseError) and "revoked device" in str(error), error
    assert superuser_rows(userdb, "SELECT count(*) FROM dmzkit.credentials c JOIN dmzkit.users u ON u.id = c.user_id"
                                  " WHERE u.username = $1", account) == [(0,)]
