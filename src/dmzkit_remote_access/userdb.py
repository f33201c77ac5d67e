"""The user database (role userdb) as every service that checks passwords
against it reads it: the collection's one password-check policy. Attempts
are counted before their password is checked and lock the account for a
while; an unknown user or a locked account is checked against a decoy made
with the stored hashes' own Argon2 parameters, so a refusal takes as long as
a wrong password; hashes beyond the bounds are never checked; every
sign-in, good or bad, goes to the audit log. The IdP and AAA's password
check are the same Directory, read with the `authn` privilege.

A device's account (device auto-login) has a password the registration
service made, random, of 128 bits or more: its hash is its SHA-256
(`$sha256$`), checked in microseconds, and failures never lock it, since
guessing it is hopeless; a refusal of it is quicker than a person's, which
tells only that the name is a device's."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass

import asyncpg

from argon2 import Parameters, PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHash, VerificationError

# Bounds on the Argon2 parameters of a hash the IdP checks against, well
# above userdb_user's policy (t=3, 64 MiB, 4 lanes): a corrupt or hostile
# stored hash must not make a check, or the decoy, take the host's memory.
# memory_cost in KiB: 256 MiB.
MAX_PARAMETERS = {"time_cost": 8, "memory_cost": 262144, "parallelism": 8, "hash_len": 64, "salt_len": 64}

# A device password's hash (migration 0005).
DEVICE_HASH = re.compile(r"\$sha256\$[0-9a-f]{64}")
# A person's password hash written last: made with the parameters hashes
# are made with now.
NEWEST_HASH = """
SELECT password_hash FROM credentials WHERE password_hash LIKE '$argon2id$%' ORDER BY changed_at DESC LIMIT 1
"""
# Counts the attempt as failed before its password is checked, and only if
# the account is not locked, in one statement: concurrent attempts, in this
# process or another IdP's, queue on the row and each sees the others'
# counts, so no more than the lockout's number ($2) are ever checked before
# the lock, which the last of them sets at once (a right password lifts it).
# Every attempt, whatever name it gives, costs this one query before its
# check; `newest` is the hash the decoy takes its parameters from.
TAKE = f"""
WITH account AS (
    SELECT c.user_id, c.password_hash FROM credentials c JOIN users u ON u.id = c.user_id
    WHERE u.username = $1 AND u.enabled
), taken AS (
    UPDATE credentials c SET failed_attempts = c.failed_attempts + 1,
           locked_until = CASE WHEN c.failed_attempts + 1 >= $2 AND c.password_hash LIKE '$argon2id$%'
                               THEN now() + make_interval(secs => $3) END
    FROM account a
    WHERE c.user_id = a.user_id AND (c.locked_until IS NULL OR c.locked_until <= now())
    RETURNING c.user_id
)
SELECT a.user_id, a.password_hash, t.user_id IS NOT NULL AS taken, ({NEWEST_HASH}) AS newest
FROM (VALUES (1)) AS one LEFT JOIN account a ON true LEFT JOIN taken t ON true
"""
SUCCEEDED = "UPDATE credentials SET failed_attempts = 0, locked_until = NULL WHERE user_id = $1"
AUDIT = "INSERT INTO audit_log (subject, event, outcome, source, detail) VALUES ($1, $2, $3, $4::inet, $5::jsonb)"
DECOY_PASSWORD = "decoy password, never matched"


def parameters_of(stored: str | None) -> Parameters | None:
    """The Argon2 parameters of a stored hash; None for no hash, or for one
    that no verify can use either (it is refused at once)."""
    if stored is None:
        return None
    try:
        return extract_parameters(stored)
    except InvalidHash:
        return None


def bounded(parameters: Parameters) -> Parameters:
    """`parameters`, each no higher than its bound in MAX_PARAMETERS."""
    limits = {name: min(getattr(parameters, name), most) for name, most in MAX_PARAMETERS.items()}
    return Parameters(type=parameters.type, version=parameters.version, **limits)


def device_hash(password: str) -> str:
    """The stored hash of a device's password."""
    return "$sha256$" + hashlib.sha256(password.encode(errors="surrogateescape")).hexdigest()


