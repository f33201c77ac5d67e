"""Who the users are: the audited user database (role userdb), read with the
`authn` privilege. Passwords are checked against their Argon2id hashes,
failed attempts are counted and lock the account for a while, and every
sign-in, good or bad, goes to the audit log."""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

import asyncpg
from argon2 import Parameters, PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHash, VerificationError

log = logging.getLogger("dmzkit.sso.users")

# Each check holds its hash's memory (64 MiB with userdb_user's parameters)
# while it runs: a bounded number at a time keeps a burst of sign-ins from
# exhausting memory or starving the loop.
CONCURRENT_CHECKS = 2

ACCOUNT = """
SELECT u.username, u.display_name, u.email,
       coalesce(array_agg(g.name ORDER BY g.name) FILTER (WHERE g.name IS NOT NULL), '{}') AS groups
FROM users u
LEFT JOIN memberships m ON m.user_id = u.id
LEFT JOIN groups g ON g.id = m.group_id
WHERE u.username = $1 AND u.enabled
GROUP BY u.id
"""
CREDENTIALS = """
SELECT c.user_id, c.password_hash, coalesce(c.locked_until > now(), false) AS locked
FROM credentials c JOIN users u ON u.id = c.user_id
WHERE u.username = $1 AND u.enabled
"""
FAILED = """
UPDATE credentials SET failed_attempts = failed_attempts + 1,
       locked_until = CASE WHEN failed_attempts + 1 >= $2 THEN now() + make_interval(secs => $3) END
WHERE user_id = $1
"""
SUCCEEDED = "UPDATE credentials SET failed_attempts = 0, locked_until = NULL WHERE user_id = $1 AND failed_attempts > 0"
AUDIT = "INSERT INTO audit_log (subject, event, outcome, source, detail) VALUES ($1, $2, $3, $4::inet, $5::jsonb)"
# The hash written last: made with the parameters hashes are made with now.
NEWEST_HASH = "SELECT password_hash FROM credentials ORDER BY changed_at DESC LIMIT 1"
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


def decoy_like(parameters: Parameters) -> str:
    """A hash of a password nobody has, made with `parameters`: verifying
    against it costs what verifying against a hash made with them costs."""
    return PasswordHasher(time_cost=parameters.time_cost, memory_cost=parameters.memory_cost,
                          parallelism=parameters.parallelism, hash_len=parameters.hash_len,
                          salt_len=parameters.salt_len, type=parameters.type).hash(DECOY_PASSWORD)


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
    def __init__(self, pool: asyncpg.Pool, lockout_attempts: int, lockout_seconds: float) -> None:
        self.pool = pool
        self.lockout_attempts = lockout_attempts
        self.lockout_seconds = lockout_seconds
        # Verifying reads the parameters from the hash; this hasher makes none.
        self.hasher = PasswordHasher()
        self.checks = asyncio.Semaphore(CONCURRENT_CHECKS)
        # Checked against when the user is unknown, so that an unknown user
        # takes as long to refuse as a wrong password. The IdP has no Argon2
        # parameters of its own: the module userdb_user makes every stored
        # hash, and the decoy is made with the parameters of the newest one.
        self._decoy: tuple[Parameters, str] | None = None

    async def prepare(self) -> None:
        """Make the decoy now, so that the first unknown user is not the one
        who waits for it."""
        await self._decoy_hash()

    async def _decoy_hash(self) -> str | None:
        """A decoy with the parameters of the newest stored hash, made again
        when they change; None when there is no hash to match (no user has a
        password, so every attempt takes this same way)."""
        wanted = parameters_of(await self.pool.fetchval(NEWEST_HASH))
        if wanted is None:
            return None
        if self._decoy is None or self._decoy[0] != wanted:
            async with self.checks:
                self._decoy = (wanted, await asyncio.to_thread(decoy_like, wanted))
        return self._decoy[1]

    async def account(self, username: str) -> Account | None:
        """The user if they exist and may sign in."""
        row = await self.pool.fetchrow(ACCOUNT, username)
        if row is None:
            return None
        return Account(row["username"], row["display_name"], row["email"], tuple(row["groups"]))

    async def _verify(self, stored: str, password: str) -> bool:
        async with self.checks:
            try:
                return await asyncio.to_thread(self.hasher.verify, stored, password)
            except (VerificationError, InvalidHash):
                return False

    async def check_password(self, username: str, password: str, source: str) -> Account | None:
        """The account if the password is right and the account is neither
        disabled nor locked; None otherwise, for whatever reason (the audit
        log has the reason, the user does not)."""
        row = await self.pool.fetchrow(CREDENTIALS, username)
        # An unknown user costs one query more before the verify, as a wrong
        # password costs one (its count) after it.
        stored = row["password_hash"] if row else await self._decoy_hash()
        good = stored is not None and await self._verify(stored, password)
        if row is None:
            await self.audit(username, "login.password", False, source, {"reason": "unknown or disabled user"})
            return None
        if row["locked"]:
            await self.audit(username, "login.password", False, source, {"reason": "locked"})
            return None
        if not good:
            await self.pool.execute(FAILED, row["user_id"], self.lockout_attempts, self.lockout_seconds)
            await self.audit(username, "login.password", False, source, {"reason": "wrong password"})
            return None
        await self.pool.execute(SUCCEEDED, row["user_id"])
        await self.audit(username, "login.password", True, source, {})
        return await self.account(username)

    async def audit(self, subject: str, event: str, success: bool, source: str | None, detail: dict) -> None:
        try:
            await self.pool.execute(AUDIT, subject, event, "success" if success else "failure", source,
                                    json.dumps(detail, sort_keys=True))
        except asyncpg.PostgresError as e:
            # The sign-in already happened or failed; losing its record is logged, never hidden.
            log.error("audit record %s for %s not written: %s", event, subject, e)
