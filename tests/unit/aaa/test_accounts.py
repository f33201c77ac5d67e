"""The account listener against a real user database: the triggers'
notifications start a new generation (a change to a hash, a lock, whether
there are failures, an account, a group or a membership), nothing else does
(another failure, a statement that changes nothing), the lease goes only to
an answer signed with the lease's secret, and neither a database that is
away nor one whose triggers are missing or not enabled ALWAYS renews one. The other end, FreeRADIUS's lease server, is played here
by a UDP socket that answers as the lab's FreeRADIUS does (the collaboration
journey drives the real one)."""
from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

import local_servers
from test_password import CHEAP, settings

from dmzkit_remote_access import radius
from dmzkit_remote_access.aaa.accounts import EVENT_TIMESTAMP, Lease, Listener, Unannounced, read_secret
from dmzkit_remote_access.aaa.settings import Settings
from dmzkit_remote_access.config import ConfigError
from dmzkit_remote_access.daemon import Notifier

SECRET = "5e" * 32
CREDENTIALS_TRIGGERS = ("SELECT tgname::text, tgenabled::text FROM pg_trigger"
                        " WHERE tgrelid = 'dmzkit.credentials'::regclass AND NOT tgisinternal")
TRIGGER_MODES = {"O": "ENABLE", "A": "ENABLE ALWAYS", "R": "ENABLE REPLICA", "D": "DISABLE"}
LEASE = 0.3


