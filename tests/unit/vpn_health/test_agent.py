"""The agent against a fake VPN service it watches for real (its process,
its listener, its control socket) and systemd made up from that process;
its verdicts pushed over mutual TLS to the watchdog's certificate only."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fakes import FakeService, FakeUnits, Pki

from dmzkit_remote_access.vpn_health import __main__ as cli
from dmzkit_remote_access.vpn_health.agent import Agent
from dmzkit_remote_access.vpn_health.checks import UnitState
from dmzkit_remote_access.vpn_health.report import Report, Verdict
from dmzkit_remote_access.vpn_health.settings import ConfigError, Settings

UNIT = "ocserv.service"
WATCHDOG = "vnc1-failover-watchdog"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raw_settings(pki: Pki, service: FakeService, **changes: Any) -> dict[str, Any]:
    cert, key, _ = pki.leaf("gw1-vpn-health", server=True, address="127.0.0.1")
    return {"listen": f"127.0.0.1:{free_port()}", "certificate": cert, "private_key": key, "ca_file": pki.ca_file,
            "crl_file": pki.crl_file, "clients": [WATCHDOG],
            "services": [{"unit": UNIT, "listen": [service.listener], "control": service.control}],
            "interval": 0.05, "restart_grace": 1.0, "hang_after": 1.0, **changes}


def agent_for(pki: Pki, service: FakeService, **changes: Any) -> tuple[Agent, FakeUnits]:
    units = FakeUnits(processes={UNIT: service.process})
    return Agent(Settings.from_dict(raw_settings(pki, service, **changes)), units=units), units


def run(agent: Agent, body: Callable[[], Awaitable[None]]) -> None:
    """The agent serving, and `body` beside it."""
    async def main() -> None:
        task = asyncio.create_task(agent.run())
        try:
            await until(agent, lambda r: r.seq > 0, 5)
            await body()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    asyncio.run(main())


async def until(agent: Agent, holds: Callable[[Report], bool], timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if holds(agent.report):
            return time.monotonic() - start
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {timeout} s: {agent.report}")


async def always(agent: Agent, holds: Callable[[Report], bool], seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert holds(agent.report), agent.report
        await asyncio.sleep(0.01)


def verdict(v: Verdict) -> Callable[[Report], bool]:
    return lambda r: r.verdict is v


def test_a_dead_main_process_is_down_at_once(pki: Pki, fake_service: FakeService) -> None:
    agent, _ = agent_for(pki, fake_service)

    async def body() -> None:
        await until(agent, verdict(Verdict.UP), 3)
        os.kill(fake_service.process.pid, signal.SIGKILL)
        took = await until(agent, verdict(Verdict.DOWN), 2)
        assert took < 0.5, took
        assert "has exited" in agent.report.reason or "is failed" in agent.report.reason
    run(agent, body)


def test_a_restart_is_not_a_death_until_it_takes_too_long(pki: Pki, fake_service: FakeService) -> None:
    agent, units = agent_for(pki, fake_service)

    async def body() -> None:
        await until(agent, verdict(Verdict.UP), 3)
        # systemctl restart: the job first, then the old process goes.
        units.override[UNIT] = UnitState("deactivating", "stop-sigterm", True, fake_service.process.pid)
        os.kill(fake_service.process.pid, signal.SIGKILL)
        await until(agent, verdict(Verdict.RESTARTING), 2)
        units.override[UNIT] = UnitState("activating", "start", True, 0)
        await always(agent, lambda r: r.verdict is not Verdict.DOWN, 0.7)
        took = await until(agent, verdict(Verdict.DOWN), 2)  # restart_grace is 1 s
        assert "for 1." in agent.report.reason, agent.report.reason
        assert took < 1.0
    run(agent, body)


def test_a_unit_started_again_is_up_at_the_next_check(pki: Pki, fake_service: FakeService) -> None:
    """A "down" read from systemd is not repeated for a second after the
    unit started again: a watchdog handed back to meanwhile would fence it."""
    agent, units = agent_for(pki, fake_service)

    async def body() -> None:
        await until(agent, verdict(Verdict.UP), 3)
        units.override[UNIT] = UnitState("inactive", "dead", False, 0)  # systemctl stop
        await until(agent, verdict(Verdict.DOWN), 2)
        asked = units.asked
        while units.asked == asked:  # systemd has just answered "inactive"
            await asyncio.sleep(0.005)
        del units.override[UNIT]  # systemctl start
        took = await until(agent, verdict(Verdict.UP), 2)
        assert took < 0.3, took  # the interval is 0.05 s; systemd was asked once a second
    run(agent, body)


def test_a_service_started_a_moment_ago_may_not_listen_yet(pki: Pki, fake_service: FakeService) -> None:
    """ocserv's unit is Type=simple: active from the fork, listening a moment
    later. `systemctl restart ocserv` (a handler's) must not read as a death."""
    agent, units = agent_for(pki, fake_service)
    starting = subprocess.Popen(["sleep", "10"])  # the new main process, not listening yet

    async def body() -> None:
        await until(agent, verdict(Verdict.UP), 3)
        units.override[UNIT] = UnitState("active", "running", False, starting.pid, active_since=time.monotonic())
        os.kill(fake_service.process.pid, signal.SIGKILL)
        await until(agent, verdict(Verdict.RESTARTING), 2)
        assert "not listening yet" in agent.report.reason, agent.report.reason
        await always(agent, lambda r: r.verdict is not Verdict.DOWN, 0.7)
        took = await until(agent, verdict(Verdict.DOWN), 2)  # restart_grace is 1 s
        assert took < 1.0 and "nothing listens" in agent.report.reason, agent.report.reason
    try:
        run(agent, body)
    finally:
        starting.kill()
        starting.wait()


def test_a_process_gone_while_systemd_is_slow_to_say_why_is_no_death_yet(pki: Pki, fake_service: FakeService) -> None:
    """A restart job stops the process first: until systemd answers, a gone
    process may be a restart. The reports go on meanwhile, each check waiting
    for systemd a bounded time."""
    agent, units = agent_for(pki, fake_service)

    async def body() -> None:
        await until(agent, verdict(Verdict.UP), 3)
        units.slow = True
        os.kill(fake_service.process.pid, signal.SIGKILL)
        await until(agent, verdict(Verdict.BUSY), 2)
        assert "waiting for systemd" in agent.report.reason, agent.report.reason
        seq = agent.report.seq
        await always(agent, lambda r: r.verdict is Verdict.BUSY, 1.5)
        assert agent.report.seq - seq >= 2  # still reporting, if slower
        units.slow = False  # systemd answers: failed
        await until(agent, verdict(Verdict.DOWN), 2)
    run(agent, body)


def test_a_stopped_main_process_is_down_and_up_again_when_continued(pki: Pki, fake_service: FakeService) -> None:
    agent, _ = agent_for(pki, fake_service)

    async def body() -> None:
        await until(agent, verdict(Verdict.UP), 3)
        os.kill(fake_service.process.pid, signal.SIGSTOP)
        await until(agent, verdict(Verdict.DOWN), 1)
        assert "is stopped" in agent.report.reason
        os.kill(fake_service.process.pid, signal.SIGCONT)
        await until(agent, verdict(Verdict.UP), 3)
    run(agent, body)


def test_a_listener_that_went_is_down(pki: Pki, fake_service: FakeService) -> None:
    extra = socket.socket()
    extra.bind(("127.0.0.1", 0))
    extra.listen()
    gone = f"127.0.0.1:{extra.getsockname()[1]}"
    agent, _ = agent_for(pki, fake_service, services=[
        {"unit": UNIT, "listen": [fake_service.listener, gone]}])

    async def body() -> None:
        await until(agent, verdict(Verdict.UP), 3)
        extra.close()
        await until(agent, verdict(Verdict.DOWN), 1)
        assert f"nothing listens on {gone}" in agent.report.reason
    run(agent, body)


def test_a_service_never_seen_up_is_no_death(pki: Pki, fake_service: FakeService) -> None:
    """The gateway being deployed: nginx not yet on the VIP when the agent
    starts. Its absence is no evidence; a "down" would fence the gateway."""
    missing = f"127.0.0.1:{free_port()}"
    agent, _ = agent_for(pki, fake_service, services=[
        {"unit": UNIT, "listen": [fake_service.listener, missing]}])

    async def body() -> None:
        await always(agent, lambda r: r.verdict is not Verdict.DOWN, 1.0)
        assert agent.report.verdict is Verdict.BUSY and "not up since the agent started" in agent.report.reason
    run(agent, body)


def test_a_working_service_is_busy_a_hung_one_down(pki: Pki, fake_service: FakeService) -> None:
    """Both leave the control request unanswered: only CPU progress tells
    a service overloaded (busy: never a takeover) from a deadlocked one."""
    agent, _ = agent_for(pki, fake_service)

    async def body() -> None:
        await until(agent, lambda r: r.services[UNIT]["control"] is not None
                    and r.services[UNIT]["control"]["outcome"] == "answered", 5)
        os.kill(fake_service.process.pid, signal.SIGUSR2)  # spins: no answers, all its CPU
        await until(agent, verdict(Verdict.BUSY), 4)
        await always(agent, lambda r: r.verdict is not Verdict.DOWN, 2.5)
        os.kill(fake_service.process.pid, signal.SIGUSR1)  # hangs: no answers, no CPU
        took = await until(agent, verdict(Verdict.DOWN), 4)
        assert "unanswered" in agent.report.reason and "no progress" in agent.report.reason, agent.report.reason
        assert took <= 1.0 + 0.5 + 1.0 + 0.5  # a request under way, the pause, hang_after, margin
    run(agent, body)


def test_a_control_request_that_fails_at_once_proves_nothing(pki: Pki, fake_service: FakeService) -> None:
    agent, _ = agent_for(pki, fake_service, services=[
        {"unit": UNIT, "listen": [fake_service.listener], "control": ["false"]}])

    async def body() -> None:
        await until(agent, lambda r: (r.services[UNIT]["control"] or {}).get("outcome") == "error", 3)
        await always(agent, verdict(Verdict.UP), 0.5)
    run(agent, body)


def test_systemd_that_cannot_answer_is_no_evidence(pki: Pki, fake_service: FakeService) -> None:
    class Silent(FakeUnits):
        async def states(self, units: Any) -> dict[str, UnitState]:
            self.asked += 1
            raise OSError("Failed to connect to bus")
    agent = Agent(Settings.from_dict(raw_settings(pki, fake_service)), units=Silent())

    async def body() -> None:
        await always(agent, verdict(Verdict.UP), 1.0)
        assert isinstance(agent.units, Silent) and agent.units.asked <= 3  # asked once a second, not every tick
    run(agent, body)


# -- who may read the verdicts --------------------------------------------------------

async def read_reports(agent: Agent, pki: Pki, cert: tuple[str, str] | None, count: int) -> list[bytes]:
    """Connect as the holder of `cert` and read up to `count` lines (b'' once closed)."""
    context = ssl.create_default_context(cafile=pki.ca_file)
    context.check_hostname = False
    if cert is not None:
        context.load_cert_chain(*cert)
    host, _, port = agent.settings.listen.rpartition(":")
    lines: list[bytes] = []
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port), ssl=context), 5)
    except (OSError, TimeoutError):
        return lines
    try:
        for _ in range(count):
            line = await asyncio.wait_for(reader.readline(), 2)
            lines.append(line)
            if not line:
                break
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()
    return lines


