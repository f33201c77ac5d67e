"""The guard against a real kernel: a gateway and a neighbour holding the VIP,
in private network namespaces joined by a veth pair, on lab addresses."""
from __future__ import annotations

import itertools
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
