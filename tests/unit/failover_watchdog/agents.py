"""The primary's VPN health agent for the watchdog's namespace tests: the real
agent (`python3 -m dmzkit_remote_access.vpn_health`) in the primary's
namespace, watching listeners there, with a throw-away PKI shaped like the
ca role's (the agent's server certificate names the management address, the
watchdog's is a host certificate: CN, no OU)."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import testpki
from namespaces import ENV, MGMT, Segment, ours, sh

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vpn_health"))
from fakes import Pki  # noqa: E402 - the agent's own test helpers

AGENT_PORT = 9470
WATCHDOG_NAME = "backup-failover-watchdog"


@dataclass
class HealthFiles:
    pki: Pki
    agent: tuple[str, str]
    watchdog: tuple[str, str]

    def watchdog_settings(self, **changes: Any) -> dict[str, Any]:
        """The watchdog's `health` block."""
        return {"port": AGENT_PORT, "ca_file": self.pki.ca_file, "crl_file": self.pki.crl_file,
                "certificate": self.watchdog[0], "private_key": self.watchdog[1], **changes}

    def agent_config(self, where: Path, listeners: list[str], **changes: Any) -> Path:
        """The agent's settings: one service whose only evidence is its
        listeners (no systemd in a test namespace: systemctl cannot answer,
        which is no evidence either way)."""
        path = where / "agent.json"
        path.write_text(json.dumps({
            "listen": f"{MGMT}:{AGENT_PORT}", "certificate": self.agent[0], "private_key": self.agent[1],
            "ca_file": self.pki.ca_file, "crl_file": self.pki.crl_file, "clients": [WATCHDOG_NAME],
            "services": [{"unit": "vpn.service", "listen": listeners}], **changes}), encoding="utf-8")
        return path


def health_pki(where: Path) -> HealthFiles:
    ca_key, ca = testpki.make_ca("watchdog test CA")
    pki = Pki(where=where, ca_key=ca_key, ca=ca)
    agent = pki.leaf("primary-vpn-health", address=MGMT)
    watchdog = pki.leaf(WATCHDOG_NAME)
    return HealthFiles(pki=pki, agent=agent[:2], watchdog=watchdog[:2])


@contextmanager
def running_agent(segment: Segment, config: Path) -> Iterator[subprocess.Popen[str]]:
    """The agent in the primary's namespace, once it listens; stopped (SIGTERM) at the end."""
    process = subprocess.Popen(ours(segment.ns("primary"), "--config", str(config), package="vpn_health"),
                               env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        segment.wait(lambda: f"{MGMT}:{AGENT_PORT}" in sh("ip", "netns", "exec", segment.ns("primary"), "ss", "-Hltn")
                     or process.poll() is not None, 5)
        assert process.poll() is None, process.communicate()[1]
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        _, stderr = process.communicate(timeout=10)
        assert "Traceback" not in stderr, stderr
