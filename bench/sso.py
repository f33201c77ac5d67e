"""SSO figures on loopback: what an assertion costs to sign, how many
artifacts the IdP resolves per second of its CPU, and the latency of
resolutions at a steady rate.

The IdP runs as `dmzkit-sso idp` in a process of its own, with a real Redis
and PostgreSQL (tests/unit/local_servers.py) and a throw-away PKI. The
bench process plays the SP: it issues artifacts into Redis as a login does
(a signed Response kept under the artifact), signs every ArtifactResolve
before the clock starts, and sends them over mutual TLS with keep-alive.

1. signing: `assertion.response()` (build, exclusive C14N, ECDSA P-256) per
   login, N times;
2. capacity: N resolutions from 8 concurrent connections as fast as they
   go; the IdP process's CPU time (utime + stime from /proc) divided by N;
3. latency: resolutions started at a steady rate for a bounded time, each
   timed from start to the verified answer; p50 and p99.

Goals (saml.md §8): signing <= 2 ms, >= 500 resolutions/s per core,
p99 <= 20 ms at 200 req/s. Prints a table; every loop is bounded.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from redis.asyncio import Redis

TOP = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TOP / "src"), str(TOP / "tests/unit")]

import local_servers  # noqa: E402
from figures import cpu_seconds, percentile  # noqa: E402
from testpki import NOW, make_ca, make_crl, make_leaf, pem, write_key  # noqa: E402

from dmzkit_remote_access.sso import assertion, protocol  # noqa: E402
from dmzkit_remote_access.sso.artifact import Artifact  # noqa: E402
from dmzkit_remote_access.sso.store import ArtifactRecord, Store  # noqa: E402

IDP = "https://idp.bench/saml2"
SP = "https://sp.bench/sp"
ACS = "https://sp.bench/acs"
CONCURRENCY = 8
LOGIN = assertion.Login("alice", "_session", None, assertion.PASSWORD,
                        {"uid": ["alice"], "mail": ["alice@bench.test"], "groups": ["staff"]})


def make_pki(where: Path) -> dict[str, object]:
    ca_key, ca_cert = make_ca("bench ca")
    (where / "ca.pem").write_bytes(pem(ca_cert))
    (where / "crl.pem").write_bytes(pem(make_crl(ca_key, ca_cert, NOW, NOW + dt.timedelta(days=1), serials=())))
    keys = {}
    for name, server in (("localhost", True), ("signing", False), ("sp-signing", False), ("sp-client", False)):
        keys[name], cert = make_leaf(ca_key, ca_cert, name, server=server)
        write_key(where / f"{name}.key", keys[name])
        (where / f"{name}.pem").write_bytes(pem(cert))
    (where / "providers").mkdir()
    (where / "providers" / "sp.json").write_text(json.dumps({
        "entity_id": SP, "acs_url": ACS, "signing_certificates": [(where / "sp-signing.pem").read_text()],
        "tls_certificates": [(where / "sp-client.pem").read_text()]}))
    return keys


def bench_signing(key, count: int) -> list[float]:
    costs = []
    for _ in range(count):
        start = time.perf_counter()
        assertion.response(IDP, SP, ACS, "_request", LOGIN, key, dt.timedelta(hours=8))
        costs.append((time.perf_counter() - start) * 1000)
    return costs


async def issue(store: Store, key, count: int) -> list[str]:
    """Artifacts as logins leave them: a signed Response kept for the SP."""
    message = assertion.response(IDP, SP, ACS, "_request", LOGIN, key, dt.timedelta(hours=8))
    artifacts = []
    for _ in range(count):
        artifact = Artifact.new(IDP, 0)
        await store.put_artifact(artifact, ArtifactRecord(IDP, SP, message, time.time() + 300))
        artifacts.append(artifact.encode())
    return artifacts


async def resolve_all(session: aiohttp.ClientSession, url: str, bodies: list[tuple[bytes, str]], idp_key,
                      rate: float | None) -> tuple[list[float], int]:
    """Send every request (at `rate` per second, or as fast as CONCURRENCY
    connections go); latencies in ms and the number of failures."""
    latencies: list[float] = []
    failures = 0
    gate = asyncio.Semaphore(CONCURRENCY * 4 if rate else CONCURRENCY)

    async def one(body: bytes, request_id: str) -> None:
        nonlocal failures
        async with gate:
            start = time.perf_counter()
            try:
                async with session.post(url, data=body, headers={"Content-Type": "text/xml"}) as r:
                    answer = await r.read()
                message = protocol.read_artifact_response(answer, IDP, request_id, [idp_key])
                if r.status != 200 or message is None:
                    failures += 1
            except (aiohttp.ClientError, ValueError):
                failures += 1
            latencies.append((time.perf_counter() - start) * 1000)

    tasks = []
    began = time.perf_counter()
    for index, (body, request_id) in enumerate(bodies):
        if rate:
            await asyncio.sleep(max(0.0, began + index / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(body, request_id)))
    await asyncio.gather(*tasks)
    return latencies, failures


async def run(args: argparse.Namespace, where: Path, redis_socket: Path, userdb: dict[str, str]) -> dict:
    keys = make_pki(where)
    (where / "store.secret").write_text("bench\n")
    (where / "db.secret").write_text(userdb["password"] + "\n")
    config = {
        "entity_id": IDP, "base_url": "https://localhost:18443", "back_url": "https://localhost:18444",
        "front_listen": "127.0.0.1:18443", "back_listen": "127.0.0.1:18444",
        "certificate": str(where / "localhost.pem"), "private_key": str(where / "localhost.key"),
        "ca_chain": str(where / "ca.pem"), "crl": str(where / "crl.pem"),
        "signing_key": str(where / "signing.key"), "signing_certificate": str(where / "signing.pem"),
        "providers_dir": str(where / "providers"), "store_socket": str(redis_socket), "store_user": "default",
        "store_password_file": str(where / "store.secret"), "db_host": userdb["host"], "db_name": "dmzkit",
        "db_user": "sso_idp", "db_password_file": str(where / "db.secret"), "artifact_ttl": 300,
    }
    (where / "idp.json").write_text(json.dumps(config))
    signing = bench_signing(keys["signing"], args.logins)

    server = subprocess.Popen([sys.executable, "-m", "dmzkit_remote_access.sso", "idp", "--config",
                               str(where / "idp.json")], env={**os.environ, "PYTHONPATH": str(TOP / "src")},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    redis = Redis(unix_socket_path=str(redis_socket))
    try:
        context = ssl.create_default_context(cafile=str(where / "ca.pem"))
        context.load_cert_chain(str(where / "sp-client.pem"), str(where / "sp-client.key"))
        url = "https://localhost:18444/saml2/ars"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=CONCURRENCY * 4)) as session:
            for _ in range(100):  # the IdP is up when it answers
                try:
                    async with session.post(url, data=b"<x/>") as r:
                        await r.read()
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            store = Store(redis)
            idp_key = keys["signing"].public_key()

            def sign(artifact: str) -> tuple[bytes, str]:
                return protocol.artifact_resolve(SP, url, artifact, keys["sp-signing"])

            bodies = [sign(a) for a in await issue(store, keys["signing"], args.capacity)]
            cpu_before, wall_before = cpu_seconds(server.pid), time.perf_counter()
            _, capacity_failures = await resolve_all(session, url, bodies, idp_key, None)
            cpu_per = (cpu_seconds(server.pid) - cpu_before) / args.capacity
            wall = time.perf_counter() - wall_before

            steady = int(args.rate * args.seconds)
            bodies = [sign(a) for a in await issue(store, keys["signing"], steady)]
            latencies, steady_failures = await resolve_all(session, url, bodies, idp_key, args.rate)
    finally:
        await redis.close()
        server.terminate()
        server.wait(timeout=10)
    return {
        "signing": signing, "cpu_ms": cpu_per * 1000, "per_core": 1 / cpu_per, "throughput": args.capacity / wall,
        "capacity_failures": capacity_failures, "latencies": latencies, "steady_failures": steady_failures,
        "steady": steady,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=2000, help="assertions signed (default 2000)")
    parser.add_argument("--capacity", type=int, default=3000, help="resolutions for the capacity run (3000)")
    parser.add_argument("--rate", type=float, default=200.0, help="steady resolutions per second (200)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the steady run (60)")
    args = parser.parse_args()
    if not (local_servers.have_redis() and local_servers.have_postgres()):
        print("bench/sso.py needs redis-server and PostgreSQL 15 (make host)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        with local_servers.redis_server(where) as socket, local_servers.userdb_cluster("bench-db-password") as db:
            figures = asyncio.run(run(args, where, socket, db))
    signing, latencies = figures["signing"], figures["latencies"]
    print("| figure | value | goal |\n|---|---|---|")
    print(f"| assertion build + sign (P-256), p50 / p99 | {statistics.median(signing):.2f} / "
          f"{percentile(signing, 0.99):.2f} ms | <= 2 ms |")
    print(f"| IdP CPU per resolution | {figures['cpu_ms']:.2f} ms | <= 2 ms |")
    print(f"| resolutions per second per core (from CPU time) | {figures['per_core']:.0f} | >= 500 |")
    print(f"| resolutions per second, {CONCURRENCY} connections, wall clock | {figures['throughput']:.0f} | |")
    print(f"| latency at {args.rate:.0f} req/s for {args.seconds:.0f} s, p50 / p99 | "
          f"{statistics.median(latencies):.1f} / {percentile(latencies, 0.99):.1f} ms | p99 <= 20 ms |")
    print(f"| failed resolutions (capacity run / steady run) | {figures['capacity_failures']} / "
          f"{figures['steady_failures']} of {args.capacity} / {figures['steady']} | 0 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
