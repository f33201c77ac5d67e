"""Real Redis and PostgreSQL servers on Unix sockets in temporary
directories (Debian packages), for the SSO and AAA tests and bench/sso.py."""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg

REDIS_SERVER = shutil.which("redis-server")
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
MIGRATIONS = Path(__file__).resolve().parents[2] / "roles/userdb/files/migrations"
PRIVILEGES = ("authn", "registration", "admin", "auditor", "accounting")


class ServerError(RuntimeError):
    pass


def have_redis() -> bool:
    return REDIS_SERVER is not None


def have_postgres() -> bool:
    return (POSTGRES_BIN / "initdb").exists() and shutil.which("runuser") is not None


@contextmanager
def redis_server(where: Path) -> Iterator[Path]:
    """redis-server on `where`/redis.sock, nothing persisted; yields the socket."""
    socket = where / "redis.sock"
    server = subprocess.Popen([REDIS_SERVER, "--port", "0", "--unixsocket", str(socket), "--unixsocketperm", "700",
                               "--save", "", "--appendonly", "no", "--dir", str(where)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            if socket.exists():
                break
            time.sleep(0.05)
        else:
            raise ServerError("redis-server did not start")
        yield socket
    finally:
        server.terminate()
        server.wait(timeout=10)


def as_postgres(*argv: str, sql: str | None = None) -> None:
    done = subprocess.run(["runuser", "-u", "postgres", "--", *argv], input=sql, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise ServerError(f"{Path(argv[0]).name} failed: {done.stderr.strip()}")


@contextmanager
def userdb_cluster(password: str) -> Iterator[dict[str, str]]:
    """A PostgreSQL cluster with the user database's schema as the userdb
    role builds it and a login role `sso_idp` with the IdP's privileges;
    yields what asyncpg.connect needs."""
    # Outside /tmp/pytest-of-root (0700): the server runs as postgres.
    where = Path(tempfile.mkdtemp(prefix="dmzkit-userdb-", dir="/var/tmp"))
    shutil.chown(where, "postgres", "postgres")
    data = where / "data"
    try:
        as_postgres(str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                    "--auth-host=reject")
        as_postgres(str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(where / "log"), "start",
                    "-o", f"-k {where} -c listen_addresses='' -c password_encryption=scram-sha-256")
        privileges = ", ".join(f"dmzkit_{p}" for p in PRIVILEGES)
        bootstrap = (
            "CREATE ROLE dmzkit_owner NOLOGIN;"
            + "".join(f"CREATE ROLE dmzkit_{p} NOLOGIN;" for p in PRIVILEGES)
            + "CREATE DATABASE dmzkit OWNER dmzkit_owner;"
            f"CREATE ROLE sso_idp LOGIN PASSWORD '{password}' IN ROLE dmzkit_authn;"
        )
        schema = (
            "CREATE SCHEMA dmzkit AUTHORIZATION dmzkit_owner; ALTER DATABASE dmzkit SET search_path = dmzkit;"
            f"GRANT USAGE ON SCHEMA dmzkit TO {privileges};"
            "BEGIN; SET LOCAL ROLE dmzkit_owner; SET LOCAL search_path = dmzkit;"
            + "".join(p.read_text() for p in sorted(MIGRATIONS.glob("*.sql"))) + "COMMIT;"
        )
        psql = [str(POSTGRES_BIN / "psql"), "-h", str(where), "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q"]
        as_postgres(*psql, "-d", "postgres", sql=bootstrap)
        as_postgres(*psql, "-d", "dmzkit", sql=schema)
        yield {"host": str(where), "database": "dmzkit", "user": "sso_idp", "password": password}
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(POSTGRES_BIN / "pg_ctl"), "-D", str(data),
                        "-m", "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(where, ignore_errors=True)


def add_user(userdb: dict[str, str], name: str, password_hash: str, groups: tuple[str, ...] = (),
             enabled: bool = True) -> None:
    """Add a user as the userdb_user module would (through the superuser)."""
    statements = (
        f"INSERT INTO dmzkit.users (username, display_name, email, enabled) VALUES "
        f"('{name}', '{name.title()} Test', '{name}@unit.test', {str(enabled).lower()});"
        f"INSERT INTO dmzkit.credentials (user_id, password_hash) SELECT id, '{password_hash}' FROM dmzkit.users "
        f"WHERE username = '{name}';"
        + "".join(f"INSERT INTO dmzkit.groups (name) VALUES ('{g}') ON CONFLICT DO NOTHING;"
                  f"INSERT INTO dmzkit.memberships SELECT u.id, g.id FROM dmzkit.users u, dmzkit.groups g "
                  f"WHERE u.username = '{name}' AND g.name = '{g}';" for g in groups)
    )
    as_postgres(str(POSTGRES_BIN / "psql"), "-h", userdb["host"], "-U", "postgres", "-d", "dmzkit",
                "-v", "ON_ERROR_STOP=1", "-q", sql=statements)


def remove_user(userdb: dict[str, str], name: str) -> None:
    """Remove a user added with add_user (and so its hash and memberships)."""
    as_postgres(str(POSTGRES_BIN / "psql"), "-h", userdb["host"], "-U", "postgres", "-d", "dmzkit",
                "-v", "ON_ERROR_STOP=1", "-q", sql=f"DELETE FROM dmzkit.users WHERE username = '{name}';")


def superuser_rows(userdb: dict[str, str], query: str, *args: object) -> list[tuple[object, ...]]:
    """The rows of one statement run as the superuser (asyncpg's $n parameters)."""
    async def main() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(host=userdb["host"], user="postgres", database="dmzkit")
        try:
            return [tuple(r) for r in await conn.fetch(query, *args)]
        finally:
            await conn.close()
    return asyncio.run(main())
