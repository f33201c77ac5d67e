"""Watching the lab's DMZ on the wire, from the controller.

The controller sits on every lab bridge (the bridge's own address), so it
sees what any DMZ host sees. `VipWatch` sends an RFC 5227 probe for an
address every few milliseconds from the bridge and records, per probe, the
set of MACs that answered: one clock for "who holds the VIP", used by the
failover scenario's drills and by bench/failover.py. `switch` drives the lab
switch (roles/lab/files/dmzkit-lab-switch).
"""
from __future__ import annotations

import ipaddress
import json
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dmzkit_remote_access.net import arp  # noqa: E402

SWITCH = Path(__file__).resolve().parents[1] / "roles/lab/files/dmzkit-lab-switch"


def switch(host: str, ifname: str, action: str) -> None:
    subprocess.run([sys.executable, str(SWITCH), "port", host, ifname, action], check=True, capture_output=True)


def port_of(host: str, ifname: str) -> str:
    """The bridge port behind a lab host's interface, so a drill can pull the
    cable at a moment it knows (`ip link set dev PORT down`)."""
    done = subprocess.run([sys.executable, str(SWITCH), "resolve", host, ifname],
                          check=True, capture_output=True, text=True)
    return done.stdout.strip()


def bridge_of(network: str) -> str:
    out = subprocess.run(["podman", "network", "inspect", network], check=True, capture_output=True, text=True)
    return str(json.loads(out.stdout)[0]["network_interface"])


@dataclass
class Round:
    sent: float
    macs: set[str] = field(default_factory=set)
    first_reply: dict[str, float] = field(default_factory=dict)


class VipWatch:
    """Probe `address` every `period` s on `interface`; keep every round."""

    def __init__(self, interface: str, address: str, period: float = 0.005, wait: float = 0.004) -> None:
        self.address = ipaddress.IPv4Address(address)
        self.period, self.wait = period, wait
        self.sock = arp.ArpSocket(interface)
        self.rounds: list[Round] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> VipWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            current = Round(sent=time.monotonic())
            self.sock.send(arp.probe(self.sock.mac, self.address))
            deadline = current.sent + self.wait
            while (left := deadline - time.monotonic()) > 0:
                select.select([self.sock], [], [], left)
                for at, packet in self.sock.receive():
                    # Answers to our probe only: a gratuitous ARP announcing
                    # another MAC (the handback) is not a second holder.
                    if (packet.claims(self.address) and packet.op == arp.OP_REPLY
                            and packet.target_mac == self.sock.mac):
                        current.macs.add(packet.sender_mac)
                        current.first_reply.setdefault(packet.sender_mac, at)
            self.rounds.append(current)
            time.sleep(max(0.0, current.sent + self.period - time.monotonic()))

    def holders(self, since: float = 0.0) -> list[tuple[float, frozenset[str]]]:
        return [(r.sent, frozenset(r.macs)) for r in list(self.rounds) if r.sent >= since]

    def first_answer_from(self, mac: str, since: float) -> float | None:
        """When `mac` first answered for the address after `since`."""
        for r in list(self.rounds):
            if r.sent >= since and mac in r.macs:
                return r.first_reply[mac]
        return None

    def duplicate_time(self, since: float = 0.0) -> float:
        """Seconds during which two or more MACs answered in the same round."""
        return sum(self.period for _, macs in self.holders(since) if len(macs) > 1)