class LeaseServer(asyncio.DatagramProtocol):
    """Answers each signed Access-Request with a signed Access-Accept and
    notes the generation it names."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.generations: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = radius.decode(data)
        if not radius.message_authenticator_valid(request, SECRET.encode()):
            return
        # As FreeRADIUS's lease server: a renewal says when it was sent.
        sent = struct.unpack("!I", request.values(EVENT_TIMESTAMP)[0])[0]
        assert abs(time.time() - sent) <= 2
        self.generations.append(request.values(radius.USER_NAME)[0].decode())
        assert self.transport is not None
        self.transport.sendto(radius.encode(radius.reply(radius.ACCESS_ACCEPT, request, (), self.secret)), addr)

    async def next_generation(self, after: str, within: float = 3.0) -> str:
        async with asyncio.timeout(within):
            while not self.generations or self.generations[-1] == after:
                await asyncio.sleep(0.01)
        return self.generations[-1]


def lease_settings(userdb: dict[str, str], where: Path, port: int, **changes: object) -> Settings:
    secret = where / "accounts.secret"
    secret.write_text(f'secret = "{SECRET}"\n')
    return settings(userdb, where, **({"accounts_port": port, "accounts_secret": str(secret), "lease_seconds": LEASE}
                                      | changes))


@asynccontextmanager
async def lease_server(answer_secret: str = SECRET) -> AsyncIterator[tuple[LeaseServer, int]]:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(lambda: LeaseServer(answer_secret.encode()),
                                                            local_addr=("127.0.0.1", 0))
    try:
        yield server, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


@asynccontextmanager
async def listening(listener: Listener) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(listener.hold(Notifier()))
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def run(userdb: dict[str, str], tmp_path: Path, test: Callable[[LeaseServer, Listener], object]) -> None:
    async def main() -> None:
        async with lease_server() as (server, port):
            listener = Listener(lease_settings(userdb, tmp_path, port))
            async with listening(listener):
                await test(server, listener)  # type: ignore[misc]
    asyncio.run(main())


async def superuser(userdb: dict[str, str], statement: str) -> None:
    conn = await asyncpg.connect(host=userdb["host"], user="postgres", database="dmzkit")
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def account(userdb: dict[str, str], request: pytest.FixtureRequest) -> Iterator[str]:
    name = request.node.name.removeprefix("test_")[:40].replace("_", "-")
    local_servers.add_user(userdb, name, CHEAP.hash("a password"), ("staff",))
    yield name
    local_servers.remove_user(userdb, name)


CHANGES = {
    "a new hash": "UPDATE dmzkit.credentials SET password_hash = password_hash || 'x' WHERE user_id = {id}",
    "a lock": "UPDATE dmzkit.credentials SET locked_until = now() + interval '1 hour' WHERE user_id = {id}",
    "a first failure": "UPDATE dmzkit.credentials SET failed_attempts = 1 WHERE user_id = {id}",
    "a new membership": "INSERT INTO dmzkit.groups (name) VALUES ('other') ON CONFLICT DO NOTHING; "
                        "INSERT INTO dmzkit.memberships SELECT {id}, id FROM dmzkit.groups WHERE name = 'other'",
    "a disabled account": "UPDATE dmzkit.users SET enabled = false WHERE id = {id}",
    "a membership gone": "DELETE FROM dmzkit.memberships WHERE user_id = {id}",
    "a renamed group": "UPDATE dmzkit.groups SET name = 'staff2' WHERE name = 'staff'; "
                       "UPDATE dmzkit.groups SET name = 'staff' WHERE name = 'staff2'",
}
UNCHANGED = {
    "an audit record": "INSERT INTO dmzkit.audit_log (subject, event, outcome) VALUES ('x', 'aaa.access', 'success')",
    "a second failure": "UPDATE dmzkit.credentials SET failed_attempts = failed_attempts + 1 WHERE user_id = {id}",
    "a statement that changes nothing": "UPDATE dmzkit.credentials SET failed_attempts = 0 WHERE false",
    "a display name": "UPDATE dmzkit.users SET display_name = 'Someone Else' WHERE id = {id}",
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_change_in_the_user_database_starts_a_new_generation(userdb, tmp_path, account, change) -> None:
    user_id = local_servers.superuser_rows(userdb, "SELECT id FROM dmzkit.users WHERE username = $1", account)[0][0]

    async def test(server: LeaseServer, listener: Listener) -> None:
        first = await server.next_generation("")
        # Renewed several times, with the same generation, while nothing changes.
        await asyncio.sleep(LEASE * 2)
        assert set(server.generations) == {first} and len(server.generations) >= 4
        await superuser(userdb, CHANGES[change].format(id=user_id))
        second = await server.next_generation(first, within=1.0)
        assert second != first and listener.generation == second

    run(userdb, tmp_path, test)


@pytest.mark.parametrize("change", UNCHANGED)
def test_what_aaa_does_not_read_starts_no_generation(userdb, tmp_path, account, change) -> None:
    user_id = local_servers.superuser_rows(userdb, "SELECT id FROM dmzkit.users WHERE username = $1", account)[0][0]

    async def test(server: LeaseServer, listener: Listener) -> None:
        # A failure already, so that another is only a count.
        await superuser(userdb, f"UPDATE dmzkit.credentials SET failed_attempts = 1 WHERE user_id = {user_id}")
        await server.next_generation("")
        await asyncio.sleep(LEASE)
        first = server.generations[-1]
        await superuser(userdb, UNCHANGED[change].format(id=user_id))
        await asyncio.sleep(LEASE * 2)
        assert server.generations[-1] == first

    run(userdb, tmp_path, test)


@pytest.mark.parametrize("alter", ["DISABLE TRIGGER aaa_accounts_updated", "ENABLE TRIGGER aaa_accounts_updated",
                                   "DISABLE TRIGGER ALL"])
def test_no_lease_while_a_change_could_go_unannounced(userdb, tmp_path, alter) -> None:
    """A trigger disabled (as pg_restore --disable-triggers does) or enabled
    for origin sessions only (a session with session_replication_role =
    replica skips it): no lease, so FreeRADIUS reads every account."""
    # Every trigger of the table is put back as it was (other migrations'
    # triggers too, ENABLE ALWAYS ones among them).
    as_it_was = "".join(f"ALTER TABLE dmzkit.credentials {TRIGGER_MODES[mode]} TRIGGER {name};"
                        for name, mode in local_servers.superuser_rows(userdb, CREDENTIALS_TRIGGERS))

    async def main() -> None:
        await superuser(userdb, f"ALTER TABLE dmzkit.credentials {alter}")
        try:
            async with lease_server() as (server, port):
                listener = Listener(lease_settings(userdb, tmp_path, port))
                with pytest.raises(Unannounced, match="credentials"):
                    await listener.hold(Notifier())
                assert server.generations == []
        finally:
            await superuser(userdb, as_it_was)
    asyncio.run(main())


def test_an_answer_not_signed_with_the_lease_secret_renews_nothing(userdb, tmp_path) -> None:
    async def main() -> None:
        async with lease_server(answer_secret="a different secret") as (server, port):
            listener = Listener(lease_settings(userdb, tmp_path, port))
            with pytest.raises(TimeoutError):
                await listener.hold(Notifier())
            # It asked, and took none of the forged answers for a renewal.
            assert server.generations and not listener.renewed
    asyncio.run(main())


def test_a_database_that_is_away_renews_no_lease(userdb, tmp_path) -> None:
    async def main() -> None:
        async with lease_server() as (server, port):
            listener = Listener(lease_settings(userdb, tmp_path, port, db_host=str(tmp_path), timeout=1.0))
            with pytest.raises(OSError):
                await listener.hold(Notifier())
            assert server.generations == []
    asyncio.run(main())


def test_a_lost_answer_is_asked_for_again_then_given_up() -> None:
    async def main() -> None:
        # Nothing listens: each try goes unanswered (or refused), and the renewal fails by its deadline.
        lease = Lease(9, SECRET.encode())
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await lease.renew("0123456789abcdef", int(time.time()), started + 0.3)
        assert 0.25 <= loop.time() - started < 1.0
    asyncio.run(main())


def test_no_renewal_goes_after_its_deadline() -> None:
    """A renewal vouches for the database's last answer: one that would go
    late (the listener held up) does not go at all."""
    async def main() -> None:
        async with lease_server() as (server, port):
            lease = Lease(port, SECRET.encode())
            loop = asyncio.get_running_loop()
            with pytest.raises(TimeoutError):
                await lease.renew("0123456789abcdef", int(time.time()), loop.time() - 0.01)
            await asyncio.sleep(0.1)
            assert server.generations == []
            await lease.renew("0123456789abcdef", int(time.time()), loop.time() + 0.3)
            assert server.generations == ["0123456789abcdef"]
    asyncio.run(main())


@pytest.mark.parametrize("content", ["", 'secret = "short"\n', f'secret = "{SECRET}"\nsecret = "{SECRET}"\n',
                                     f"secret = {SECRET}\n", f'secret = "{SECRET.upper()}"\n'])
def test_a_secret_file_not_as_the_role_makes_it_is_refused(tmp_path, content) -> None:
    path = tmp_path / "accounts.secret"
    path.write_text(content)
    with pytest.raises(ConfigError, match="must hold one line"):
        read_secret(str(path))
    with pytest.raises(ConfigError, match="cannot read"):
        read_secret(str(tmp_path / "absent"))


def test_the_listener_needs_the_lease_server(userdb, tmp_path) -> None:
    with pytest.raises(ConfigError, match="accounts_port and accounts_secret"):
        Listener(settings(userdb, tmp_path))
    for bad in ({"lease_seconds": 0.1}, {"lease_seconds": 61}, {"accounts_port": 70000}):
        with pytest.raises(ConfigError):
            lease_settings(userdb, tmp_path, 18121, **bad)
