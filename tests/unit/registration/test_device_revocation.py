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
