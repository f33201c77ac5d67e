"""The failover_watchdog module, run by ansible itself on this machine: the
configuration the watchdog's own check-config accepts, written root-only,
idempotent, check mode, and a bad value refused with the old file kept."""
from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from adhoc import run_module

ARGS = {"interface": "sb0", "vip": "198.18.97.10/24", "primary_macs": ["02:00:00:00:00:0A"],
        "primary_mgmt": "198.18.97.11", "witness": "198.18.97.254",
        "fence": {"mode": "best_effort", "off": ["/usr/local/sbin/fence", "off"]}}


@pytest.fixture
def module(watchdog_command: str) -> Callable[..., dict]:
    """Run the module for a configuration under `where`/etc."""
    def run(where: Path, *flags: str, **changes: object) -> dict:
        args = {**ARGS, "path": str(where / "etc" / "config.json"), "executable": watchdog_command, **changes}
        return run_module("failover_watchdog", args, *flags)
    return run


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_root_only_once_and_then_left_alone(tmp_path: Path, module: Callable[..., dict]) -> None:
    config = tmp_path / "etc" / "config.json"
    checked = module(tmp_path, "--check", "--diff")
    assert checked["changed"] and not config.exists() and '"best_effort"' in checked["diff"]["after"]
    assert module(tmp_path)["changed"]
    assert mode(config) == 0o600, oct(mode(config))
    assert json.loads(config.read_text())["primary_macs"] == ["02:00:00:00:00:0a"]
    config.chmod(0o644)  # loosened by hand: the next change makes it root's again
    assert module(tmp_path, hold_down=10.0)["changed"] and mode(config) == 0o600
    assert not module(tmp_path, hold_down=10.0)["changed"]


def test_a_value_the_watchdog_refuses_keeps_the_old_file(tmp_path: Path, module: Callable[..., dict]) -> None:
    assert module(tmp_path)["changed"]
    config = tmp_path / "etc" / "config.json"
    before = config.read_text()
    refused = module(tmp_path, vip="198.18.97.11/24")
    assert refused.get("failed") and "differ from the vip" in refused["msg"], refused
    assert config.read_text() == before
    assert sorted(p.name for p in config.parent.iterdir()) == ["config.json"]


def test_an_ipv6_vip_is_written_for_the_watchdog(tmp_path: Path, module: Callable[..., dict]) -> None:
    assert module(tmp_path, vip6="2001:db8:1::10/64", vip6_is_router=True)["changed"]
    config = json.loads((tmp_path / "etc" / "config.json").read_text())
    assert (config["vip6"], config["vip6_is_router"]) == ("2001:db8:1::10/64", True)
    refused = module(tmp_path, vip6="198.18.97.10/24")
    assert refused.get("failed") and "vip6" in refused["msg"], refused


def test_the_health_agent_is_written_for_the_watchdog(tmp_path: Path, module: Callable[..., dict]) -> None:
    health = {"port": 9470, "ca_file": "/etc/dmzkit-pki/ca-chain.pem", "crl_file": "/etc/dmzkit-pki/crl.pem",
              "certificate": "/etc/dmzkit-pki/vnc1-failover-watchdog.fullchain.pem",
              "private_key": "/etc/dmzkit-pki/vnc1-failover-watchdog.key"}
    assert module(tmp_path, health=health)["changed"]
    config = json.loads((tmp_path / "etc" / "config.json").read_text())
    assert config["health"] == {**health, "down_reports": 2, "silent_after": 2.0} and "app_interval" not in config
    refused = module(tmp_path, health={**health, "down_reports": 1})
    assert refused.get("failed") and "health.down_reports must be at least 2" in refused["msg"], refused


def test_file_options_set_the_mode_and_a_loosened_file_is_narrowed_again(tmp_path: Path,
                                                                         module: Callable[..., dict]) -> None:
    config = tmp_path / "etc" / "config.json"
    assert module(tmp_path, mode="0640")["changed"] and mode(config) == 0o640
    assert not module(tmp_path, mode="0640")["changed"]
    config.chmod(0o644)  # the content is the same, the mode is not
    checked = module(tmp_path, "--check")
    assert checked["changed"] and mode(config) == 0o644
    assert module(tmp_path)["changed"] and mode(config) == 0o600
    assert sorted(p.name for p in config.parent.iterdir()) == ["config.json"]


def test_a_missing_watchdog_is_named(tmp_path: Path, module: Callable[..., dict]) -> None:
    missing = module(tmp_path, executable=str(tmp_path / "nowhere"))
    assert missing.get("failed") and "install the service first (role failover_watchdog)" in missing["msg"], missing


SECRET = "s3cr3t-fence-token"  # what a careless user puts on a fence's command line


def test_argv_values_stay_out_of_the_result(tmp_path: Path, module: Callable[..., dict]) -> None:
    """Fence and hook commands are argv: none of their arguments comes back in
    the result (its config, its diff, its invocation), changed or refused."""
    fence = {"mode": "required", "off": ["/usr/local/sbin/fence", "--token", SECRET, "off"]}
    hooks = {"on_takeover": ["/usr/bin/logger", f"--password={SECRET}"]}
    assert module(tmp_path)["changed"]
    checked = module(tmp_path, "--check", "--diff", fence=fence, hooks=hooks)
    assert checked["changed"] and SECRET not in json.dumps(checked), checked
    shown = json.loads(checked["diff"]["after"])  # which command runs, not with what
    assert shown["fence"] == {**fence, "off": ["/usr/local/sbin/fence", *["******** (changed)"] * 3], "on": [],
                              "timeout": 5.0}, shown
    written = module(tmp_path, "--diff", fence=fence, hooks=hooks)
    assert written["changed"] and SECRET not in json.dumps(written), written
    assert SECRET in (tmp_path / "etc" / "config.json").read_text()  # the watchdog still gets it
    assert written["changed_settings"] == ["fence", "hooks"], written
    # Only an argument changed: the diff says where, still without the values.
    other = {**fence, "off": ["/usr/local/sbin/fence", "--token", SECRET + "2", "off"]}
    again = module(tmp_path, "--diff", fence=other, hooks=hooks)
    assert again["changed"] and again["changed_settings"] == ["fence"] and SECRET not in json.dumps(again), again
    assert again["diff"]["before"] != again["diff"]["after"], again["diff"]
    refused = module(tmp_path, "--diff", fence=other, hooks=hooks, vip="198.18.97.11/24")
    assert refused.get("failed") and SECRET not in json.dumps(refused), refused
