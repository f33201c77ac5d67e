"""AAA's password check: what FreeRADIUS asks for a password it has not
found right lately (its own site remembers the ones it has, and answers
those without asking).

It is the IdP's own check (`..userdb.Directory`): each attempt counted
before its Argon2id check, the shared lockout, a decoy for unknown users and
locked accounts, every outcome in the audit log (event `aaa.password`, with
the NAS). rlm_python3 calls into Python one request at a time; the check runs
on an event loop of its own in a thread started here, and each check opens
its own connection, which reads the CRL afresh (a check costs an Argon2 hash
anyway)."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ..userdb import Directory
from .database import connect
from .settings import Settings

EVENT = "aaa.password"


class PasswordCheck:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.directory = Directory(None, settings.lockout_attempts, settings.lockout_seconds,  # type: ignore[arg-type]
                                   event=EVENT)
        self._thread = threading.Thread(target=self.loop.run_forever, name="dmzkit-aaa", daemon=True)
        self._thread.start()
        self._one = asyncio.run_coroutine_threadsafe(self._lock(), self.loop).result()

    @staticmethod
    async def _lock() -> asyncio.Lock:
        return asyncio.Lock()

    @asynccontextmanager
    async def _directory(self) -> AsyncIterator[Directory]:
        """The Directory on a connection of its own, one check at a time."""
        async with self._one:
            connection = await connect(self.settings, "dmzkit-aaa")
            try:
                self.directory.pool = connection
                yield self.directory
            finally:
                await connection.close()

    async def _checked(self, username: str, password: str, source: str | None, nas: str) -> bool:
        async with self._directory() as directory:
            return await directory.check_password(username, password, source, {"nas": nas}) is not None

    async def _prepare(self) -> None:
        async with self._directory() as directory:
            await directory.prepare()

    def prepare(self) -> None:
        """Make the decoy now, so that the first unknown user is not the one who waits for it."""
        asyncio.run_coroutine_threadsafe(self._prepare(), self.loop).result(self.settings.timeout)

    def check(self, username: str, password: str, source: str | None, nas: str) -> bool:
        """Whether the password is the user's and the account may sign in;
        raises on a database failure or when the check takes too long."""
        future = asyncio.run_coroutine_threadsafe(self._checked(username, password, source, nas), self.loop)
        return future.result(self.settings.timeout)
