"""A real Redis for the store tests: redis-server (Debian package) on a
Unix socket in the test's directory, gone when the test session ends."""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from redis.asyncio import Redis

from dmzkit_remote_access.sso.store import Store

REDIS_SERVER = shutil.which("redis-server")
T = TypeVar("T")


@pytest.fixture(scope="session")
def redis_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server (Debian package) is not installed")
    where = tmp_path_factory.mktemp("redis")
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
            pytest.fail("redis-server did not start")
        yield socket
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def with_store(redis_socket: Path, request: pytest.FixtureRequest) -> Callable[[Callable[[Store], Awaitable[T]]], T]:
    """Run a coroutine against a Store on a key prefix of this test's own."""
    def run(body: Callable[[Store], Awaitable[T]]) -> T:
        async def main() -> T:
            redis = Redis(unix_socket_path=str(redis_socket))
            try:
                return await body(Store(redis, prefix=f"test:{request.node.name}:"))
            finally:
                await redis.close()
        return asyncio.run(main())
    return run
