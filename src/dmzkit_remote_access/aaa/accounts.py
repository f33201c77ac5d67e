"""dmzkit-aaa-accounts: tell FreeRADIUS when the accounts it keeps are stale.

    dmzkit-aaa-accounts --config FILE [--check]

FreeRADIUS keeps each account it has read from the user database
(`aaa_check_items`) under a generation, which it finds in a lease that this
service holds: while there is no lease, it reads every account from the
database, as it did before it kept any. This service listens on the user
database's channel `dmzkit_aaa_accounts` (a trigger announces each change to
users, credentials, groups and memberships as it commits) and

- starts a new generation, at random, when it connects and after each
  change: FreeRADIUS then reads every account afresh;
- renews the lease every quarter of its lifetime, each time after a round
  trip on the listening connection that also finds every trigger of
  migration 0004 in place and enabled ALWAYS (none missing, none disabled:
  otherwise a change could go unannounced, and no lease is held); the
  renewal goes within a quarter of the lifetime from the round trip's start,
  or not at all;
- sends the generation to FreeRADIUS's server `dmzkit-accounts` (127.0.0.1
  only) as an Access-Request, User-Name the generation, Event-Timestamp the
  round trip's start, signed with a secret of its own; FreeRADIUS's signed
  Access-Accept says the lease is renewed. FreeRADIUS takes no renewal
  stamped more than a second (in whole seconds) off its clock.

A change takes one notification and one datagram to reach FreeRADIUS (new
generations come at most every GAP s, so a flood of notifications costs
little). When the database or this service is away, the lease runs out and
FreeRADIUS reads the database for every request: a renewal lands within a
quarter of the lifetime of its round trip, and FreeRADIUS keeps it for its
lifetime and up to 1 s more (it counts whole seconds), so a change is missed
for that long at most. A change made by the schema's owner with the triggers
off within one transaction is not seen (the catalog shows them on again by
the time the listener looks).
"""
from __future__ import annotations

import asyncio
import logging
import re
import secrets
import socket
import struct
import sys
import time

import asyncpg

from .. import radius
from ..config import ConfigError
from ..daemon import Notifier, service_main
from .database import connect
from .settings import Settings

log = logging.getLogger("dmzkit-aaa-accounts")

CHANNEL = "dmzkit_aaa_accounts"
# The client's secret in FreeRADIUS's own syntax, the file it includes.
SECRET = re.compile(r'secret = "([0-9a-f]{64})"\n?')
# A lost datagram (FreeRADIUS restarting) is sent again this often within a renewal.
TRIES = 3
EVENT_TIMESTAMP = 55
# The least time between two generations, so that a flood of notifications
# does not keep FreeRADIUS from keeping any account.
GAP = 0.1
# Migration 0004's triggers (table, name), each of which must be enabled ALWAYS.
TRIGGERS = frozenset({
    ("users", "aaa_accounts_changed"), ("users", "aaa_accounts_updated"), ("users", "aaa_accounts_truncated"),
    ("credentials", "aaa_accounts_changed"), ("credentials", "aaa_accounts_updated"),
    ("credentials", "aaa_accounts_truncated"),
    ("memberships", "aaa_accounts_changed"), ("memberships", "aaa_accounts_truncated"),
    ("groups", "aaa_accounts_changed"), ("groups", "aaa_accounts_updated"), ("groups", "aaa_accounts_truncated"),
})
TRIGGER_NAMES = sorted({name for _, name in TRIGGERS})
ENABLED_TRIGGERS = """
    SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = 'dmzkit'::regnamespace AND t.tgenabled = 'A' AND t.tgname::text = ANY($1::text[])
"""


class Unannounced(Exception):
    """The user database would not announce every change to the accounts."""


def read_secret(path: str) -> bytes:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read(200)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the lease's secret in {path}: {e}") from None
    found = SECRET.fullmatch(text)
    if found is None:
        raise ConfigError(f'{path} must hold one line: secret = "<64 hex digits>"')
    return found.group(1).encode()


def new_generation() -> str:
    return secrets.token_hex(8)


