"""dmzkit-aaa-audit: ship AAA's answers into the user database's audit log.

    dmzkit-aaa-audit --config FILE [--check]

FreeRADIUS appends one line per answer to a spool file (its linelog module
`dmzkit_audit`, the file locked for each line), so that no request waits for
the database. This service takes the file away and copies its records into
`audit_log`, the way radsqlrelay does with FreeRADIUS's SQL logs: rename the
file to `<spool>.work` (FreeRADIUS then starts a new one), lock it (a line
being written is finished first), and copy it in batches of BATCH records, a
transaction each; after each batch, how far the file is shipped is noted
(`<spool>.work.shipped`, synced), and the file is removed when all of it is.
A failed batch is tried again from where the last one ended, so a database
that is away loses nothing, however long the file has grown. A record is
copied twice only when the service stops or times out between a batch's
commit and its note. radsqlrelay instead drops a batch the database refused,
waits 10 s between files, and runs the SQL it finds in the file.

A line that is not a record (cut short when the disk was full: linelog
takes a short write for a whole one) is appended to `<spool>.bad` and
logged, not shipped; a record that follows a cut line on the same line is
recovered.
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import re
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import BinaryIO

import asyncpg

from ..config import ConfigError
from ..daemon import Notifier, service_main
from .database import connect
from .settings import Settings

log = logging.getLogger("dmzkit-aaa-audit")

EVENT = "aaa.access"
COLUMNS = ("subject", "event", "outcome", "detail")
FIELDS = 7
# Records a transaction: a few tenths of a second for the database, a
# bounded amount of memory here, however long the spool has grown.
BATCH = 5000
ESCAPED = re.compile(rb"=([0-9A-F]{2})")
# Where a record begins: values are escaped, so none holds a tab.
START = re.compile(rb"1\t[0-9]+\.[0-9]{6}\t(?:success|failure)\t")


class BadLine(ValueError):
    """A spool line that is not a record."""


@dataclass(frozen=True)
class Answer:
    received: datetime
    outcome: str
    user: str
    nas: str
    reason: str
    profile: str

    def row(self) -> tuple[str, str, str, str]:
        detail = {"nas": self.nas, "reason": self.reason, "received_at": self.received.isoformat()}
        if self.profile:
            detail["profile"] = self.profile
        return (self.user, EVENT, self.outcome, json.dumps(detail))


def unescape(value: bytes) -> str:
    """rlm_expr's escape undone: each =XX is the byte XX."""
    return ESCAPED.sub(lambda m: bytes([int(m.group(1), 16)]), value).decode("utf-8", "replace")


def parse(line: bytes) -> Answer:
    """One whole record, its line break included."""
    if not line.endswith(b"\n"):
        raise BadLine("no line break: cut short")
    fields = line[:-1].split(b"\t")
    if len(fields) != FIELDS or not START.match(line):
        raise BadLine(f"{len(fields)} fields, beginning {line[:24]!r}")
    _, received, outcome, user, nas, reason, profile = fields
    try:
        when = datetime.fromtimestamp(float(received), timezone.utc)
    except (ValueError, OverflowError):
        raise BadLine(f"time {received[:24]!r}") from None
    return Answer(when, outcome.decode(), unescape(user), unescape(nas), unescape(reason), unescape(profile))


def records(line: bytes) -> tuple[Answer | None, bytes]:
    """The record of a spool line, and what of the line is not one: a line
    cut short runs into the next record, which begins where START last
    matches and still parses."""
    try:
        return parse(line), b""
    except BadLine:
        pass
    for start in reversed([m.start() for m in START.finditer(line) if m.start() > 0]):
        try:
            return parse(line[start:]), line[:start]
        except BadLine:
            continue
    return None, line


def read_batch(spool: BinaryIO, limit: int) -> tuple[list[Answer], list[bytes], int, bool]:
    """Up to `limit` records from the file's position on: the records, the
    parts that are not, the position after them, and whether the file ended."""
    answers: list[Answer] = []
    bad: list[bytes] = []
    while len(answers) < limit:
        line = spool.readline()
        if not line:
            return answers, bad, spool.tell(), True
        answer, rest = records(line)
        if answer is not None:
            answers.append(answer)
        if rest:
            bad.append(rest if rest.endswith(b"\n") else rest + b"\n")
    return answers, bad, spool.tell(), False


