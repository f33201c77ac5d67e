"""The password check AAA answers with, against the user database.

The collection's one password policy (`..userdb`): attempts are counted
before their Argon2id check and lock the account for a while, unknown users
and locked accounts are checked against a decoy, every outcome is audited.
What AAA adds is speed for the users who are already in: a password once
checked against a stored hash is remembered for a while, as an HMAC under a
key made when the process starts, bound to that stored hash, so the next
Access-Request of the same user (the IM login after the tunnel, a
reconnect) costs one query and no Argon2 check. A changed password, a
disabled or locked account is seen at once: the stored hash and the
account's state are read on every request.

Synchronous: FreeRADIUS calls it from its own worker threads. Each thread
has its own database connection; a few Argon2 checks run at once, and an
attempt that finds them all busy is refused at once instead of queueing
ahead of the users the remembered passwords let through."""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHash, VerificationError

from ..userdb import AUDIT, NEWEST_HASH, SUCCEEDED, TAKE, Decoy, checkable, pyformat
from .settings import Profile, Settings

log = logging.getLogger("dmzkit.aaa")

# The account as it is now: read on every request, before anything else.
READ = """
SELECT u.id AS user_id, c.password_hash, c.failed_attempts,
       coalesce(c.locked_until > now(), false) AS locked,
       coalesce(array_agg(g.name) FILTER (WHERE g.name IS NOT NULL), '{}') AS groups
FROM users u
JOIN credentials c ON c.user_id = u.id
LEFT JOIN memberships m ON m.user_id = u.id
LEFT JOIN groups g ON g.id = m.group_id
WHERE u.username = $1 AND u.enabled
GROUP BY u.id, c.user_id
"""
EVENT = "aaa.access"


@dataclass(frozen=True)
class Decision:
    accepted: bool
    reason: str
    profile: Profile | None = None


class Remembered:
    """Passwords recently found right, each as an HMAC of (user, stored hash,
    password) under a key of this process: no password is kept, and a new
    stored hash makes the entry useless."""

    def __init__(self, seconds: float, entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.entries = entries
        self.clock = clock
        self._key = os.urandom(32)
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def _digest(self, username: str, stored: str, password: str) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (username, stored, password):
            data = part.encode("utf-8", "surrogateescape")
            mac.update(len(data).to_bytes(4, "big") + data)
        return mac.digest()

    def knows(self, username: str, stored: str, password: str) -> bool:
        if self.seconds <= 0:
            return False
        digest = self._digest(username, stored, password)
        with self._lock:
            item = self._items.get(username)
            if item is None:
                return False
            if item[1] <= self.clock():
                del self._items[username]
                return False
        return hmac.compare_digest(item[0], digest)

    def remember(self, username: str, stored: str, password: str) -> None:
        if self.seconds <= 0:
            return
        digest = self._digest(username, stored, password)
        with self._lock:
            self._items[username] = (digest, self.clock() + self.seconds)
            self._items.move_to_end(username)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)

    def forget(self, username: str) -> None:
        with self._lock:
            self._items.pop(username, None)


def source_of(calling_station: str | None) -> str | None:
    """The user's address from a Calling-Station-Id ("198.18.0.5",
    strongSwan's "198.18.0.5[4500]"), or None."""
    if not calling_station:
        return None
    try:
        return str(ipaddress.ip_address(calling_station.split("[", 1)[0]))
    except ValueError:
        return None


class PasswordCheck:
    def __init__(self, settings: Settings, connect: Callable[[], Any]) -> None:
        self.settings = settings
        self.connect = connect
        self.remembered = Remembered(settings.verified_seconds, settings.verified_entries)
        self.decoy = Decoy()
        self.hasher = PasswordHasher()
        self.slots = threading.BoundedSemaphore(settings.checks)
        self._names: set[str] = set()
        self._names_lock = threading.Lock()
        self._local = threading.local()

    # -- the database, one connection per FreeRADIUS thread ------------------------

    def _query(self, statement: str, *args: Any, fetch: bool = True) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None or connection.closed:
            connection = self._local.connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(pyformat(statement), {str(i): a for i, a in enumerate(args, 1)})
                return cursor.fetchone() if fetch else None
        except Exception:
            # A broken connection is not used again; the next request makes another.
            connection.close()
            raise

    def prepare(self) -> None:
        """Make the decoy now, so that the first unknown user is not the one who waits for it."""
        row = self._query(NEWEST_HASH)
        self.decoy.current(row[0] if row else None)

    def audit(self, username: str, accepted: bool, source: str | None, detail: dict[str, str]) -> None:
        try:
            self._query(AUDIT, username, EVENT, "success" if accepted else "failure", source,
                        json.dumps(detail, sort_keys=True), fetch=False)
        except Exception as e:
            # The decision stands; losing its record is logged, never hidden.
            log.error("audit record for %s not written: %s", username, e)

    # -- the decision ------------------------------------------------------------------

    def decide(self, username: str, password: str, nas: str, nas_type: str, source: str | None) -> Decision:
        decision = self._decide(username, password, nas_type)
        detail = {"nas": nas, "reason": decision.reason}
        if decision.profile is not None:
            detail["profile"] = decision.profile.name
        self.audit(username, decision.accepted, source, detail)
        return decision

    def _decide(self, username: str, password: str, nas_type: str) -> Decision:
        row = self._query(READ, username)
        if row is not None and not row[3] and self.remembered.knows(username, row[1], password):
            if row[2]:
                self._query(SUCCEEDED, row[0], fetch=False)
            return self._authorize(row[4], nas_type, "password remembered")
        if not self.slots.acquire(blocking=False):
            return Decision(False, "busy")
        try:
            with self._names_lock:
                if username in self._names:
                    return Decision(False, "busy")
                self._names.add(username)
            try:
                return self._check(username, password, nas_type, row)
            finally:
                with self._names_lock:
                    self._names.discard(username)
        finally:
            self.slots.release()

    def _check(self, username: str, password: str, nas_type: str, row: Any) -> Decision:
        taken = self._query(TAKE, username, self.settings.lockout_attempts, self.settings.lockout_seconds)
        user_id, stored, counted, newest = taken
        # As at the IdP: only an attempt TAKE counted is checked against the
        # user's hash, every other against the decoy, so that all take as long.
        usable = stored if counted and checkable(stored) else None
        against = usable or self.decoy.current(newest)
        good = against is not None and self._verify(against, password)
        if usable is None:
            if user_id is None:
                return Decision(False, "unknown or disabled user")
            return Decision(False, "locked" if not counted else "unusable hash")
        if not good:
            self.remembered.forget(username)
            return Decision(False, "wrong password")
        self._query(SUCCEEDED, user_id, fetch=False)
        self.remembered.remember(username, usable, password)
        # The groups read before the check; a user removed from one meanwhile
        # is seen at the next request.
        return self._authorize(row[4] if row is not None else [], nas_type, "password checked")

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self.hasher.verify(stored, password)
        except (VerificationError, InvalidHash):
            return False

    def _authorize(self, groups: list[str], nas_type: str, how: str) -> Decision:
        profile = self.settings.profile_of(list(groups))
        if profile is None:
            return Decision(False, "no profile")
        if nas_type == "im" and not profile.im:
            return Decision(False, "IM not allowed", profile)
        return Decision(True, how, profile)
