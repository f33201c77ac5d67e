"""The IdP's directory refuses an unknown user after a verify that costs what
a real one costs: against a decoy made with the Argon2 parameters of the
stored hashes, which the module userdb_user makes (the collection's one
policy), within bounds. The IdP has no parameters of its own that could
drift from it. Parallel guesses get no more checks than the lockout allows,
whatever the number of IdP processes, and a flood from one address or on one
account stalls nobody else's sign-in."""
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
from dmzkit_remote_access import userdb
from dmzkit_remote_access.userdb import Account, Directory, bounded, checkable, decoy_like, parameters_of

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
        assert PasswordHasher().verify(decoy, userdb.DECOY_PASSWORD)


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


def with_directory(userdb: dict[str, str], body: Callable[[Directory], Awaitable[T]], lockout_attempts: int = 100,
                   lockout_seconds: float = 1) -> T:
    """Run `body` with a directory on the test database, as the IdP's role."""
    async def main() -> T:
        pool = await asyncpg.create_pool(host=userdb["host"], database=userdb["database"], user=userdb["user"],
                                         password=userdb["password"], min_size=1, max_size=2)
        try:
            return await body(Directory(pool, lockout_attempts, lockout_seconds))
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
    """A pool whose database has `newest` as the hash written last (or no
    hash), and `stored` as the hash of any name asked for (or no such user);
    every attempt is counted."""

    def __init__(self, newest: str | None, stored: str | None = None) -> None:
        self.newest = newest
        self.stored = stored
        self.audited: list[tuple[object, ...]] = []

    async def fetchrow(self, query: str, *args: object) -> dict[str, object]:
        assert query == userdb.TAKE
        known = self.stored is not None
        return {"user_id": 1 if known else None, "password_hash": self.stored, "taken": known, "newest": self.newest}

    async def fetchval(self, query: str, *args: object) -> str | None:
        assert query == userdb.NEWEST_HASH
        return self.newest

    async def execute(self, query: str, *args: object) -> None:
        self.audited.append(args)


def test_the_decoy_is_made_before_the_first_unknown_user(monkeypatch) -> None:
    directory = Directory(OnePool(OTHER.hash("any")), lockout_attempts=5, lockout_seconds=1)
    asyncio.run(directory.prepare())

    def made_during_a_sign_in(parameters: Parameters) -> str:
        raise AssertionError("the decoy was made while a user waited")
    monkeypatch.setattr(userdb, "decoy_like", made_during_a_sign_in)
    assert asyncio.run(directory.check_password(STRANGER, PASSWORD, "127.0.0.1")) is None


def test_with_no_hash_stored_every_user_is_refused_alike(monkeypatch) -> None:
    verifies = Verifies(monkeypatch)
    pool = OnePool(None)
    directory = Directory(pool, lockout_attempts=5, lockout_seconds=1)
    assert asyncio.run(directory.check_password(STRANGER, PASSWORD, "127.0.0.1")) is None
    assert verifies.hashes == []
    assert pool.audited[0][:3] == (STRANGER, "login.password", "failure")


# -- concurrency: the lockout holds, and a flood stalls nobody else ------------------

ATTACK_LOCKOUT = 5
# IdP processes, each with a Directory of its own, on the one database.
PROCESSES = 20


superuser_rows = local_servers.superuser_rows


def stored_hash(userdb: dict[str, str], name: str) -> str:
    (stored,), = superuser_rows(userdb, "SELECT c.password_hash FROM dmzkit.credentials c JOIN dmzkit.users u "
                                        "ON u.id = c.user_id WHERE u.username = $1", name)
    return stored


def reasons(userdb: dict[str, str], subject: str) -> dict[str, int]:
    rows = superuser_rows(userdb, "SELECT detail->>'reason', count(*) FROM dmzkit.audit_log WHERE subject = $1 "
                                  "GROUP BY 1", subject)
    return {reason or "success": count for reason, count in rows}


