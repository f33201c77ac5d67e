"""A segment of network namespaces for the watchdog's tests: a bridge, the
primary, the backup and the witness, with real ARP between them, and the
watchdog run in the backup's namespace. Everything lives in namespaces the
tests make and remove, on lab addresses."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[3] / "src"
VIP, MGMT, BACKUP, WITNESS = "198.18.99.10", "198.18.99.11", "198.18.99.21", "198.18.99.254"
_TAGS = itertools.count()


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def ours(namespace: str, *args: str, package: str = "failover_watchdog") -> list[str]:
    """A service's command line (the watchdog's run and ctl, the VIP guard) inside a namespace; run it with ENV."""
    return ["ip", "netns", "exec", namespace, sys.executable, "-m", f"dmzkit_remote_access.{package}", *args]


ENV = {**os.environ, "PYTHONPATH": str(SRC)}


@dataclass
class Segment:
    tag: str
    state_dir: Path

    def ns(self, name: str) -> str:
        return f"dmzkit-wd{self.tag}-{name}"

    def ip(self, name: str, *args: str) -> str:
        return sh("ip", "-n", self.ns(name), *args)

    def port(self, name: str) -> str:
        return f"p{self.tag}{name}"

    def state(self) -> dict[str, object]:
        try:
            return json.loads((self.state_dir / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def wait(self, condition: Callable[[], bool], timeout: float) -> float:
        """Seconds until `condition` held; fails the test after `timeout`."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if condition():
                return time.monotonic() - start
            time.sleep(0.01)
        pytest.fail(f"not within {timeout} s; watchdog state: {self.state()}")


@contextmanager
def new_segment(tmp_path: Path) -> Iterator[Segment]:
    """A bridge and the primary's, the backup's and the witness's namespaces
    on it, removed at the end (the `segment` fixture)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make network namespaces")
    seg = Segment(tag=f"{os.getpid() % 10000}{next(_TAGS)}", state_dir=tmp_path / "run")
    names = ("br", "primary", "backup", "witness")
    try:
        for name in names:
            sh("ip", "netns", "add", seg.ns(name))
            seg.ip(name, "link", "set", "lo", "up")  # the metrics listener binds 127.0.0.1
        seg.ip("br", "link", "add", "br0", "type", "bridge")
        seg.ip("br", "link", "set", "br0", "up")
        for name in names[1:]:
            sh("ip", "-n", seg.ns("br"), "link", "add", seg.port(name[0]), "type", "veth",
               "peer", "name", "eth0", "netns", seg.ns(name))
            seg.ip("br", "link", "set", seg.port(name[0]), "master", "br0", "up")
            seg.ip(name, "link", "set", "eth0", "up")
        seg.ip("primary", "addr", "add", f"{MGMT}/24", "dev", "eth0")
        seg.ip("primary", "addr", "add", f"{VIP}/24", "dev", "eth0")
        seg.ip("witness", "addr", "add", f"{WITNESS}/24", "dev", "eth0")
        yield seg
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "delete", seg.ns(name)], check=False)


@contextmanager
def running_watchdog(segment: Segment, tmp_path: Path, environment: dict[str, str] | None = None,
                     started: str = "standby", **settings: object) -> Iterator[Path]:
    """The watchdog in the backup's namespace, once in state `started`;
    yields its configuration file, and stops it (SIGTERM) at the end."""
    primary_mac = json.loads(segment.ip("primary", "-j", "link", "show", "eth0"))[0]["address"]
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "interface": "eth0", "vip": f"{VIP}/24", "primary_macs": [primary_mac],
        "primary_mgmt": MGMT, "witness": WITNESS, "hold_down": 1, "damping": {"min_active": 0},
        "state_dir": str(segment.state_dir), "metrics_listen": "127.0.0.1:9468", **settings,
    }), encoding="utf-8")
    process = subprocess.Popen(ours(segment.ns("backup"), "run", "--config", str(config)),
                               env={**ENV, **(environment or {})}, stderr=subprocess.PIPE, text=True)
    try:
        segment.wait(lambda: segment.state().get("state") == started, 5)
        yield config
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
        assert "Traceback" not in stderr, stderr
        assert process.returncode == 0, stderr


def holds_vip(seg: Segment, name: str) -> bool:
    return f"{VIP}/24" in seg.ip(name, "-4", "addr", "show", "dev", "eth0")


def mac_of(seg: Segment, name: str) -> str:
    return json.loads(seg.ip(name, "-j", "link", "show", "eth0"))[0]["address"]


def metric(seg: Segment, sample: str) -> float:
    """A sample of the watchdog's metrics, scraped inside the backup's namespace."""
    code = ("import urllib.request\n"
            "print(urllib.request.urlopen('http://127.0.0.1:9468/metrics', timeout=5).read().decode())")
    text = sh("ip", "netns", "exec", seg.ns("backup"), sys.executable, "-c", code)
    values = [float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(sample + " ")]
    return values[0] if values else 0.0
