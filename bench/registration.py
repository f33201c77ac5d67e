"""Device registration figures on loopback, with the simplest alternative a
user would otherwise deploy measured in the same run.

- ours: `dmzkit-registration` in a process of its own, with a real Redis
  and PostgreSQL (tests/unit/local_servers.py) and a throw-away PKI; each
  registration is a new TCP connection, a full TLS 1.3 handshake with the
  device's certificate, then reg, grant, ack, done: two-phase rotation,
  nonce and rate in Redis, site and least load, one chained audit record.
- the anchor: nginx (the lab image's, under Podman on the host's network)
  terminating mutual TLS 1.3 with the same CA and CRL, proxying to a small
  aiohttp app that finds the device by its certificate's key, picks its
  first business server and sets a new password in one phase (no pending
  grant, no nonce, no rate, no audit): one HTTPS POST per new connection.

Each side runs for --seconds at --concurrency connections at once, spread
over two client processes, after a short warm-up; each registration is
timed from connect to the last answer. Server CPU per registration is the
service's own processes (ours; nginx and the app) from /proc, divided by
the registrations; PostgreSQL and Redis are not counted on either side.

Goals (issue 17): >= 250 registrations/s for 60 s with 0 errors, <= 2 ms
server CPU per registration, p99 <= 200 ms at concurrency 16. Prints a
table; every loop is bounded.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

TOP = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TOP / "src"), str(TOP / "tests/unit"), str(TOP / "tests/unit/registration")]

import local_servers  # noqa: E402
from figures import cpu_seconds, percentile  # noqa: E402
import reglab  # noqa: E402

from dmzkit_remote_access.registration import protocol  # noqa: E402
from dmzkit_remote_access.registration.protocol import Ack, Done, Err, Grant, Reg  # noqa: E402

WARMUP = 2.0
NGINX = "dmzkit-bench-registration-nginx"

# The anchor's app: the device by its certificate's key (as ours finds
# it), a new password set at once, the device's first business server.
ANCHOR_APP = """
import asyncio, json, secrets, sys
from urllib.parse import unquote
import asyncpg
from aiohttp import web
from cryptography import x509
from dmzkit_remote_access.registration.server import DEVICE
from dmzkit_remote_access.tls import common_name, spki_sha256
from dmzkit_remote_access.userdb import device_hash

SERVER = ("SELECT b.host, b.port FROM device_servers s JOIN business_servers b ON b.id = s.server_id"
          " WHERE s.device_id = $1 ORDER BY b.host LIMIT 1")


async def main(port, db_host):
    pool = await asyncpg.create_pool(host=db_host, database="dmzkit", user="registration_server_unit",
                                     min_size=4, max_size=8)

    async def register(request):
        certificate = x509.load_pem_x509_certificate(unquote(request.headers["X-Client-Cert"]).encode())
        device = await pool.fetchrow(DEVICE, spki_sha256(certificate.public_key()))
        if device is None or device["serial"] != common_name(certificate):
            raise web.HTTPForbidden()
        password = secrets.token_urlsafe(24)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT set_device_password($1, $2)", device["id"], device_hash(password))
            server = await conn.fetchrow(SERVER, device["id"])
        return web.json_response({"account": device["account"], "password": password,
                                  "server": f"{server['host']}:{server['port']}"})

    app = web.Application()
    app.router.add_post("/register", register)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