def with_directories(userdb: dict[str, str], count: int, body: Callable[[list[Directory]], Awaitable[T]]) -> T:
    """Run `body` with `count` directories, as that many IdP processes would
    have, on one pool as the IdP's role."""
    async def main() -> T:
        pool = await asyncpg.create_pool(host=userdb["host"], database=userdb["database"], user=userdb["user"],
                                         password=userdb["password"], min_size=1, max_size=PROCESSES)
        try:
            directories = [Directory(pool, lockout_attempts=ATTACK_LOCKOUT, lockout_seconds=60) for _ in range(count)]
            for directory in directories:
                await directory.prepare()
            return await body(directories)
        finally:
            await pool.close()
    return asyncio.run(main())


def test_parallel_guesses_on_one_account_get_no_more_than_the_lockout_allows(accounts, monkeypatch) -> None:
    """200 wrong passwords at once, spread over several IdP processes: only
    ATTACK_LOCKOUT of them are checked against the account's hash and
    counted, then the account is locked, even for the right password."""
    verifies = Verifies(monkeypatch)
    # A cheap hash, so that the old code's 200 checks did not take minutes.
    stored = OTHER.hash(PASSWORD)
    local_servers.add_user(accounts, "trudy", stored)

    async def body(directories: list[Directory]) -> Account | None:
        await asyncio.gather(*(directories[i % PROCESSES].check_password("trudy", f"guess {i}", f"198.51.100.{i}")
                               for i in range(200)))
        return await directories[0].check_password("trudy", PASSWORD, "198.51.100.250")
    try:
        after_lock = with_directories(accounts, PROCESSES, body)
        guesses = verifies.hashes.count(stored)
        (counted, locked), = superuser_rows(
            accounts, "SELECT c.failed_attempts, c.locked_until > now() FROM dmzkit.credentials c "
                      "JOIN dmzkit.users u ON u.id = c.user_id WHERE u.username = 'trudy'")
        audited = reasons(accounts, "trudy")
    finally:
        local_servers.remove_user(accounts, "trudy")
    assert guesses <= ATTACK_LOCKOUT
    assert counted == ATTACK_LOCKOUT and locked
    assert after_lock is None
    # Every attempt is audited. Each process let one of its attempts in and
    # refused the others at once; those let in past the lockout, and the
    # right password after it, were checked against the decoy.
    assert audited == {"wrong password": ATTACK_LOCKOUT, "locked": PROCESSES - ATTACK_LOCKOUT + 1,
                       "busy": 200 - PROCESSES}
    assert len(verifies.hashes) == PROCESSES + 1


def test_a_flood_from_one_source_does_not_stall_another_source(accounts, monkeypatch) -> None:
    """200 wrong sign-ins at once from one address, for as many names: alice,
    from another address, waits for one round of the hashing slots at most,
    and the flood's surplus is refused without hashing."""
    verifies = Verifies(monkeypatch)
    # The newest hash, cheap: the decoy the unknown names are checked against.
    local_servers.add_user(accounts, "victor", OTHER.hash(PASSWORD))

    async def body(directories: list[Directory]) -> Account | None:
        flood = [directories[0].check_password(f"nobody-{i}", "guess", "203.0.113.66") for i in range(200)]
        *refused, alice = await asyncio.gather(*flood, directories[0].check_password("alice", PASSWORD, "192.0.2.7"))
        assert refused == [None] * 200
        return alice
    try:
        alice = with_directories(accounts, 1, body)
    finally:
        local_servers.remove_user(accounts, "victor")
    assert alice is not None and alice.username == "alice"
    assert verifies.hashes.index(stored_hash(accounts, "alice")) <= userdb.CONCURRENT_CHECKS
    assert len(verifies.hashes) == userdb.SOURCE_IN_FLIGHT + 1


