"""The user database (role userdb) as every service that checks passwords
against it reads it: the collection's one password-check policy. Attempts
are counted before their password is checked and lock the account for a
while; an unknown user or a locked account is checked against a decoy made
with the stored hashes' own Argon2 parameters, so a refusal takes as long as
a wrong password; hashes beyond the bounds are never checked. The IdP
(asyncpg) and AAA (psycopg2, inside FreeRADIUS) run the same statements."""
from __future__ import annotations

import re
import threading

from argon2 import Parameters, PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHash

# Bounds on the Argon2 parameters of a hash the IdP checks against, well
# above userdb_user's policy (t=3, 64 MiB, 4 lanes): a corrupt or hostile
# stored hash must not make a check, or the decoy, take the host's memory.
# memory_cost in KiB: 256 MiB.
MAX_PARAMETERS = {"time_cost": 8, "memory_cost": 262144, "parallelism": 8, "hash_len": 64, "salt_len": 64}

# The hash written last: made with the parameters hashes are made with now.
NEWEST_HASH = "SELECT password_hash FROM credentials ORDER BY changed_at DESC LIMIT 1"
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
           locked_until = CASE WHEN c.failed_attempts + 1 >= $2 THEN now() + make_interval(secs => $3) END
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


def checkable(stored: str) -> bool:
    """Whether a stored hash is one to check a password against: valid, and
    within the bounds."""
    parameters = parameters_of(stored)
    return parameters is not None and bounded(parameters) == parameters


def decoy_like(parameters: Parameters) -> str:
    """A hash of a password nobody has, made with `parameters`: verifying
    against it costs what verifying against a hash made with them costs."""
    return PasswordHasher(time_cost=parameters.time_cost, memory_cost=parameters.memory_cost,
                          parallelism=parameters.parallelism, hash_len=parameters.hash_len,
                          salt_len=parameters.salt_len, type=parameters.type).hash(DECOY_PASSWORD)


class Decoy:
    """The decoy for the parameters of the newest stored hash, made again
    when they change. `stale` is cheap; `make` costs one hash."""

    def __init__(self) -> None:
        self._made: tuple[Parameters, str] | None = None
        self._lock = threading.Lock()

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
        decoy = decoy_like(parameters)
        with self._lock:
            self._made = (parameters, decoy)

    def current(self, newest: str | None) -> str | None:
        """The decoy for `newest` (made now if it must be); None when there
        is no hash to match: no user has a password, so every attempt takes
        the same way."""
        wanted = self.stale(newest)
        if wanted is not None:
            self.make(wanted)
        made = self._made
        return None if made is None or parameters_of(newest) is None else made[1]


def pyformat(statement: str) -> str:
    """`statement` with asyncpg's $n placeholders in psycopg2's %(n)s style;
    its parameters then go as {"1": ..., "2": ...}."""
    return re.sub(r"\$(\d+)", r"%(\1)s", statement)