def checkable(stored: str) -> bool:
    """Whether a stored hash is one to check a password against: a device
    password's, or a valid Argon2 hash within the bounds."""
    if DEVICE_HASH.fullmatch(stored):
        return True
    parameters = parameters_of(stored)
    return parameters is not None and bounded(parameters) == parameters


def decoy_like(parameters: Parameters) -> str:
    """A hash of a password nobody has, made with `parameters`: verifying
    against it costs what verifying against a hash made with them costs."""
    return PasswordHasher(time_cost=parameters.time_cost, memory_cost=parameters.memory_cost,
                          parallelism=parameters.parallelism, hash_len=parameters.hash_len,
                          salt_len=parameters.salt_len, type=parameters.type).hash(DECOY_PASSWORD)


class QuietConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection the pool does not reset at each release: a
    session of ours sets nothing that the reset (advisory locks, cursors,
    LISTEN, SET) would clear, and each reset is one more round trip per
    query taken from the pool. An open transaction is still rolled back
    (asyncpg adds the ROLLBACK itself). asyncpg 0.27, Debian 12's, has no
    public switch for this (0.28's Pool `reset` argument)."""

    def _get_reset_query(self) -> str:
        return ""


class Decoy:
    """The decoy for the parameters of the newest stored hash, made again
    when they change. `stale` is cheap; `make` costs one hash."""

    def __init__(self) -> None:
        self._made: tuple[Parameters, str] | None = None

    def stale(self, newest: str | None) -> Parameters | None:
        """The parameters a decoy must be made with first, or None when the
        one made fits (or there is no hash to match)."""
        parameters = parameters_of(newest)
        if parameters is None:
            return None
        wanted = bounded(parameters)
        made = self._made
        return None if made is not None and made[0] == wanted else wanted

    def make(self, parameters: Parameters) -> None:
        self._made = (parameters, decoy_like(parameters))

    def current(self, newest: str | None) -> str | None:
        """The decoy made for `newest` (after `stale` and `make`); None when
        there is no hash to match: no user has a password, so every attempt
        takes the same way."""
        made = self._made
        return None if made is None or parameters_of(newest) is None else made[1]


log = logging.getLogger("dmzkit.userdb")

# Each check holds its hash's memory (64 MiB with userdb_user's parameters)
# while it runs: a bounded number at a time keeps a burst of sign-ins from
# exhausting memory or starving the loop.
CONCURRENT_CHECKS = 2
# Sign-ins one address may have in this process at once, waiting or being
# checked: it may fill the hashing slots, but every other address waits for
# one round of them at most. More than one: the users behind one NAT, or
# the gateway's portal, share an address.
SOURCE_IN_FLIGHT = CONCURRENT_CHECKS

ACCOUNT = """
SELECT u.username, u.display_name, u.email,
       coalesce(array_agg(g.name ORDER BY g.name) FILTER (WHERE g.name IS NOT NULL), '{}') AS groups
FROM users u
LEFT JOIN memberships m ON m.user_id = u.id
LEFT JOIN groups g ON g.id = m.group_id
WHERE u.username = $1 AND u.enabled
GROUP BY u.id
"""


@dataclass(frozen=True)
class Account:
    username: str
    display_name: str
    email: str | None
    groups: tuple[str, ...]

    def attributes(self) -> dict[str, list[str]]:
        values = {"uid": [self.username], "displayName": [self.display_name], "groups": list(self.groups)}
        if self.email:
            values["mail"] = [self.email]
        return {k: v for k, v in values.items() if v and v != [""]}


class Directory:
    def __init__(self, pool: asyncpg.Pool | asyncpg.Connection, lockout_attempts: int, lockout_seconds: float,
                 event: str = "login.password") -> None:
        self.pool = pool
        # The audit log's event for a password check (AAA's differs from the IdP's).
        self.event = event
        self.lockout_attempts = lockout_attempts
        self.lockout_seconds = lockout_seconds
        # Verifying reads the parameters from the hash; this hasher makes none.
        self.hasher = PasswordHasher()
        self.checks = asyncio.Semaphore(CONCURRENT_CHECKS)
        # Sign-ins under way in this process, by the name given and by address.
        self.names: set[str] = set()
        self.sources: Counter[str | None] = Counter()
        # Checked against when the user is unknown or the account locked, so
        # that a refusal takes as long as a wrong password.
        self.decoy = Decoy()

    async def prepare(self) -> None:
        """Make the decoy now, so that the first unknown user is not the one
        who waits for it."""
        await self._decoy_like(await self.pool.fetchval(NEWEST_HASH))

    async def _decoy_like(self, newest: str | None) -> str | None:
        wanted = self.decoy.stale(newest)
        if wanted is not None:
            async with self.checks:
                await asyncio.to_thread(self.decoy.make, wanted)
        return self.decoy.current(newest)

    async def account(self, username: str) -> Account | None:
        """The user if they exist and may sign in."""
        row = await self.pool.fetchrow(ACCOUNT, username)
        if row is None:
            return None
        return Account(row["username"], row["display_name"], row["email"], tuple(row["groups"]))

    async def _verify(self, stored: str, password: str) -> bool:
        if DEVICE_HASH.fullmatch(stored):
            return hmac.compare_digest(device_hash(password), stored)
        async with self.checks:
            try:
                return await asyncio.to_thread(self.hasher.verify, stored, password)
            except (VerificationError, InvalidHash):
                return False

    async def check_password(self, username: str, password: str, source: str | None,
                             detail: dict[str, str] | None = None) -> Account | None:
        """The account if the password is right and the account is neither
        disabled nor locked; None otherwise, for whatever reason (the audit
        log has the reason, the user does not)."""
        # One sign-in at a time per name and a few per address in this
        # process; the others are refused at once, before any query or hash,
        # so a flood costs no checks and queues ahead of nobody. A refusal is
        # audited as busy, not counted against the account: no password was
        # tried on it. Names count whether they exist or not, so a refusal
        # says nothing about them. `detail` goes into every audit record.
        if username in self.names or self.sources[source] >= SOURCE_IN_FLIGHT:
            await self.audit(username, self.event, False, source, {**(detail or {}), "reason": "busy"})
            return None
        self.names.add(username)
        self.sources[source] += 1
        try:
            return await self._check_password(username, password, source, detail or {})
        finally:
            self.names.discard(username)
            self.sources[source] -= 1
            if not self.sources[source]:
                del self.sources[source]

    async def _check_password(self, username: str, password: str, source: str | None,
                              detail: dict[str, str]) -> Account | None:
        row = await self.pool.fetchrow(TAKE, username, self.lockout_attempts, self.lockout_seconds)
        # Only an attempt counted by TAKE is checked against the user's hash;
        # the others (unknown user, locked account, a hash beyond the bounds)
        # against the decoy, whatever its outcome, so that they take as long.
        stored = row["password_hash"] if row["taken"] and checkable(row["password_hash"]) else None
        against = stored or await self._decoy_like(row["newest"])
        good = against is not None and await self._verify(against, password)
        if stored is None:
            if row["user_id"] is None:
                reason = "unknown or disabled user"
            elif row["taken"]:
                log.error("the password hash of %s is not one to check against", username)
                reason = "unusable hash"
            else:
                reason = "locked"
            await self.audit(username, self.event, False, source, {**detail, "reason": reason})
            return None
        if not good:
            await self.audit(username, self.event, False, source, {**detail, "reason": "wrong password"})
            return None
        await self.pool.execute(SUCCEEDED, row["user_id"])
        await self.audit(username, self.event, True, source, detail)
        return await self.account(username)

    async def audit(self, subject: str, event: str, success: bool, source: str | None, detail: dict) -> None:
        try:
            await self.pool.execute(AUDIT, subject, event, "success" if success else "failure", source,
                                    json.dumps(detail, sort_keys=True))
        except asyncpg.PostgresError as e:
            # The sign-in already happened or failed; losing its record is logged, never hidden.
            log.error("audit record %s for %s not written: %s", event, subject, e)