def regular(path: str) -> bool | None:
    """Whether path is a regular file; None when there is nothing there."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return None


def take(spool: str) -> str | None:
    """The file to ship now: one left from an earlier round, or the spool,
    renamed; None when there is nothing, or something that is not a file
    (logged: FreeRADIUS refuses its answers meanwhile)."""
    work = spool + ".work"
    for path in (work, spool):
        if regular(path) is False:
            log.error("%s is not a regular file: nothing is shipped until it is moved away", path)
            return None
    if regular(work):
        return work
    try:
        if os.path.getsize(spool) == 0:
            return None
        # A note with no file of its own is an old one: a new file starts at 0.
        if os.path.exists(work + ".shipped"):
            os.unlink(work + ".shipped")
        os.rename(spool, work)
    except FileNotFoundError:
        return None
    return work


def shipped_offset(work: str) -> int:
    try:
        with open(work + ".shipped") as noted:
            return int(noted.read())
    except FileNotFoundError:
        return 0
    except ValueError:
        log.error("%s.shipped is not an offset; shipping %s from its start (some records may be copied twice)",
                  work, work)
        return 0


def note_offset(work: str, offset: int) -> None:
    temporary = work + ".shipped.new"
    with open(temporary, "w") as noted:
        noted.write(str(offset))
        noted.flush()
        os.fsync(noted.fileno())
    os.replace(temporary, work + ".shipped")


def keep_bad(spool: str, lines: list[bytes]) -> None:
    with open(spool + ".bad", "ab") as bad:
        bad.writelines(lines)
    log.warning("%d lines of %s.work are not records; kept in %s.bad", len(lines), spool, spool)


class Shipper:
    def __init__(self, settings: Settings) -> None:
        if not settings.audit_spool:
            raise ConfigError("audit_spool is needed: the file FreeRADIUS writes the answers to")
        self.settings = settings
        self.connection: asyncpg.Connection | None = None

    async def _copy(self, answers: list[Answer]) -> None:
        if self.connection is None or self.connection.is_closed():
            self.connection = await connect(self.settings, "dmzkit-aaa-audit")
        async with self.connection.transaction():
            await self.connection.copy_records_to_table(
                "audit_log", schema_name="dmzkit", columns=COLUMNS, records=[a.row() for a in answers])

    async def ship(self, work: str, alive: Callable[[], None] = lambda: None) -> int:
        """Copy the file's records from where the last round stopped, a batch
        at a time, then remove it. The lock is held until the file is gone:
        FreeRADIUS, finding it locked, writes to a new spool instead, and a
        line it had begun is finished before the lock is taken."""
        shipped = 0
        with open(work, "rb") as spool:
            await asyncio.to_thread(fcntl.lockf, spool, fcntl.LOCK_SH)
            spool.seek(shipped_offset(work))
            while True:
                answers, bad, offset, ended = await asyncio.to_thread(read_batch, spool, BATCH)
                if answers:
                    # Not wait_for: Python 3.11's loses a stop that comes as the copy ends.
                    async with asyncio.timeout(self.settings.timeout * 2):
                        await self._copy(answers)
                    shipped += len(answers)
                if bad:
                    keep_bad(self.settings.audit_spool, bad)
                note_offset(work, offset)
                alive()
                if ended:
                    break
            # The note goes first: a stop between the two leaves a file that
            # is shipped again whole, never a note that skips a new file.
            os.unlink(work + ".shipped")
            os.unlink(work)
        return shipped

    async def run(self) -> None:
        notifier = Notifier()
        notifier.notify(ready=1, status="shipping")
        interval = self.settings.audit_interval
        backoff = interval
        loop = asyncio.get_running_loop()
        pinged = loop.time()

        def alive() -> None:
            nonlocal pinged
            if notifier.watchdog_interval is not None and loop.time() - pinged >= notifier.watchdog_interval:
                notifier.notify(watchdog=1)
                pinged = loop.time()

        while True:
            alive()
            work = take(self.settings.audit_spool)
            if work is None:
                await asyncio.sleep(interval)
                continue
            try:
                shipped = await self.ship(work, alive)
            except (OSError, asyncpg.PostgresError, TimeoutError) as e:
                # Kept, with how far it was shipped, for the next round; the database may be away.
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
