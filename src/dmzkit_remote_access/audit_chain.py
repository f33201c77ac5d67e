"""Verify a hash chain of the user database's audit log (migration 0006).

Each chained record holds sha256(the previous record's hash || its own
canonical form), the database's audit_log_canonical(); the chain's head
(audit_chains) holds the newest record's number and hash. A chain verifies
when its records are numbered 1 to the head's number with none missing,
each follows the one before, each hash is the hash of what the record says
now, and the last is the head. The head's hash, printed, is what to keep
elsewhere: a chain rewritten whole by the database's superuser verifies,
but ends at another hash.

`dmzkit-audit-verify [--chain NAME]` connects as libpq's environment says
(PGHOST, PGUSER, PGDATABASE, PGPASSFILE, ...) with a role that may read
the audit log (dmzkit_auditor); exit status 0 when the chain verifies, 1
when it does not, 2 when it cannot be read.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from dataclasses import dataclass

import asyncpg

START = bytes(32)  # the hash before a chain's first record
HEAD = "SELECT seq, hash FROM audit_chains WHERE name = $1"
RECORDS = ("SELECT chain_seq, prev_hash, hash, audit_log_canonical(a) AS canonical FROM audit_log a "
           "WHERE chain = $1 ORDER BY chain_seq")
PREFETCH = 1000


@dataclass(frozen=True)
class Verdict:
    chain: str
    records: int  # verified, from the first
    head: bytes  # the hash the chain's head holds
    broken: int | None = None  # the number of the first record that does not verify
    why: str = ""

    @property
    def verified(self) -> bool:
        return not self.why

    def __str__(self) -> str:
        if self.verified:
            return f"chain {self.chain}: {self.records} records verify; head {self.head.hex()}"
        return f"chain {self.chain}: {self.why} ({self.records} records verify before it)"


async def verify(conn: asyncpg.Connection, chain: str) -> Verdict:
    """The chain's verdict, read in one snapshot (writers may go on)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        head = await conn.fetchrow(HEAD, chain)
        if head is None:
            return Verdict(chain, 0, b"", why=f"there is no chain {chain!r}")
        previous, expected = START, 1
        async for row in conn.cursor(RECORDS, chain, prefetch=PREFETCH):
            seq, why = row["chain_seq"], ""
            if seq != expected:
                why = f"record {expected} is missing"
            elif row["prev_hash"] != previous:
                why = f"record {seq} does not follow record {seq - 1}"
            elif hashlib.sha256(previous + row["canonical"]).digest() != row["hash"]:
                why = f"record {seq} is not as it was written"
            if why:
                return Verdict(chain, expected - 1, head["hash"], expected, why)
            previous, expected = row["hash"], expected + 1
        if expected - 1 != head["seq"] or previous != head["hash"]:
            return Verdict(chain, expected - 1, head["hash"], expected,
                           f"the records end at {expected - 1}, the head at {head['seq']}")
        return Verdict(chain, expected - 1, head["hash"])


async def _main(chain: str) -> Verdict:
    conn = await asyncpg.connect()
    try:
        return await verify(conn, chain)
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dmzkit-audit-verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chain", default="registration", help="the chain to verify (default: registration)")
    args = parser.parse_args(argv)
    try:
        verdict = asyncio.run(_main(args.chain))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        print(f"dmzkit-audit-verify: cannot read chain {args.chain}: {e}", file=sys.stderr)
        return 2
    print(verdict)
    return 0 if verdict.verified else 1


if __name__ == "__main__":
    sys.exit(main())
