"""The standby_nic module against a real kernel, in a private network namespace.

The namespace has the host's own NIC (an address in the VIP's subnet) and an
address-less standby NIC; the module is run by ansible itself, inside it,
with the watchdog's command from this checkout doing the work.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from adhoc import run_module

_TAGS = itertools.count()
ARGS = {"interface": "sb0", "vip": "198.18.97.10/24"}
RULE = "from 198.18.97.10 lookup 100"


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if os.geteuid() != 0:
        pytest.skip("needs root to make network namespaces")
    name = f"dmzkit-sn{os.getpid() % 10000}{next(_TAGS)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (["link", "add", "sb0", "type", "veth", "peer", "name", "own0"],
                    ["link", "set", "own0", "up"], ["addr", "add", "198.18.97.21/24", "dev", "own0"]):
            subprocess.run(["ip", "-n", name, *cmd], check=True)
        subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1",
                        "net.ipv4.conf.all.arp_announce=2"], check=True)
        yield name, tmp_path / "standby-nic.json"
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


Module = Callable[..., dict]


@pytest.fixture
def module(watchdog_command: str) -> Module:
    def run(ns: str, record: Path, *flags: str, **changes: object) -> dict:
        args = {**ARGS, "path": str(record), "executable": watchdog_command, **changes}
        return run_module("standby_nic", args, *flags, netns=ns)
    return run


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True).stdout


def sysctl(ns: str, name: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-n", name], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_check_mode_reports_and_changes_nothing_then_apply_is_idempotent(netns: tuple[str, Path],
                                                                         module: Module) -> None:
    ns, record = netns
    checked = module(ns, record, "--check", "--diff")
    assert checked["changed"] and not record.exists()
    assert "198.18.97.10" not in ip(ns, "rule")
    assert checked["diff"]["after"]["rules"] == ["from 198.18.97.10/32 lookup 100 priority 100"]
    applied = module(ns, record)
    assert applied["changed"] and applied["settings"]["routing_table"] == 100
    assert RULE in ip(ns, "rule")
    assert "UP" in ip(ns, "link", "show", "sb0")
    assert ip(ns, "-4", "addr", "show", "dev", "sb0").strip() == ""
    assert json.loads(record.read_text())["vip"] == "198.18.97.10/24"
    assert module(ns, record)["changed"] is False
    assert module(ns, record, "--check")["changed"] is False


def test_bad_input_is_refused_before_any_change(netns: tuple[str, Path], module: Module) -> None:
    ns, record = netns
    for changes, message in (({"vip": "198.18.97.10"}, "vip needs its prefix length"),
                             ({"vip": "198.18.97.300/24"}, "vip: "),
                             ({"table": 255}, "routing_table must be 1..252"),
                             ({"priority": 0}, "rule_priority must be 1..32765"),
                             ({"interface": "missing0"}, "no interface missing0")):
        result = module(ns, record, **changes)
        assert result.get("failed") and message in result["msg"], result
        assert ".standby-nic.json." not in result["msg"], "the message names the real file, not the candidate"
    ip(ns, "addr", "add", "198.18.97.5/24", "dev", "sb0")
    assert "holds no address of its own" in module(ns, record)["msg"]
    assert not record.exists() and "198.18.97.10" not in ip(ns, "rule")
    assert sorted(p.name for p in record.parent.iterdir() if p.name.startswith(".")) == []


def test_a_new_rule_is_added_before_the_old_one_goes(netns: tuple[str, Path], module: Module) -> None:
    ns, record = netns
    assert module(ns, record)["changed"]
    moved = module(ns, record, "--diff", priority=200)
    assert moved["changed"] and moved["diff"]["before"]["rules"] == ["from 198.18.97.10/32 lookup 100 priority 100"]
    rules = [line for line in ip(ns, "rule").splitlines() if "lookup 100" in line]
    assert rules == ["200:\tfrom 198.18.97.10 lookup 100"], rules


def test_the_arp_sysctls_are_raised_on_the_standby_nic(netns: tuple[str, Path], module: Module) -> None:
    ns, record = netns
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=0",
                    "net.ipv4.conf.all.arp_announce=0"], check=True)
    assert module(ns, record)["changed"]
    assert (sysctl(ns, "net.ipv4.conf.sb0.arp_ignore"), sysctl(ns, "net.ipv4.conf.sb0.arp_announce")) == ("1", "2")
    assert not module(ns, record)["changed"]


def test_absent_removes_the_rule_and_the_file_then_present_brings_them_back(netns: tuple[str, Path],
                                                                            module: Module) -> None:
    ns, record = netns
    assert module(ns, record)["changed"]
    checked = module(ns, record, "--check", state="absent")
    assert checked["changed"] and record.exists() and RULE in ip(ns, "rule")
    removed = module(ns, record, state="absent")
    assert removed["changed"] and not record.exists() and RULE not in ip(ns, "rule")
    assert "UP" in ip(ns, "link", "show", "sb0"), "the link stays up"
    assert not module(ns, record, state="absent")["changed"]
    assert module(ns, record)["changed"] and record.exists() and RULE in ip(ns, "rule")


def test_the_boot_unit_command_restores_the_nic_and_can_run_again(netns: tuple[str, Path], module: Module,
                                                                  watchdog_command: str) -> None:
    """What dmzkit-standby-nic.service runs at boot, on the file the module wrote."""
    ns, record = netns
    assert module(ns, record)["changed"]
    ip(ns, "link", "set", "sb0", "down")
    ip(ns, "rule", "del", "from", "198.18.97.10", "lookup", "100")

    def boot() -> dict:
        run = subprocess.run(["ip", "netns", "exec", ns, watchdog_command, "standby-nic", str(record)],
                             capture_output=True, text=True, check=True)
        return json.loads(run.stdout)

    assert boot()["changed"]
    assert RULE in ip(ns, "rule") and "UP" in ip(ns, "link", "show", "sb0")
    assert not boot()["changed"], "a restart of the unit finds nothing to do"
