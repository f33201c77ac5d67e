"""Configuration: profiles resolve, bad values are refused with a clear message."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dmzkit_remote_access.failover_watchdog.settings import ConfigError, FenceMode, Settings

HEALTH: dict[str, Any] = {"port": 9470, "ca_file": "/etc/dmzkit-pki/ca-chain.pem",
                          "crl_file": "/etc/dmzkit-pki/crl.pem",
                          "certificate": "/etc/dmzkit-pki/vnc1-failover-watchdog.crt",
                          "private_key": "/etc/dmzkit-pki/vnc1-failover-watchdog.key"}
BASE: dict[str, Any] = {
    "interface": "eth1",
    "vip": "198.18.1.10/24",
    "primary_macs": ["02:00:00:00:00:0A"],
    "primary_mgmt": "198.18.1.11",
    "witness": "198.18.1.254",
}


@pytest.mark.parametrize(("profile", "interval", "dead_time", "rtt_budget"), [
    ("conservative", 1.0, 3.0, 0.05), ("default", 0.1, 0.3, 0.02), ("fast", 0.05, 0.15, 0.01),
])
def test_profiles(profile: str, interval: float, dead_time: float, rtt_budget: float) -> None:
    s = Settings.from_dict({**BASE, "profile": profile})
    assert s.profile.interval == interval
    assert s.profile.dead_time == pytest.approx(dead_time)
    assert s.profile.rtt_budget == rtt_budget
    assert Settings.from_dict({**BASE, "profile": profile, "rtt_budget": 0.004}).profile.rtt_budget == 0.004


def test_macs_are_normalised() -> None:
    assert Settings.from_dict(BASE).primary_macs == {"02:00:00:00:00:0a"}


@pytest.mark.parametrize(("change", "message"), [
    ({"profile": "turbo"}, "profile must be one of"),
    # The old TLS-handshake probe is gone (issue 15, finding 7): its settings are refused.
    ({"app_port": 443}, "unknown settings: app_port"),
    ({"app_server_name": "vpn.example"}, "unknown settings: app_server_name"),
    ({"gateway": "198.18.1.254"}, "gateway needs routing_table"),
    ({"gateway": "198.18.5.1", "routing_table": 100}, "must be in the VIP's subnet"),
    ({"routing_table": 255}, "routing_table must be 1..252"),
    ({"interval": 0.01}, "interval below 0.02 s is refused"),
    ({"misses": 1}, "misses must be at least 2"),
    ({"profile": "fast", "rtt_budget": 0.05}, "rtt_budget must be shorter than the interval"),
    ({"rtt_budget": 0}, "rtt_budget must be positive"),
    ({"vip": "198.18.1.10"}, "vip needs its prefix length"),
    ({"vip": "not-an-address/24"}, "vip: Expected 4 octets"),
    ({"primary_macs": []}, "primary_macs must list"),
    ({"primary_macs": ["02:00:00:00:00"]}, "primary_macs must list"),
    ({"primary_mgmt": "198.18.1.10"}, "cannot probe an address it may hold"),
    ({"witness": "198.18.5.1"}, "witness 198.18.5.1 is not in the VIP's subnet"),
    ({"primary_macs": "02:00:00:00:00:0a"}, "primary_macs must list"),
    # No group or all-zero address: trusting one would trust whoever writes it into a frame.
    ({"primary_macs": ["ff:ff:ff:ff:ff:ff"]}, "group or all-zero address"),
    ({"primary_macs": ["01:00:5e:00:00:01"]}, "group or all-zero address"),
    ({"primary_macs": ["00:00:00:00:00:00"]}, "group or all-zero address"),
    ({"primary_macs": ["02:00:00:00:00:0a", None]}, "primary_macs must list"),
    ({"health": {**HEALTH, "port": "9470"}}, "health.port must be an integer, got '9470'"),
    ({"vip6_is_router": "yes"}, "vip6_is_router must be true or false"),
    ({"vip6": "2001:db8::zz/64"}, "vip6: "),
    ({"vip6": ""}, "vip6: "),
    ({"hooks": {"on_takeover": "/bin/true"}}, "hooks.on_takeover must be a list"),
    ({"hooks": {"on_takeover": [""]}}, "hooks.on_takeover must be a list of non-empty strings"),
    ({"damping": {"window": 0}}, "damping.window must be positive"),
    ({"damping": {"burst": 1}}, "unknown settings: damping.burst"),
    ({"services": [""]}, "services must be a list of systemd unit names"),
    ({"metrics_listen": "localhost"}, "metrics_listen must be address:port"),
    ({"fence": {"mode": "required"}}, "needs fence.off"),
    ({"fence": {"mode": "best_effort", "off": "podman pause gw1"}}, "fence.off must be a list"),
    ({"fence": {"mode": "sometimes"}}, "'sometimes' is not a valid FenceMode"),
    ({"hooks": {"on_boot": ["/bin/true"]}}, "hooks may only name"),
    ({"hold_down": 0}, "hold_down must be positive"),
    ({"health": {**HEALTH, "port": 70000}}, "health.port must be a TCP port"),
    ({"health": {**HEALTH, "down_reports": 1}}, "health.down_reports must be at least 2"),
    ({"health": {**HEALTH, "silent_after": 0.1}}, "health.silent_after must be 0.5 to 60 s"),
    ({"health": {**HEALTH, "certificate": ""}}, "health needs ca_file, crl_file, certificate and private_key"),
    ({"health": {k: v for k, v in HEALTH.items() if k != "private_key"}}, "missing setting 'health.private_key'"),
    ({"health": {**HEALTH, "server_name": "gw1"}}, "unknown settings: health.server_name"),
    ({"colour": "blue"}, "unknown settings: colour"),
])
def test_bad_settings_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_dict({**BASE, **change})


def test_missing_setting_is_named() -> None:
    raw = dict(BASE)
    del raw["witness"]
    with pytest.raises(ConfigError, match="missing setting 'witness'"):
        Settings.from_dict(raw)


def test_load_reports_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.load(str(tmp_path / "absent.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not JSON"):
        Settings.load(str(bad))
    good = tmp_path / "good.json"
    good.write_text(json.dumps({**BASE, "fence": {"mode": "required", "off": ["fence", "off"]}}), encoding="utf-8")
    assert Settings.load(str(good)).fence.mode is FenceMode.REQUIRED


def test_the_health_agent_defaults_to_two_reports_and_two_silent_seconds() -> None:
    health = Settings.from_dict({**BASE, "health": HEALTH}).health
    assert health is not None and (health.port, health.down_reports, health.silent_after) == (9470, 2, 2.0)
    assert Settings.from_dict(BASE).health is None
