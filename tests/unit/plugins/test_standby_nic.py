"""The standby_nic module against a real kernel, in a private network namespace.

The namespace has the host's own NIC (an address in the VIP's subnet) and an
address-less standby NIC; the module is run by ansible itself, inside it.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from adhoc import run_module

_TAGS = itertools.count()
ARGS = {"interface": "sb0", "vip": "198.18.97.10/24", "primary_macs": ["02:00:00:00:00:0A"],
        "primary_mgmt": "198.18.97.11", "witness": "198.18.97.254"}


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


def module(ns: str, record: Path, *flags: str, **changes: object) -> dict:
    return run_module("standby_nic", {**ARGS, "record": str(record), **changes}, *flags, netns=ns)


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True).stdout


def test_check_mode_reports_and_changes_nothing_then_apply_is_idempotent(netns: tuple[str, Path]) -> None:
    ns, record = netns
    checked = module(ns, record, "--check", "--diff")
    assert checked["changed"] and not record.exists()
    assert "198.18.97.10" not in ip(ns, "rule")
    applied = module(ns, record)
    assert applied["changed"] and applied["record"]["primary_macs"] == ["02:00:00:00:00:0a"]
    assert "from 198.18.97.10 lookup 100" in ip(ns, "rule")
    assert "UP" in ip(ns, "link", "show", "sb0")
    assert ip(ns, "-4", "addr", "show", "dev", "sb0").strip() == ""
    assert json.loads(record.read_text())["witness"] == "198.18.97.254"
    assert record.with_suffix(".ip").read_text().startswith("link set dev sb0 up\n")
    assert module(ns, record)["changed"] is False


def test_bad_input_is_refused_before_any_change(netns: tuple[str, Path]) -> None:
    ns, record = netns
    for changes, message in (({"witness": "198.18.97.10"}, "witness must differ from the VIP"),
                             ({"primary_mgmt": "198.18.5.1"}, "is not in the VIP's subnet"),
                             ({"vip": "198.18.97.10"}, "vip needs its prefix length"),
                             ({"primary_macs": ["nope"]}, "primary_macs must list"),
                             ({"interface": "missing0"}, "no interface missing0")):
        result = module(ns, record, **changes)
        assert result.get("failed") and message in result["msg"], result
    ip(ns, "addr", "add", "198.18.97.5/24", "dev", "sb0")
    assert "holds no address of its own" in module(ns, record)["msg"]
    assert not record.exists() and "198.18.97.10" not in ip(ns, "rule")
