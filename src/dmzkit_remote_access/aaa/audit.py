"""dmzkit-aaa-audit: ship AAA's answers into the user database's audit log.

    dmzkit-aaa-audit --config FILE [--check]

FreeRADIUS appends one line per answer to a spool file (its linelog module
`dmzkit_audit`, the file locked for each line), so that no request waits for
the database. This service takes the file away and copies its records into
`audit_log` in one transaction, the way radsqlrelay does with FreeRADIUS's
SQL logs: rename the file to `<spool>.work` (FreeRADIUS then starts a new
one), lock it (a line being written is finished first), read it, copy, and
only then remove it. A failed copy keeps the file, and the next round ships
it again, so a database that is away loses nothing; radsqlrelay instead drops
a batch the database refused, waits 10 s between files, and runs the SQL it
finds in the file.
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from typing import BinaryIO
from datetime import datetime, timezone

import asyncpg

from ..config import ConfigError
from ..daemon import Notifier, service_main
from ..tls import client_context
from .settings import Settings

log = logging.getLogger("dmzkit-aaa-audit")

EVENT = "aaa.access"
COLUMNS = ("subject", "event", "outcome", "detail")
FIELDS = 7
ESCAPED = re.compile(rb"=([0-9A-F]{2})")


class BadLine(ValueError):
    """A spool line that is not a record (cut short by a full disk, say)."""


@dataclass(frozen=True)
class Answer:
    at: datetime
    outcome: str
    user: str
    nas: str
    reason: str
    profile: str

    def row(self) -> tuple[str, str, str, str]:
        detail = {"nas": self.nas, "reason": self.reason, "answered_at": self.at.isoformat()}
        if self.profile:
            detail["profile"] = self.profile
        return (self.user, EVENT, self.outcome, json.dumps(detail))


def unescape(value: bytes) -> str:
    """rlm_expr's escape undone: each =XX is the byte XX."""
    return ESCAPED.sub(lambda m: bytes([int(m.group(1), 16)]), value).decode("utf-8", "replace")


def parse(line: bytes) -> Answer:
    fields = line.rstrip(b"\n").split(b"\t")
    if len(fields) != FIELDS or fields[0] != b"1":
        raise BadLine(f"{len(fields)} fields, version {fields[0][:8]!r}")
    _, at, outcome, user, nas, reason, profile = fields
    if outcome not in (b"success", b"failure"):
        raise BadLine(f"outcome {outcome[:16]!r}")
    try:
        when = datetime.fromtimestamp(float(at), timezone.utc)
    except (ValueError, OverflowError):
        raise BadLine(f"time {at[:24]!r}") from None
    return Answer(when, outcome.decode(), unescape(user), unescape(nas), unescape(reason), unescape(profile))


def read_records(spool: BinaryIO, path: str) -> list[Answer]:
    """The records of a taken spool file; a line that is not one is logged and skipped."""
    answers = []
    for number, line in enumerate(spool, 1):
        try:
            answers.append(parse(line))
        except BadLine as e:
            log.warning("%s line %d is not a record (%s); skipped", path, number, e)
    return answers


def take(spool: str) -> str | None:
    """The file to ship now: one left from an earlier round, or the spool,
    renamed; None when there is nothing."""
    work = spool + ".work"
    if os.path.exists(work):
        return work
    try:
        if os.path.getsize(spool) == 0:
            return None
        os.rename(spool, work)
    except FileNotFoundError:
        return None
    return work


class Shipper:
    def __init__(self, settings: Settings) -> None:
        if not settings.audit_spool:
            raise ConfigError("audit_spool is needed: the file FreeRADIUS writes the answers to")
        self.settings = settings
        self.connection: asyncpg.Connection | None = None

    async def _connect(self) -> asyncpg.Connection:
        s = self.settings
        tls = None if s.db_host.startswith("/") else client_context(s.ca_chain, crl=s.crl)
        return await asyncpg.connect(host=s.db_host, port=s.db_port, database=s.db_name, user=s.db_user,
                                     passfile=s.db_passfile, ssl=tls, timeout=s.timeout,
                                     server_settings={"application_name": "dmzkit-aaa-audit"})

    async def ship(self, work: str) -> int:
        """Copy the file's records in one transaction, then remove it. The
        lock is held until the file is gone: FreeRADIUS, finding it locked,
        writes to a new spool instead, and a line it had begun is finished
        before the lock is taken."""
        with open(work, "rb") as spool:
            await asyncio.to_thread(fcntl.lockf, spool, fcntl.LOCK_SH)
            answers = await asyncio.to_thread(read_records, spool, work)
            if answers:
                if self.connection is None or self.connection.is_closed():
                    self.connection = await self._connect()
                async with self.connection.transaction():
                    await self.connection.copy_records_to_table(
                        "audit_log", schema_name="dmzkit", columns=COLUMNS, records=[a.row() for a in answers])
            os.unlink(work)
        return len(answers)

    async def run(self) -> None:
        notifier = Notifier()
        notifier.notify(ready=1, status="shipping")
        interval = self.settings.audit_interval
        backoff = interval
        loop = asyncio.get_running_loop()
        pinged = loop.time()
        while True:
            if notifier.watchdog_interval is not None and loop.time() - pinged >= notifier.watchdog_interval:
                notifier.notify(watchdog=1)
                pinged = loop.time()
            work = take(self.settings.audit_spool)
            if work is None:
                await asyncio.sleep(interval)
                continue
            try:
                shipped = await asyncio.wait_for(self.ship(work), self.settings.timeout * 2)
            except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as e:
                # Kept for the next round; the database may be away.
                log.warning("could not ship %s (%s: %s); again in %.1f s", work, type(e).__name__, e, backoff)
                if self.connection is not None:
                    self.connection.terminate()
                    self.connection = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = interval
            notifier.notify(status=f"shipped {shipped} records")


def main(argv: list[str] | None = None) -> int:
    return service_main("dmzkit-aaa-audit", __doc__, lambda path: Shipper(Settings.load(path)), argv)


if __name__ == "__main__":
    sys.exit(main())