class Lease:
    """FreeRADIUS's end: the loopback server that keeps the lease."""

    def __init__(self, port: int, secret: bytes) -> None:
        self.port = port
        self.secret = secret
        self.ident = 0

    async def renew(self, generation: str, checked: int, deadline: float) -> None:
        """Renew the lease with this generation, as of `checked` (when the
        database last answered, in whole seconds), sending nothing after
        `deadline` (the loop's clock); TimeoutError when FreeRADIUS has not
        said it did by then."""
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect(("127.0.0.1", self.port))
            sent: dict[int, radius.Packet] = {}
            for tried in range(TRIES):
                left = deadline - loop.time()
                if left <= 0:
                    break
                self.ident = (self.ident + 1) % 256
                attributes = ((radius.USER_NAME, generation.encode()), (EVENT_TIMESTAMP, struct.pack("!I", checked)))
                request = radius.access_request(self.ident, attributes, b"", self.secret)
                sent[request.ident] = request
                await loop.sock_sendall(sock, radius.encode(request))
                try:
                    async with asyncio.timeout(left / (TRIES - tried)):
                        while True:
                            try:
                                answer = radius.decode(await loop.sock_recv(sock, radius.MAX_PACKET))
                            except (radius.Malformed, ConnectionRefusedError):
                                continue
                            # The answer to any of this renewal's tries.
                            asked = sent.get(answer.ident)
                            if (asked is not None and answer.code == radius.ACCESS_ACCEPT
                                    and radius.reply_valid(answer, asked, self.secret)):
                                return
                except TimeoutError:
                    continue
        raise TimeoutError(f"FreeRADIUS did not renew the lease on 127.0.0.1:{self.port} in time")


class Listener:
    def __init__(self, settings: Settings) -> None:
        if not (settings.accounts_port and settings.accounts_secret):
            raise ConfigError("accounts_port and accounts_secret are needed: FreeRADIUS's lease server")
        self.settings = settings
        self.renew_every = settings.lease_seconds / 4
        self.lease = Lease(settings.accounts_port, read_secret(settings.accounts_secret))
        self.generation = ""
        self.renewed = False

    async def hold(self, notifier: Notifier) -> None:
        """Hold the lease while the listening connection works; returns or raises when it stops."""
        changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        connection = await connect(self.settings, "dmzkit-aaa-accounts")
        try:
            await connection.add_listener(CHANNEL, lambda *_: changed.set())
            changed.set()
            started = loop.time() - GAP
            while not connection.is_closed():
                # What the renewal vouches for: the database's answer to this
                # query, sent before it came. A renewal goes within a quarter of
                # the lease from here, or not at all.
                deadline, checked = loop.time() + self.renew_every, int(time.time())
                # Not wait_for: Python 3.11's loses a stop that comes as the query ends.
                async with asyncio.timeout(self.settings.timeout):
                    rows = await connection.fetch(ENABLED_TRIGGERS, TRIGGER_NAMES)
                enabled = {(table, name) for table, name in rows}
                if TRIGGERS - enabled:
                    raise Unannounced(f"triggers missing or not enabled ALWAYS: {sorted(TRIGGERS - enabled)}")
                # The notifications that came before the answer are handled first.
                await asyncio.sleep(0)
                if changed.is_set():
                    changed.clear()
                    await asyncio.sleep(max(0.0, started + GAP - loop.time()))
                    self.generation = new_generation()
                    started = loop.time()
                await self.lease.renew(self.generation, checked, deadline)
                self.renewed = True
                notifier.notify(watchdog=1, status="holding the lease")
                try:
                    async with asyncio.timeout(self.renew_every):
                        await changed.wait()
                except TimeoutError:
                    pass
        finally:
            connection.terminate()

    async def run(self) -> None:
        notifier = Notifier()
        notifier.notify(ready=1, status="connecting")
        backoff = 0.5
        while True:
            self.renewed = False
            try:
                await self.hold(notifier)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, Unannounced) as e:
                # The lease runs out by itself: FreeRADIUS reads the database meanwhile.
                log.warning("the lease is not renewed (%s: %s); again in %.1f s", type(e).__name__, e, backoff)
            notifier.notify(watchdog=1, status="not holding the lease")
            backoff = 0.5 if self.renewed else min(backoff * 2, 5.0)
            await asyncio.sleep(backoff)


def main(argv: list[str] | None = None) -> int:
    return service_main("dmzkit-aaa-accounts", __doc__, lambda path: Listener(Settings.load(path)), argv)


if __name__ == "__main__":
    sys.exit(main())