pid /tmp/nginx-bench.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    upstream app {{ server 127.0.0.1:{app}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_protocols TLSv1.3;
        ssl_certificate /bench/server.pem;
        ssl_certificate_key /bench/server.key;
        ssl_client_certificate /bench/ca.pem;
        ssl_crl /bench/crl.pem;
        ssl_verify_client on;
        location = /register {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Client-Cert $ssl_client_escaped_cert;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the server ended first: {process.stderr.read() if process.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@contextmanager
def ours(lab: reglab.Lab, where: Path) -> Iterator[tuple[int, list[int]]]:
    port = free_port()
    settings = dataclasses.asdict(lab.settings)
    settings.update(listen=f"127.0.0.1:{port}", metrics_listen=f"127.0.0.1:{free_port()}",
                    frame_seconds=5.0, session_seconds=10.0)
    config = where / "registration.json"
    config.write_text(json.dumps(settings))
    server = subprocess.Popen([sys.executable, "-m", "dmzkit_remote_access.registration.server", "--config",
                               str(config)], env={**os.environ, "PYTHONPATH": str(TOP / "src")},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(port, server)
        yield port, [server.pid]
    finally:
        server.terminate()
        server.wait(10)


@contextmanager
def anchor(lab: reglab.Lab, where: Path) -> Iterator[tuple[int, list[int]]]:
    port, app_port = free_port(), free_port()
    (where / "nginx.conf").write_text(NGINX_CONF.format(port=port, app=app_port))
    app = subprocess.Popen([sys.executable, "-c", ANCHOR_APP, str(app_port), lab.userdb["host"]],
                           env={**os.environ, "PYTHONPATH": str(TOP / "src")}, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    image = (TOP / ".lab-image").read_text().strip()
    try:
        assert app.stdout is not None and app.stdout.readline().strip() == "ready", app.stderr
        subprocess.run(["podman", "rm", "-f", NGINX], capture_output=True, check=False)
        subprocess.run(["podman", "run", "-d", "--rm", "--name", NGINX, "--network", "host", "-v",
                        f"{where}:/bench:ro", image, "nginx", "-c", "/bench/nginx.conf"], check=True,
                       capture_output=True)
        wait_listening(port)
        master = int(subprocess.run(["podman", "inspect", "-f", "{{.State.Pid}}", NGINX], capture_output=True,
                                    text=True, check=True).stdout)
        yield port, [app.pid, master, *children(master)]
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "2", NGINX], capture_output=True, check=False)
        app.terminate()
        app.wait(10)


def client_tls(where: str, serial: str) -> ssl.SSLContext:
    tls = ssl.create_default_context(cafile=f"{where}/ca.pem")
    tls.minimum_version = ssl.TLSVersion.TLSv1_3
    tls.load_cert_chain(f"{where}/{serial}.pem", f"{where}/{serial}.key")
    return tls


async def register_ours(port: int, tls: ssl.SSLContext, serial: str, epoch: int, source: str) -> int:
    """One registration; the epoch now committed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname="localhost",
                                                   local_addr=(source, 0))
    try:
        writer.write(protocol.encode(Reg(serial=serial, nonce=secrets.token_hex(16), ts=int(time.time() * 1000),
                                         epoch=epoch, cache_logins=())))
        grant = await protocol.read(reader, 5, Grant, Err)
        if not isinstance(grant, Grant):
            raise RuntimeError(f"err {grant.code}")
        writer.write(protocol.encode(Ack(epoch=grant.epoch, snonce=grant.snonce)))
        done = await protocol.read(reader, 5, Done, Err)
        if not isinstance(done, Done):
            raise RuntimeError(f"err {done.code}")
        return done.epoch
    finally:
        writer.close()


async def register_anchor(port: int, tls: ssl.SSLContext, source: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname="localhost",
                                                   local_addr=(source, 0))
    try:
        writer.write(b"POST /register HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        if not answer.startswith(b"HTTP/1.1 200") or b'"password"' not in answer:
            raise RuntimeError(answer.split(b"\r\n", 1)[0].decode(errors="replace"))
    finally:
        writer.close()


def worker(kind: str, port: int, where: str, serials: list[str], slots: int, start: float, stop: float,
           number: int) -> tuple[list[float], int, list[str]]:
    """Client process `number`: `slots` connections at a time until `stop`
    (wall clock), each slot from an address of its own on loopback (as
    devices come from theirs: the service caps handshakes per address);
    latencies of those started after `start`."""
    async def run() -> tuple[list[float], int, list[str]]:
        contexts = {serial: client_tls(where, serial) for serial in serials}
        epochs = {serial: 0 for serial in serials}
        latencies: list[float] = []
        errors: list[str] = []

        async def slot(mine: list[str], source: str) -> None:
            turn = 0
            while time.time() < stop:
                serial = mine[turn % len(mine)]
                turn += 1
                began, counted = time.perf_counter(), time.time() >= start
                try:
                    if kind == "ours":
                        epochs[serial] = await register_ours(port, contexts[serial], serial, epochs[serial], source)
                    else:
                        await register_anchor(port, contexts[serial], source)
                except (OSError, RuntimeError, ssl.SSLError, asyncio.TimeoutError, protocol.Malformed) as e:
                    if counted:
                        errors.append(f"{type(e).__name__}: {e}")
                    continue
                if counted:
                    latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(slot(serials[i::slots], f"127.{number + 1}.0.{i + 1}") for i in range(slots)))
        return latencies, len(errors), errors[:3]
    return asyncio.run(run())


def measure(kind: str, port: int, pids: list[int], where: Path, serials: list[str], concurrency: int,
            seconds: float) -> dict[str, float]:
    processes = 2
    start = time.time() + WARMUP
    stop = start + seconds
    halves = [serials[i::processes] for i in range(processes)]
    with ProcessPoolExecutor(processes) as pool:
        futures = [pool.submit(worker, kind, port, str(where), half, concurrency // processes, start, stop, number)
                   for number, half in enumerate(halves)]
        time.sleep(max(0.0, start - time.time()))
        cpu_before = cpu_seconds(*pids)
        time.sleep(max(0.0, stop - time.time()))
        cpu_after = cpu_seconds(*pids)
        results = [f.result(timeout=seconds + 60) for f in futures]
    latencies = [v for r in results for v in r[0]]
    errors = sum(r[1] for r in results)
    samples = [e for r in results for e in r[2]]
    done = len(latencies)
    return {"rate": done / seconds, "done": done, "errors": errors, "p50": percentile(latencies, 0.5) * 1000,
            "p99": percentile(latencies, 0.99) * 1000, "cpu_ms": (cpu_after - cpu_before) * 1000 / max(done, 1),
            "samples": samples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="each side's measured time (at most 600)")
    parser.add_argument("--concurrency", type=int, default=16, help="registrations under way at once (even, 2-256)")
    parser.add_argument("--devices", type=int, default=64, help="enrolled devices the load goes round (>= concurrency)")
    args = parser.parse_args()
    if not 1 <= args.seconds <= 600 or not 2 <= args.concurrency <= 256 or args.concurrency % 2 \
            or not args.concurrency <= args.devices <= 5000:
        parser.error("--seconds 1-600, --concurrency even 2-256, --devices from the concurrency to 5000")
    if not local_servers.have_postgres():
        parser.error("PostgreSQL 15 (Debian package, make host) is not installed")
    serials = tuple(f"BENCH-{i:05d}" for i in range(args.devices))
    rows = {}
    with ExitStack() as stack:
        where = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dmzkit-bench-reg-", dir="/var/tmp")))
        os.chmod(where, 0o755)
        userdb = stack.enter_context(local_servers.userdb_cluster(secrets.token_hex(16)))
        lab = stack.enter_context(reglab.built(userdb, where, serials))
        for kind, serve in (("ours", ours), ("anchor", anchor)):
            with serve(lab, where) as (port, pids):
                print(f"{kind}: {args.concurrency} at once for {args.seconds:.0f} s ...", flush=True)
                rows[kind] = measure(kind, port, pids, where, list(serials), args.concurrency, args.seconds)
    names = {"ours": "dmzkit-registration (two-phase, audited)", "anchor": "nginx mTLS + app (one-phase, anchor)"}
    print(f"\nregistrations with a full TLS 1.3 handshake each, concurrency {args.concurrency}, "
          f"{args.seconds:.0f} s each, {args.devices} devices, {os.cpu_count()} CPUs shared with the clients")
    print(f"{'':42} {'reg/s':>8} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8} {'server CPU ms/reg':>18}")
    for kind, row in rows.items():
        print(f"{names[kind]:42} {row['rate']:8.1f} {row['errors']:7d} {row['p50']:8.1f} {row['p99']:8.1f}"
              f" {row['cpu_ms']:18.2f}")
        for sample in row["samples"]:
            print(f"    error: {sample}")
    ours_row, anchor_row = rows["ours"], rows["anchor"]
    print(f"{'ratio ours / anchor':42} {ours_row['rate'] / max(anchor_row['rate'], 1e-9):8.2f} {'':7}"
          f" {ours_row['p50'] / anchor_row['p50']:8.2f} {ours_row['p99'] / anchor_row['p99']:8.2f}"
          f" {ours_row['cpu_ms'] / max(anchor_row['cpu_ms'], 1e-9):18.2f}")
    print(f"goals (ours): >= 250 reg/s with 0 errors: {'met' if ours_row['rate'] >= 250 and not ours_row['errors'] else 'NOT met'};"
          f" <= 2 ms server CPU: {'met' if ours_row['cpu_ms'] <= 2 else 'NOT met'};"
          f" p99 <= 200 ms: {'met' if ours_row['p99'] <= 200 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