def test_a_flood_on_one_account_does_not_stall_another_account(accounts, monkeypatch) -> None:
    """200 wrong passwords at once for one account, from as many addresses:
    at most one is checked ahead of alice's sign-in, the rest are refused
    at once."""
    verifies = Verifies(monkeypatch)
    stored = OTHER.hash(PASSWORD)
    local_servers.add_user(accounts, "wendy", stored)

    async def body(directories: list[Directory]) -> Account | None:
        flood = [directories[0].check_password("wendy", f"guess {i}", f"198.51.100.{i}") for i in range(200)]
        *refused, alice = await asyncio.gather(*flood, directories[0].check_password("alice", PASSWORD, "192.0.2.7"))
        assert refused == [None] * 200
        return alice
    try:
        alice = with_directories(accounts, 1, body)
        audited = reasons(accounts, "wendy")
    finally:
        local_servers.remove_user(accounts, "wendy")
    assert alice is not None and alice.username == "alice"
    assert verifies.hashes.index(stored_hash(accounts, "alice")) <= 1
    assert verifies.hashes.count(stored) == 1
    assert audited == {"wrong password": 1, "busy": 199}


# -- the bounds on Argon2 parameters ---------------------------------------------------

# A hash as a corrupt or hostile row could hold it: 4 GiB, 100 passes, 64 lanes.
HOSTILE = "$argon2id$v=19$m=4194304,t=100,p=64$" + OTHER.hash("any").split("$", 4)[4]


def test_the_policy_is_within_the_bounds_and_a_hostile_hash_is_not() -> None:
    assert bounded(policy()) == policy() and checkable(hasher().hash("any"))
    assert bounded(extract_parameters(OTHER.hash("any"))) == extract_parameters(OTHER.hash("any"))
    hostile = parameters_of(HOSTILE)
    assert hostile is not None and hostile.memory_cost == 4194304 and not checkable(HOSTILE)
    most = bounded(hostile)
    assert (most.time_cost, most.memory_cost, most.parallelism) == (8, 262144, 8)
    assert (most.type, most.hash_len, most.salt_len) == (hostile.type, hostile.hash_len, hostile.salt_len)


def test_the_decoy_of_a_hostile_newest_hash_is_bounded(monkeypatch) -> None:
    made: list[Parameters] = []

    def recorded(parameters: Parameters) -> str:
        made.append(parameters)
        return OTHER.hash(userdb.DECOY_PASSWORD)
    monkeypatch.setattr(userdb, "decoy_like", recorded)
    directory = Directory(OnePool(HOSTILE), lockout_attempts=5, lockout_seconds=1)
    asyncio.run(directory.prepare())
    assert made == [bounded(parameters_of(HOSTILE))]


def test_a_stored_hash_beyond_the_bounds_is_never_checked(monkeypatch) -> None:
    verifies = Verifies(monkeypatch)
    pool = OnePool(OTHER.hash("any"), stored=HOSTILE)
    directory = Directory(pool, lockout_attempts=5, lockout_seconds=1)
    assert asyncio.run(directory.check_password("hostile", PASSWORD, "127.0.0.1")) is None
    # Checked against the decoy instead, so that it takes as long as any refusal.
    assert verifies.hashes == [directory.decoy.current(OTHER.hash("any"))]
    assert pool.audited[0][:3] == ("hostile", "login.password", "failure")
    assert '"unusable hash"' in pool.audited[0][4]


def test_a_right_password_resets_the_count_and_the_lock_ends(accounts) -> None:
    local_servers.add_user(accounts, "uma", OTHER.hash(PASSWORD))

    async def body(directory: Directory) -> tuple[list[bool], list[bool]]:
        async def signs_in(password: str) -> bool:
            return await directory.check_password("uma", password, "127.0.0.1") is not None
        locked = [await signs_in(p) for p in ("wrong", PASSWORD, "wrong", "wrong", PASSWORD)]
        await asyncio.sleep(0.6)
        return locked, [await signs_in(p) for p in (PASSWORD, "wrong", PASSWORD)]
    try:
        locked, after = with_directory(accounts, body, lockout_attempts=2, lockout_seconds=0.5)
    finally:
        local_servers.remove_user(accounts, "uma")
    # Right after a wrong one; two wrong lock it, even for the right one;
    # when the lock ends the right one opens it and the count starts again.
    assert locked == [False, True, False, False, False]
    assert after == [True, False, True]