def test_only_the_watchdogs_host_certificate_is_served(pki: Pki, fake_service: FakeService) -> None:
    """A forged "down" would fence a healthy gateway, and the verdicts tell
    an attacker when the gateway is weak: nobody else reads or writes here."""
    agent, _ = agent_for(pki, fake_service)
    watchdog = pki.leaf(WATCHDOG)[:2]
    refused = {
        # the watchdog's name on a person's certificate (an OU): not a host's
        "person": pki.leaf("alice", common_name=WATCHDOG, unit="staff")[:2],
        # another host of the same CA
        "other host": pki.leaf("gw1-portal")[:2],
    }
    failing = {
        "no certificate": None,
        # a server's certificate (no clientAuth)
        "server": pki.leaf("vnc1-vnc-backup", common_name=WATCHDOG, server=True)[:2],
    }
    from testpki import make_ca
    other_ca = make_ca("someone else's CA")
    failing["another CA"] = pki.leaf("forged", common_name=WATCHDOG, ca=other_ca)[:2]

    async def body() -> None:
        lines = await read_reports(agent, pki, watchdog, 5)
        reports = [Report.decode(line) for line in lines]
        assert len(reports) == 5 and [r.seq for r in reports] == sorted({r.seq for r in reports})
        assert reports[-1].verdict is Verdict.UP and UNIT in reports[-1].services
        for name, cert in {**refused, **failing}.items():
            assert await read_reports(agent, pki, cert, 3) in ([], [b""]), name
        assert agent.refused == len(refused)
        # Still serving its watchdog.
        assert len(await read_reports(agent, pki, watchdog, 2)) == 2
    run(agent, body)


