"""dmzkit-device-agent as a device runs it, against the real service: it
registers and logs in with the granted password (checked by the user
database's password check); a refusing or silent primary sends it to the
backup; with both down it logs in from its cache and reports that login at
the next registration; with no cache, or one too old, it fails at once and
says why; a server that keeps failing is passed over while its breaker is
open and another answers."""
from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from reglab import SERIALS, Lab, last_record, run, state

from dmzkit_remote_access.registration.cache import Cache, cache_key, load, save
from dmzkit_remote_access.registration.rotation import Kept

SRC = Path(__file__).resolve().parents[3] / "src"
SERIAL = SERIALS[1]
# The business login: the user database's own password check, as the IdP's and AAA's.
LOGIN = """
import asyncio, os, sys
import asyncpg
from dmzkit_remote_access.userdb import Directory

async def main():
    pool = await asyncpg.create_pool(host=os.environ["UNIT_DB_HOST"], database="dmzkit", user=os.environ["UNIT_DB_USER"],
                                     password=os.environ["UNIT_DB_PASSWORD"], min_size=1, max_size=1)
    try:
        return await Directory(pool, 5, 60).check_password(os.environ["DMZKIT_ACCOUNT"], sys.stdin.readline().strip(),
                                                           "127.0.0.1") is not None
    finally:
        await pool.close()

ok = os.environ["DMZKIT_SERVER"] != os.environ.get("UNIT_DEAD_SERVER") and asyncio.run(main())
with open(os.environ["UNIT_LOGINS"], "a") as f:
    f.write(f"{os.environ['DMZKIT_ACCOUNT']} {os.environ['DMZKIT_SERVER']} {ok}\\n")
sys.exit(0 if ok else 1)
"""


@dataclass
class Ran:
    rc: int
    out: str
    err: str
    seconds: float
    cpu: float


class Device:
    def __init__(self, lab: Lab, where: Path) -> None:
        self.lab, self.where = lab, where
        self.cache = where / "cache"
        self.logins = where / "logins"
        (where / "login.py").write_text(LOGIN)
        self.key = cache_key(Path(lab.path(f"{SERIAL}.key")).read_bytes())

    def start_cache(self) -> None:
        """The cache a device has once enrolled: the account's committed epoch, no password yet."""
        save(str(self.cache), Cache(serial=SERIAL, account=None, kept=Kept(current=(state(self.lab, SERIAL)[0], None)),
                                    servers=()), self.key)

    def cached(self) -> Cache:
        return load(str(self.cache), SERIAL, self.key)

    def config(self, servers: list[str], **changes: object) -> Path:
        path = self.where / "agent.json"
        path.write_text(json.dumps({
            "serial": SERIAL, "certificate": self.lab.path(f"{SERIAL}.pem"), "private_key": self.lab.path(f"{SERIAL}.key"),
            "ca_chain": self.lab.path("ca.pem"), "crl": self.lab.path("crl.pem"), "cache": str(self.cache),
            "servers": servers, "login_command": [sys.executable, str(self.where / "login.py")], **changes}))
        return path

    async def agent(self, servers: list[str], dead_server: str = "", flags: tuple[str, ...] = (),
                    **changes: object) -> Ran:
        """The agent's run; the business login fails at `dead_server`."""
        env = {**os.environ, "PYTHONPATH": str(SRC), "UNIT_DB_HOST": self.lab.userdb["host"],
               "UNIT_DB_USER": self.lab.userdb["user"], "UNIT_DB_PASSWORD": self.lab.userdb["password"],
               "UNIT_LOGINS": str(self.logins), "UNIT_DEAD_SERVER": dead_server}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dmzkit_remote_access.registration.device_agent", "--config",
            str(self.config(servers, **changes)), *flags, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await process.communicate()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return Ran(process.returncode or 0, out.decode(), err.decode(), time.monotonic() - start,
                   after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)


@pytest.fixture
def device(lab: Lab, tmp_path: Path) -> Device:
    device = Device(lab, tmp_path)
    device.start_cache()
    return device


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def registered_in(ran: Ran) -> float:
    assert ran.rc == 0 and " in " in ran.out, ran
    return float(ran.out.split(" in ")[1].split(" s")[0])


def test_the_agent_registers_and_logs_in_with_the_granted_password(lab: Lab, device: Device) -> None:
    ran = run(lab, lambda port: device.agent([f"localhost:{port}"]))
    assert ran.rc == 0 and "logged in as dev-s-0002" in ran.out, ran
    assert device.logins.read_text().split() == ["dev-s-0002", "biz-hq.test:443", "True"]
    assert device.cached().kept.candidate is None and device.cached().kept.current[1] is not None
    assert "Traceback" not in ran.err


def test_a_refusing_primary_sends_the_device_to_the_backup_at_once(lab: Lab, device: Device) -> None:
    ran = run(lab, lambda port: device.agent([closed_port(), f"localhost:{port}"]))
    assert registered_in(ran) < 1.0, ran


