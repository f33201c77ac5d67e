"""Issue 15, finding 7: a handshake flood must not fence a healthy gateway.

The gateway's VPN accepts TLS through one queue throttled to one accept per
100 ms (ocserv's rate-limit-ms behind nginx); the flood comes from the
internet side: the lab's flooder (lab/flood.py, which bench/failover.py
runs too) in the witness's namespace. The watchdog's old VPN probe was a TLS handshake
through that same queue: the first test shows what the flood does to such a
handshake (on the old code the watchdog fenced the healthy primary within
seconds, "primary's VPN port dead while the host answers"). The watchdog now
hears the primary's health agent on a path of its own. Everything lives in
namespaces the tests make and remove.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import testpki
from agents import health_pki, running_agent
from namespaces import BACKUP, ENV, MGMT, VIP, Segment, holds_vip, metric, running_watchdog, sh

# ocserv's accept path, as a flood meets it: one listening socket (nginx's
# listeners feed ocserv's single one), one accept per 100 ms, a full TLS
# handshake for each connection accepted.
FAKE_VPN = """
import socket, ssl, sys, threading, time
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", 8443))
listener.listen(64)
def handshake(conn):
    conn.settimeout(2)
    try:
        with context.wrap_socket(conn, server_side=True):
            pass
    except OSError:
        pass
    finally:
        conn.close()
while True:
    conn, _ = listener.accept()
    threading.Thread(target=handshake, args=(conn,), daemon=True).start()
    time.sleep(0.1)
"""


# The lab's flooder (the bench sends it into the client container).
FLOODER = Path(__file__).resolve().parents[3] / "lab" / "flood.py"


def make_pki(where: Path) -> dict[str, str]:
    ca_key, ca = testpki.make_ca("flood test CA")
    key, cert = testpki.make_leaf(ca_key, ca, "vpn.test", server=True)
    files = {"ca": where / "ca.pem", "cert": where / "vpn.pem", "key": where / "vpn.key"}
    files["ca"].write_bytes(testpki.pem(ca))
    files["cert"].write_bytes(testpki.pem(cert))
    testpki.write_key(files["key"], key)
    return {name: str(path) for name, path in files.items()}


@contextmanager
def fake_vpn(seg: Segment, pki: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    vpn = subprocess.Popen(["ip", "netns", "exec", seg.ns("primary"), sys.executable, "-c", FAKE_VPN,
                            pki["cert"], pki["key"]], env=ENV)
    try:
        seg.wait(lambda: ":8443" in sh("ip", "netns", "exec", seg.ns("primary"), "ss", "-Hltn"), 5)
        yield vpn
    finally:
        vpn.kill()
        vpn.wait()


def flood(seg: Segment, seconds: float) -> subprocess.Popen[str]:
    """The lab's flooder from the witness's namespace at the VIP, one
    process, started (its script on stdin, as the bench sends it)."""
    process = subprocess.Popen(["ip", "netns", "exec", seg.ns("witness"), sys.executable, "-", "--target", VIP,
                                "--port", "8443", "--server-name", "vpn.test", "--seconds", str(seconds),
                                "--processes", "1", "--inflight", "400", "--max-connections", "200000"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdin is not None
    process.stdin.write(FLOODER.read_text())
    process.stdin.close()
    return process


def flooded(process: subprocess.Popen[str]) -> dict[str, Any]:
    """The flood's figures, once it is over."""
    assert process.stdout is not None
    out = process.stdout.read()
    assert process.wait(timeout=60) == 0
    figures: dict[str, Any] = json.loads(out)
    # The flood bit: most connections were never accepted.
    assert figures["answered"] < figures["attempts"] / 2, figures
    return figures


# The old probe: a TLS handshake to the VPN on the primary's own address, 0.5 s at most.
HANDSHAKE = ("import socket, ssl, sys\n"
             "context = ssl.create_default_context(cafile=sys.argv[1])\n"
             "try:\n"
             "    with socket.create_connection((sys.argv[2], 8443), timeout=0.5) as raw:\n"
             "        raw.settimeout(0.5)\n"
             "        context.wrap_socket(raw, server_hostname='vpn.test').close()\n"
             "except OSError:\n"
             "    sys.exit(1)\n")


def handshake(seg: Segment, pki: dict[str, str]) -> bool:
    return subprocess.run(["ip", "netns", "exec", seg.ns("backup"), sys.executable, "-c", HANDSHAKE, pki["ca"], MGMT],
                          check=False, timeout=10).returncode == 0


def test_a_flood_starves_a_handshake_through_the_vpns_own_queue(segment: Segment, tmp_path: Path) -> None:
    """What the old probe saw: its handshakes, on the primary's own address,
    wait behind the flood in the one accept queue, and fail."""
    seg = segment
    pki = make_pki(tmp_path)
    seg.ip("backup", "addr", "add", f"{BACKUP}/24", "dev", "eth0")
    with fake_vpn(seg, pki):
        assert handshake(seg, pki)
        flooder = flood(seg, 6.0)
        time.sleep(1.5)
        failed = [not handshake(seg, pki) for _ in range(3)]
        flooded(flooder)
        assert all(failed), "the old probe would have failed 3 times in a row and fenced the primary"


def test_a_handshake_flood_does_not_fence_a_healthy_gateway_a_dead_vpn_is_fenced(
        segment: Segment, tmp_path: Path) -> None:
    seg = segment
    pki = make_pki(tmp_path)
    files = health_pki(tmp_path)
    port = ["ip", "-n", seg.ns("br"), "link", "set", seg.port("p")]
    seg.ip("backup", "addr", "add", f"{BACKUP}/24", "dev", "eth0")  # the agent's client (vnc1's own NIC)
    with fake_vpn(seg, pki) as vpn, running_agent(seg, files.agent_config(tmp_path, [f"{VIP}:8443"])), \
            running_watchdog(seg, tmp_path, health=files.watchdog_settings(),
                             fence={"mode": "required", "off": [*port, "down"], "on": [*port, "up"]}):
        seg.wait(lambda: metric(seg, 'dmzkit_failover_health_reports_total{verdict="up"}') > 5, 5)
        figures = flooded(flood(seg, 8.0))
        state = seg.state()
        assert not {"fencing", "confirm", "takeover"} & {t["to"] for t in state["transitions"]}, (figures, state)
        # Heard all along: the flood made the VPN busy, never late or down.
        assert metric(seg, 'dmzkit_failover_health_reports_total{verdict="busy"}') > 0
        assert metric(seg, 'dmzkit_failover_health_reports_total{verdict="down"}') == 0
        assert metric(seg, "dmzkit_failover_health_lost_total") == 0
        assert metric(seg, "dmzkit_failover_health_largest_gap_seconds") < 1.0
        # The VPN dies with its host up: fenced and taken over (bench/failover.py --service times it).
        vpn.kill()
        vpn.wait()
        seg.wait(lambda: holds_vip(seg, "backup"), 5)
        reasons = [t["reason"] for t in seg.state()["transitions"] if t["to"] == "fencing"]
        assert reasons == ["primary's VPN dead while the host answers: its health agent reports the VPN down"]
        assert "NO-CARRIER" in seg.ip("primary", "link", "show", "eth0")