def test_a_revoked_watchdog_certificate_is_refused(pki: Pki, fake_service: FakeService) -> None:
    cert, key, serial = pki.leaf(WATCHDOG)
    pki.crl(revoked=[serial])
    agent, _ = agent_for(pki, fake_service)

    async def body() -> None:
        assert await read_reports(agent, pki, (cert, key), 2) in ([], [b""])
    run(agent, body)


def test_settings_are_checked_with_the_files_they_name(
        pki: Pki, fake_service: FakeService, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    raw = raw_settings(pki, fake_service)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(raw))
    assert cli.main(["--check", "--config", str(config)]) == 0
    config.write_text(json.dumps(raw | {"private_key": str(tmp_path / "none.key")}))
    assert cli.main(["--check", "--config", str(config)]) == 2
    assert "TLS files" in capsys.readouterr().err


@pytest.mark.parametrize(("change", "message"), [
    ({"listen": "gw1:9470"}, "listen must be an IPv4 address:port"),
    ({"listen": "198.18.1.11:0"}, "listen must be an IPv4 address:port"),
    ({"clients": []}, "clients must name"),
    ({"services": []}, "services must name at least one"),
    ({"services": [{"unit": "ocserv"}]}, r"services\[0\].unit must be a systemd service"),
    ({"services": [{"unit": "ocserv.service", "listen": ["4443"]}]}, r"services\[0\].listen\[0\]"),
    ({"services": [{"unit": "ocserv.service", "control": [""]}]}, r"services\[0\].control must be a list"),
    ({"services": [{"unit": "a.service"}, {"unit": "a.service"}]}, "each unit once"),
    ({"interval": 0}, "interval must be"),
    ({"restart_grace": 0}, "restart_grace must be positive"),
    ({"hang_after": 0.1}, "hang_after must be at least"),
    ({"services": [{"unit": "a.service", "colour": "red"}]}, "unknown settings: services"),
])
def test_bad_settings_are_refused(pki: Pki, fake_service: FakeService, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_dict(raw_settings(pki, fake_service) | change)