def test_a_silent_primary_sends_the_device_to_the_backup_after_its_stagger(lab: Lab, device: Device) -> None:
    async def body(port: int) -> Ran:
        held: list[asyncio.StreamWriter] = []

        async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            held.append(writer)  # accepted, and never a word

        silent = await asyncio.start_server(hold, "127.0.0.1", 0)
        try:
            return await device.agent([f"127.0.0.1:{silent.sockets[0].getsockname()[1]}", f"localhost:{port}"])
        finally:
            for writer in held:
                writer.close()
            silent.close()
    ran = run(lab, body)
    assert 0.3 <= registered_in(ran) < 2.5, ran


def test_with_both_servers_down_the_device_logs_in_from_its_cache_and_says_so_next_time(lab: Lab, device: Device) -> None:
    run(lab, lambda port: device.agent([f"localhost:{port}"]))
    down = run(lab, lambda port: device.agent([closed_port(), closed_port()]))
    assert down.rc == 0 and "logged in from the cache as dev-s-0002" in down.out, down
    assert down.seconds < 5.0
    [reported] = device.cached().cache_logins
    run(lab, lambda port: device.agent([f"localhost:{port}"]))
    assert last_record(lab, SERIAL)[1]["cache_logins"] == [reported]
    assert device.cached().cache_logins == ()


@pytest.mark.parametrize("cache", ["none", "old"])
def test_with_both_servers_down_and_no_usable_cache_the_device_fails_at_once(lab: Lab, device: Device,
                                                                             cache: str) -> None:
    if cache == "none":
        device.cache.unlink()
    else:
        run(lab, lambda port: device.agent([f"localhost:{port}"]))
    ran = run(lab, lambda port: device.agent([closed_port(), closed_port()], cache_max_age=0))
    assert ran.rc == 1 and ran.seconds < 10.0, ran
    assert ("no cache to log in with" if cache == "none" else "more than cache_max_age") in ran.err, ran.err
    assert ran.cpu < 2.0, ran  # retried with pauses, not in a busy loop
    assert "Traceback" not in ran.err


def test_a_server_that_keeps_failing_is_passed_over_while_its_breaker_is_open(lab: Lab, device: Device) -> None:
    async def body(port: int) -> list[int]:
        accepted = []

        async def drop(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(1)
            writer.close()

        broken = await asyncio.start_server(drop, "127.0.0.1", 0)
        servers = [f"127.0.0.1:{broken.sockets[0].getsockname()[1]}", f"localhost:{port}"]
        counts = []
        try:
            for _ in range(3):
                ran = await device.agent(servers, breaker_failures=2, breaker_seconds=60)
                assert ran.rc == 0, ran
                counts.append(len(accepted))
        finally:
            broken.close()
        return counts
    assert run(lab, body) == [1, 2, 2]


def test_a_configuration_it_cannot_use_is_refused_with_status_2(lab: Lab, device: Device) -> None:
    ran = run(lab, lambda port: device.agent(["no-port-here"]))
    assert ran.rc == 2 and "servers[0] must be host:port" in ran.err and "Traceback" not in ran.err, ran


def test_check_validates_the_settings_and_files_and_contacts_nobody(lab: Lab, device: Device) -> None:
    # The role's validate: the files it names are read, no server is asked.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        server = f"127.0.0.1:{silent.getsockname()[1]}"
        ran = run(lab, lambda port: device.agent([server], flags=("--check",)))
        assert ran.rc == 0 and ran.out.endswith(": ok\n") and ran.seconds < 5.0, ran
        silent.setblocking(False)
        with pytest.raises(BlockingIOError):
            silent.accept()
        ran = run(lab, lambda port: device.agent([server], flags=("--check",), certificate="/nonexistent.pem"))
        assert ran.rc == 2 and "Traceback" not in ran.err, ran
    finally:
        silent.close()


def test_a_dead_business_server_sends_the_login_to_the_next(lab: Lab, device: Device) -> None:
    ran = run(lab, lambda port: device.agent([f"localhost:{port}"], dead_server="biz-hq.test:443"))
    assert ran.rc == 0, ran
    assert device.logins.read_text().splitlines() == ["dev-s-0002 biz-hq.test:443 False",
                                                      "dev-s-0002 biz-branch.test:443 True"]


def test_a_fifo_where_the_breakers_are_kept_does_not_stop_the_agent(lab: Lab, device: Device) -> None:
    os.mkfifo(str(device.cache) + ".breakers")
    ran = run(lab, lambda port: device.agent([f"localhost:{port}"]))
    assert ran.rc == 0 and ran.seconds < 5.0, ran
    assert Path(str(device.cache) + ".breakers").is_file()


def test_a_key_with_a_passphrase_is_a_configuration_it_cannot_use(lab: Lab, device: Device) -> None:
    locked = device.where / "locked.key"
    locked.write_bytes(serialization.load_pem_private_key(Path(lab.path(f"{SERIAL}.key")).read_bytes(), None)
                       .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"unit")))
    ran = run(lab, lambda port: device.agent([f"localhost:{port}"], private_key=str(locked)))
    assert ran.rc == 2 and "cannot be used" in ran.err and "Traceback" not in ran.err, ran
