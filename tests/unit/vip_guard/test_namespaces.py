"""The guard against a real kernel: a gateway and a neighbour holding the VIP,
in private network namespaces joined by a veth pair, on lab addresses."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[3] / "src"
VIP, GATEWAY, NEIGHBOUR = "198.18.99.10", "198.18.99.11", "198.18.99.21"
_TAGS = itertools.count()


def ip(namespace: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", namespace, *args], check=True, capture_output=True, text=True).stdout


def holds_vip(namespace: str) -> bool:
    return f"inet {VIP}/24" in ip(namespace, "-4", "-o", "address", "show", "dev", "eth0")


def wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def segment() -> Iterator[tuple[str, str]]:
    """(gateway, neighbour) namespaces; the neighbour holds the VIP."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make network namespaces")
    tag = f"{os.getpid() % 10000}x{next(_TAGS)}"
    gateway, neighbour = f"dmzkit-vg{tag}-gw", f"dmzkit-vg{tag}-nb"
    try:
        for namespace in (gateway, neighbour):
            subprocess.run(["ip", "netns", "add", namespace], check=True)
        ip(gateway, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", neighbour)
        for namespace, address in ((gateway, GATEWAY), (neighbour, NEIGHBOUR), (neighbour, VIP)):
            ip(namespace, "address", "add", f"{address}/24", "dev", "eth0")
        for namespace in (gateway, neighbour):
            ip(namespace, "link", "set", "eth0", "up")
        assert wait(lambda: "LOWER_UP" in ip(gateway, "link", "show", "eth0"), 5)
        yield gateway, neighbour
    finally:
        for namespace in (gateway, neighbour):
            subprocess.run(["ip", "netns", "delete", namespace], check=False)


def test_the_guard_claims_only_what_nobody_answers_for_and_releases_it_when_stopped(
        segment: tuple[str, str]) -> None:
    gateway, neighbour = segment
    guard = subprocess.Popen(
        ["ip", "netns", "exec", gateway, sys.executable, "-m", "dmzkit_remote_access.vip_guard",
         "--interface", "eth0", "--vip", f"{VIP}/24", "--interval", "0.05"],
        env={**os.environ, "PYTHONPATH": str(SRC)}, stderr=subprocess.PIPE, text=True)
    try:
        assert not wait(lambda: holds_vip(gateway), 1.0), "claimed a VIP the neighbour answers for"
        ip(neighbour, "address", "del", f"{VIP}/24", "dev", "eth0")
        assert wait(lambda: holds_vip(gateway), 2.0), "never claimed the free VIP"
    finally:
        guard.terminate()
        _, stderr = guard.communicate(timeout=10)
    assert guard.returncode == 0 and "Traceback" not in stderr, stderr
    assert not holds_vip(gateway), "a stopped guard releases the VIP"


FORGER = """
import ipaddress, json, socket, sys, time
from dmzkit_remote_access.net import arp
vip, until = ipaddress.IPv4Address(sys.argv[1]), time.monotonic() + float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(arp.ETH_P_ARP))
s.bind(("eth0", arp.ETH_P_ARP))
s.settimeout(0.02)
mac = arp.mac_text(s.getsockname()[4])
heard, sent = [], time.monotonic() - 1
while time.monotonic() < until:
    if time.monotonic() - sent >= 0.1:  # "the VIP is at my MAC", ten times a second
        s.send(arp.announcements(mac, vip)[0])
        sent = time.monotonic()
    try:
        packet = arp.parse(s.recv(128))
    except TimeoutError:
        continue
    if packet is not None and packet.eth_src != mac and packet.op == arp.OP_REQUEST and packet.claims(vip):
        heard.append(time.monotonic())
print(json.dumps(heard))
"""


def guard_command(gateway: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", gateway, sys.executable, "-m", "dmzkit_remote_access.vip_guard",
            "--interface", "eth0", "--vip", f"{VIP}/24", "--interval", "0.05", *args]


def test_a_forger_claiming_the_vip_in_every_probe_round_cannot_park_the_guard(segment: tuple[str, str]) -> None:
    """Issue 15, finding 6: one forged claim per probe round kept the gateway
    from ever claiming its VIP. Now an unknown MAC holds it back for a bounded
    time only; then the guard claims, announces, and defends at most once per
    DEFEND_INTERVAL (RFC 5227 §2.4 (c)), whatever the forger keeps sending."""
    gateway, neighbour = segment
    ip(neighbour, "address", "del", f"{VIP}/24", "dev", "eth0")  # nobody really holds it
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    forger = subprocess.Popen(["ip", "netns", "exec", neighbour, sys.executable, "-c", FORGER, VIP, "5"],
                              env=env, stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)  # forging before the guard's first round
    start = time.monotonic()
    guard = subprocess.Popen(guard_command(gateway, "--patience", "1"), env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert wait(lambda: holds_vip(gateway), 3.0), "a forger kept the guard from claiming"
        claimed = time.monotonic() - start
        assert claimed > 1.0, f"claimed after {claimed:.2f} s, before its patience was spent"
        heard = json.loads(forger.communicate(timeout=15)[0])
    finally:
        forger.kill()
        forger.wait()
        guard.terminate()
        _, stderr = guard.communicate(timeout=10)
    assert "Traceback" not in stderr, stderr
    assert "unknown MAC" in stderr, stderr  # alarmed
    # Three announcements of the claim (+0, 0.5, 1 s), then one defence, not one per forged frame.
    assert len(heard) == 4, heard
    assert heard[3] - heard[2] < 0.5, heard


def test_only_the_backups_mac_makes_the_guard_wait_past_its_patience(segment: tuple[str, str]) -> None:
    gateway, neighbour = segment  # the neighbour holds the VIP: here it is the backup, a known peer
    backup_mac = json.loads(ip(neighbour, "-j", "link", "show", "eth0"))[0]["address"]
    guard = subprocess.Popen(guard_command(gateway, "--patience", "0.3", "--peer-mac", backup_mac.upper()),
                             env={**os.environ, "PYTHONPATH": str(SRC)}, stderr=subprocess.PIPE, text=True)
    try:
        assert not wait(lambda: holds_vip(gateway), 1.5), "claimed a VIP the backup answers for"
        ip(neighbour, "address", "del", f"{VIP}/24", "dev", "eth0")  # the backup hands back
        assert wait(lambda: holds_vip(gateway), 2.0), "never claimed the free VIP"
    finally:
        guard.terminate()
        _, stderr = guard.communicate(timeout=10)
    assert guard.returncode == 0 and "Traceback" not in stderr, stderr
