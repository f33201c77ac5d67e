"""The watchdog and the primary's real VPN health agent in namespaces: a
frozen primary (its kernel answers ARP, its agent says nothing) is fenced;
an agent that is gone, or that will not serve this watchdog, is no verdict
and never a fence."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agents import HealthFiles, health_pki, running_agent
from dmzkit_remote_access.vpn_health.settings import Settings as AgentSettings
from namespaces import BACKUP, MGMT, Segment, holds_vip, metric, running_watchdog

LISTENER = ["ip", "netns", "exec"]


def vpn(seg: Segment) -> subprocess.Popen[bytes]:
    """Something listening where the agent looks, on the primary's own address."""
    return subprocess.Popen([*LISTENER, seg.ns("primary"), sys.executable, "-m", "http.server", "--bind", MGMT,
                             "8443"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass
class Primary:
    files: HealthFiles
    server: subprocess.Popen[bytes]  # its VPN
    fence: dict[str, object]  # its switch port, down and up


@pytest.fixture
def primary(segment: Segment, tmp_path: Path) -> Iterator[Primary]:
    """The primary's VPN listening where the agent looks, the PKI of the
    agent and the watchdog, the backup's address (the agent's client)."""
    seg = segment
    port = ["ip", "-n", seg.ns("br"), "link", "set", seg.port("p")]
    seg.ip("backup", "addr", "add", f"{BACKUP}/24", "dev", "eth0")
    server = vpn(seg)
    try:
        yield Primary(health_pki(tmp_path), server, {"mode": "required", "off": [*port, "down"], "on": [*port, "up"]})
    finally:
        server.terminate()
        server.wait()


def test_a_frozen_primary_is_fenced_then_taken_over(segment: Segment, primary: Primary, tmp_path: Path) -> None:
    seg, files = segment, primary.files
    with running_agent(seg, files.agent_config(tmp_path, [f"{MGMT}:8443"])) as agent, \
            running_watchdog(seg, tmp_path, health=files.watchdog_settings(), fence=primary.fence):
        seg.wait(lambda: metric(seg, 'dmzkit_failover_health_reports_total{verdict="up"}') > 5, 5)
        os.kill(agent.pid, signal.SIGSTOP)  # as `podman pause`: the kernel answers, no process runs
        stopped = time.monotonic()
        try:
            seg.wait(lambda: holds_vip(seg, "backup"), 6)
            took = time.monotonic() - stopped
        finally:
            os.kill(agent.pid, signal.SIGCONT)
        # Not before silent_after, counted from the last report: that one left
        # the agent up to one of its intervals before the stop.
        assert took >= 2.0 - AgentSettings.interval, took
        reasons = [t["reason"] for t in seg.state()["transitions"] if t["to"] == "fencing"]
        assert reasons == ["primary's VPN dead while the host answers: its health agent went silent while the "
                           "host answers ARP (frozen)"], reasons


def test_an_agent_gone_or_refusing_this_watchdog_is_no_verdict_and_no_fence(segment: Segment, primary: Primary,
                                                                            tmp_path: Path) -> None:
    seg, files = segment, primary.files
    with running_watchdog(seg, tmp_path, health=files.watchdog_settings(), fence=primary.fence):
        # Nothing listens where this agent looks: it would say "down", if it said anything to us.
        with running_agent(seg, files.agent_config(tmp_path, [f"{MGMT}:8444"], clients=["someone-else"])):
            time.sleep(3.0)
            for verdict in ("up", "down"):
                assert metric(seg, f'dmzkit_failover_health_reports_total{{verdict="{verdict}"}}') == 0
        with running_agent(seg, files.agent_config(tmp_path, [f"{MGMT}:8443"])) as agent:
            seg.wait(lambda: metric(seg, 'dmzkit_failover_health_reports_total{verdict="up"}') >= 5, 5)
            agent.kill()
        primary.server.terminate()  # and the VPN dies, with nobody left to tell
        time.sleep(3.0)
        assert metric(seg, "dmzkit_failover_health_lost_total") >= 1
        transitions = {t["to"] for t in seg.state()["transitions"]}
        assert not {"fencing", "confirm", "takeover"} & transitions, seg.state()
        assert not holds_vip(seg, "backup") and "NO-CARRIER" not in seg.ip("primary", "link", "show", "eth0")


def test_a_connection_silent_for_long_is_made_again(segment: Segment, primary: Primary, tmp_path: Path) -> None:
    """A connection that outlived its agent (the host rebooted behind a cut
    link, nothing told the watchdog) would keep the gateway unhealthy for
    ever: silent twice silent_after, it is dropped and made again."""
    seg, files = segment, primary.files
    with running_agent(seg, files.agent_config(tmp_path, [f"{MGMT}:8443"])) as agent, \
            running_watchdog(seg, tmp_path, health=files.watchdog_settings(silent_after=1.0)):
        seg.wait(lambda: metric(seg, 'dmzkit_failover_health_reports_total{verdict="up"}') > 5, 5)
        os.kill(agent.pid, signal.SIGSTOP)
        try:
            seg.wait(lambda: metric(seg, "dmzkit_failover_health_lost_total") >= 1, 5)
        finally:
            os.kill(agent.pid, signal.SIGCONT)
        before = metric(seg, 'dmzkit_failover_health_reports_total{verdict="up"}')
        seg.wait(lambda: metric(seg, 'dmzkit_failover_health_reports_total{verdict="up"}') > before + 5, 5)
        assert seg.state()["state"] == "standby"  # no fence configured: silence alone moves nothing


def test_the_state_file_says_what_the_agent_says_now(segment: Segment, primary: Primary, tmp_path: Path) -> None:
    """state.json (read by `ctl`, the info module and the lab's drills)
    follows the agent between transitions: heard, then gone."""
    seg, files = segment, primary.files

    def health() -> object:
        return (seg.state().get("health") or {}).get("state")

    with running_watchdog(seg, tmp_path, health=files.watchdog_settings()):
        assert health() == "none"
        with running_agent(seg, files.agent_config(tmp_path, [f"{MGMT}:8443"])):
            seg.wait(lambda: health() == "up", 5)
        seg.wait(lambda: health() == "none", 5)
