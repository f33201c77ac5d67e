"""A real Linux neighbour for the watchdog's kernel-facing code.

The fixture needs root: it puts the peer end of a veth pair into a private
network namespace with an address from the lab range, and leaves our end
address-less in this namespace, so no frame goes anywhere but the peer.
"""
from __future__ import annotations

import ipaddress
import itertools
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from namespaces import Segment, new_segment

VIP = ipaddress.IPv4Address("198.18.99.10")
# A deleted namespace frees its veth asynchronously: never reuse a name.
_NAMES = itertools.count()


@dataclass
class Peer:
    namespace: str
    ours: str
    theirs: str
    mac: str
    vip: ipaddress.IPv4Address = VIP

    def ip(self, *args: str) -> str:
        return subprocess.run(["ip", "-n", self.namespace, *args], check=True, capture_output=True, text=True).stdout

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        """Run Python code inside the peer's namespace, with the services on its path."""
        src = os.path.join(os.path.dirname(__file__), "..", "..", "..", "src")
        return subprocess.run(["ip", "netns", "exec", self.namespace, "python3", "-c", code],
                              env={**os.environ, "PYTHONPATH": os.path.abspath(src)},
                              capture_output=True, text=True, check=False, timeout=30)


@pytest.fixture
def peer() -> Iterator[Peer]:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a network namespace")
    tag = f"{os.getpid() % 100000}x{next(_NAMES)}"
    namespace, ours, theirs = f"dmzkit-arp-{tag}", f"dwa{tag}", f"dwb{tag}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(["ip", "link", "add", ours, "type", "veth", "peer", "name", theirs, "netns", namespace],
                       check=True)
        subprocess.run(["ip", "link", "set", ours, "up"], check=True)
        for args in (["addr", "add", f"{VIP}/24", "dev", theirs], ["link", "set", theirs, "up"]):
            subprocess.run(["ip", "-n", namespace, *args], check=True)
        link = json.loads(subprocess.run(["ip", "-n", namespace, "-j", "link", "show", theirs],
                                         check=True, capture_output=True, text=True).stdout)
        yield Peer(namespace=namespace, ours=ours, theirs=theirs, mac=link[0]["address"])
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], check=False)


@pytest.fixture
def segment(tmp_path: Path) -> Iterator[Segment]:
    """A bridge with the primary's, the backup's and the witness's namespaces (namespaces.py)."""
    with new_segment(tmp_path) as seg:
        yield seg
