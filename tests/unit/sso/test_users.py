"""The IdP's directory refuses an unknown user after a verify that costs what
a real one costs: against a decoy made with the Argon2 parameters of the
stored hashes, which the module userdb_user makes (the collection's one
policy). The IdP has no parameters of its own that could drift from it."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import pytest
from argon2 import Parameters, PasswordHasher, extract_parameters

import local_servers
from conftest import PASSWORD

from ansible_collections.dmzkit.remote_access.plugins.modules.userdb_user import hasher
from dmzkit_remote_access.sso import users
from dmzkit_remote_access.sso.users import Directory, decoy_like, parameters_of

T = TypeVar("T")
# Cheap, and unlike the policy: a hash made by another tool, or before a new policy.
OTHER = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1, hash_len=16, salt_len=16)
# Names no other test signs in with (test_idp reads the audit log of its own).
STRANGER = "stranger-of-test-users"


def policy() -> Parameters:
    return extract_parameters(hasher().hash("any"))


def test_a_decoy_has_the_parameters_it_is_made_with() -> None:
    for made_with in (policy(), extract_parameters(OTHER.hash("any"))):
        decoy = decoy_like(made_with)
        assert extract_parameters(decoy) == made_with
        assert PasswordHasher().verify(decoy, users.DECOY_PASSWORD)


def test_a_hash_no_verify_could_use_has_no_parameters() -> None:
    assert parameters_of(None) is None
    assert parameters_of("$argon2id$not a hash") is None
    assert parameters_of(hasher().hash("any")) == policy()


class Verifies:
    """Records each stored hash the directory verifies a password against."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hashes: list[str] = []
        verify = Directory._verify

        async def recorded(directory: Directory, stored: str, password: str) -> bool:
            self.hashes.append(stored)
            return await verify(directory, stored, password)
        monkeypatch.setattr(Directory, "_verify", recorded)

    def parameters(self) -> list[Parameters]:
        return [extract_parameters(h) for h in self.hashes]


def with_directory(userdb: dict[str, str], body: Callable[[Directory], Awaitable[T]]) -> T:
    """Run `body` with a directory on the test database, as the IdP's role."""
    async def main() -> T:
        pool = await asyncpg.create_pool(host=userdb["host"], database=userdb["database"], user=userdb["user"],
                                         password=userdb["password"], min_size=1, max_size=2)
        try:
            return await body(Directory(pool, lockout_attempts=100, lockout_seconds=1))
        finally:
            await pool.close()
    return asyncio.run(main())


def test_an_unknown_user_costs_a_verify_with_the_stored_parameters(accounts, monkeypatch) -> None:
    verifies = Verifies(monkeypatch)

    async def body(directory: Directory) -> tuple[object, object]:
        return (await directory.check_password(STRANGER, PASSWORD, "127.0.0.1"),
                await directory.check_password("alice", PASSWORD, "127.0.0.1"))
    unknown, alice = with_directory(accounts, body)
    assert unknown is None and alice is not None
    # Both were verified against a hash made with userdb_user's policy: the
    # decoy for the unknown user, alice's own hash for her.
    decoy, stored = verifies.parameters()
    assert decoy == stored == policy()
    assert verifies.hashes[0] != verifies.hashes[1]


def test_the_decoy_follows_the_parameters_of_the_newest_hash(accounts, monkeypatch) -> None:
    verifies = Verifies(monkeypatch)

    async def body(directory: Directory) -> None:
        await directory.check_password(STRANGER, PASSWORD, "127.0.0.1")
        local_servers.add_user(accounts, "erin", OTHER.hash(PASSWORD))
        try:
            await directory.check_password(STRANGER, PASSWORD, "127.0.0.1")
        finally:
            local_servers.remove_user(accounts, "erin")
        await directory.check_password(STRANGER, PASSWORD, "127.0.0.1")
    with_directory(accounts, body)
    assert verifies.parameters() == [policy(), extract_parameters(OTHER.hash("any")), policy()]


class OnePool:
    """A pool whose database has one user-less credential table: `newest` is
    the only hash stored (or none), and no user name is known."""

    def __init__(self, newest: str | None) -> None:
        self.newest = newest
        self.audited: list[tuple[object, ...]] = []

    async def fetchrow(self, query: str, *args: object) -> None:
        return None

    async def fetchval(self, query: str, *args: object) -> str | None:
        assert query == users.NEWEST_HASH
        return self.newest

    async def execute(self, query: str, *args: object) -> None:
        self.audited.append(args)


def test_the_decoy_is_made_before_the_first_unknown_user(monkeypatch) -> None:
    directory = Directory(OnePool(OTHER.hash("any")), lockout_attempts=5, lockout_seconds=1)
    asyncio.run(directory.prepare())

    def made_during_a_sign_in(parameters: Parameters) -> str:
        raise AssertionError("the decoy was made while a user waited")
    monkeypatch.setattr(users, "decoy_like", made_during_a_sign_in)
    assert asyncio.run(directory.check_password(STRANGER, PASSWORD, "127.0.0.1")) is None


def test_with_no_hash_stored_every_user_is_refused_alike(monkeypatch) -> None:
    verifies = Verifies(monkeypatch)
    pool = OnePool(None)
    directory = Directory(pool, lockout_attempts=5, lockout_seconds=1)
    assert asyncio.run(directory.check_password(STRANGER, PASSWORD, "127.0.0.1")) is None
    assert verifies.hashes == []
    assert pool.audited[0][:3] == (STRANGER, "login.password", "failure")
