"""SSL VPN gateway figures, measured from the external client's container:

- ocserv certificate logins per second: `openconnect --authenticate` with
  the user's certificate (full TLS 1.3 handshake, client certificate, CRL
  check, session cookie), several at a time;
- portal mutual-TLS handshakes per second: new TLS sessions to the portal
  with the user's certificate (no resumption), each proven accepted by one
  request answered by the B/S app behind it.

Both loops are bounded by a count and a deadline. Needs the lab with the
gateway deployed (`make demo`, or the converged `gateway` lab configuration).
Prints a table; exit status 1 if any attempt failed.
"""
from __future__ import annotations

import argparse
import json
import socket
import ssl
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

VPN_URL = "https://vpn.lab.dmzkit.test/"
PORTAL = ("portal.lab.dmzkit.test", 443)
REQUEST = b"GET /whoami HTTP/1.1\r\nHost: portal.lab.dmzkit.test\r\nConnection: close\r\n\r\n"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def timed_runs(attempt, count: int, concurrency: int, deadline_s: float) -> dict:
    """Run attempt() count times, concurrency at once, stopping at the deadline."""
    stop_at = time.monotonic() + deadline_s
    latencies: list[float] = []
    failures = 0

    def one(_: int) -> tuple[bool, float]:
        if time.monotonic() > stop_at:
            return False, -1.0
        start = time.perf_counter()
        ok = attempt()
        return ok, time.perf_counter() - start

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for ok, elapsed in pool.map(one, range(count)):
            if elapsed < 0:
                continue
            if ok:
                latencies.append(elapsed)
            else:
                failures += 1
    wall = time.perf_counter() - began
    return {
        "ok": len(latencies), "failed": failures, "wall_s": wall,
        "per_s": len(latencies) / wall if wall else 0.0,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * percentile(latencies, 0.99) if latencies else float("nan"),
    }


def ocserv_login(pem: str) -> bool:
    result = subprocess.run(
        ["timeout", "20", "openconnect", "--non-inter", "--authenticate", "-c", pem, VPN_URL],
        capture_output=True, check=False,
    )
    return result.returncode == 0 and b"COOKIE=" in result.stdout


def portal_handshake(context: ssl.SSLContext) -> bool:
    try:
        with socket.create_connection(PORTAL, timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=PORTAL[0]) as tls:
                tls.sendall(REQUEST)
                return tls.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def inside(args: argparse.Namespace) -> int:
    """Runs in the client container; prints JSON figures."""
    pem = f"/root/dmzkit/{args.user}.pem"
    context = ssl.create_default_context()
    context.load_cert_chain(pem)
    # Every connection a full handshake: no session cache, no tickets.
    context.options |= ssl.OP_NO_TICKET
    figures = {
        "ocserv certificate logins": timed_runs(lambda: ocserv_login(pem), args.logins,
                                                args.login_concurrency, args.deadline),
        "portal mutual-TLS handshakes": timed_runs(lambda: portal_handshake(context), args.handshakes,
                                                   args.handshake_concurrency, args.deadline),
    }
    print(json.dumps(figures))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", default="client1", help="lab container of the external user")
    parser.add_argument("--user", default="alice")
    parser.add_argument("--logins", type=int, default=60)
    parser.add_argument("--login-concurrency", type=int, default=4)
    parser.add_argument("--handshakes", type=int, default=600)
    parser.add_argument("--handshake-concurrency", type=int, default=8)
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds per measurement, at most")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside:
        return inside(args)

    forwarded = [f"--user={args.user}", f"--logins={args.logins}", f"--login-concurrency={args.login_concurrency}",
                 f"--handshakes={args.handshakes}", f"--handshake-concurrency={args.handshake_concurrency}",
                 f"--deadline={args.deadline}", "--inside"]
    run = subprocess.run(
        ["podman", "exec", "-i", args.client, "python3", "-", *forwarded],
        input=Path(__file__).read_text(), capture_output=True, text=True, check=False,
    )
    if run.returncode != 0:
        print(run.stderr, file=sys.stderr)
        return 1
    figures = json.loads(run.stdout)
    print(f"gateway bench from {args.client} as {args.user}")
    print(f"{'measurement':30} {'ok':>5} {'failed':>6} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, f in figures.items():
        print(f"{name:30} {f['ok']:>5} {f['failed']:>6} {f['per_s']:>8.1f} {f['p50_ms']:>8.1f} {f['p99_ms']:>8.1f}")
    return 0 if all(f["failed"] == 0 for f in figures.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
