"""Configuration: profiles resolve, bad values are refused with a clear message."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dmzkit_remote_access.failover_watchdog.settings import ConfigError, FenceMode, Settings

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
    ({"app_server_name": "vpn.example"}, "app_server_name needs app_port and app_ca_file"),
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
    ({"app_port": "443"}, "app_port must be an integer, got '443'"),
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
    ({"app_port": 70000}, "app_port must be a TCP port"),
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
