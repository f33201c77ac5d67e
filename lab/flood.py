"""A flood of TLS handshakes, bounded in time and count, at a lab address only.

Runs inside a lab container (`podman exec -i HOST python3 - ARGS`, this file
on stdin: `from_container` does that from the controller), so it uses the
standard library alone. Every target is checked to be in 198.18.0.0/15.
Open-loop: each process starts connections as fast as its event loop can,
up to a bound in flight, and prints its figures as JSON. Modes: `hello` (a
ClientHello, the server's first byte, a RST), `hold` (the same, kept open
to the end), `idle` (connect, send nothing, keep it open). Used by
bench/failover.py and by the failover journey's drill that floods the VIP.
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import json
import os
import resource
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

MODES = ("hello", "hold", "idle")
LAB = ipaddress.ip_network("198.18.0.0/15")


def client_hello(server_name: str) -> bytes:
    """One TLS ClientHello for `server_name`, made once by Python's own ssl:
    every connection replays it, so the client does no crypto per connection
    while the server does a full handshake each time."""

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass  # the hello is written; the server's answer never comes to this BIO
    return outgoing.read()


def flood_process(target: str, port: int, hello: bytes, mode: str, seconds: float, budget: int,
                  inflight: int) -> dict:
    """One process of the flood: open-loop, as many connections as its event
    loop can start, at most `inflight` at once and `budget` in all, until
    `seconds` have passed. hello: send the ClientHello, wait up to 2 s for
    the server's first byte, close with a RST (no TIME_WAIT); hold: the same,
    then keep the connection to the end; idle: connect, send nothing, keep it
    to the end."""

    stats: dict = {"attempts": 0, "connected": 0, "answered": 0, "errors": {}, "first_byte": []}
    linger = struct.pack("ii", 1, 0)

    async def one(loop: asyncio.AbstractEventLoop, end: float) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (target, port)), 1.0)
            stats["connected"] += 1
            if mode != "idle":
                await loop.sock_sendall(sock, hello)
                sent = time.monotonic()
                if await asyncio.wait_for(loop.sock_recv(sock, 1), 2.0):
                    stats["answered"] += 1
                    if len(stats["first_byte"]) < 5000:
                        stats["first_byte"].append(time.monotonic() - sent)
                else:
                    stats["errors"]["closed"] = stats["errors"].get("closed", 0) + 1
            if mode != "hello":
                await asyncio.sleep(max(0.0, end - time.monotonic()))
        except TimeoutError:
            stats["errors"]["timeout"] = stats["errors"].get("timeout", 0) + 1
        except OSError as e:
            name = errno.errorcode.get(e.errno or 0, "other")
            stats["errors"][name] = stats["errors"].get(name, 0) + 1
        finally:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            except OSError:
                pass
            sock.close()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(inflight)
        end = time.monotonic() + seconds
        running: set = set()

        def finished(task: asyncio.Task) -> None:
            running.discard(task)
            slots.release()
        while stats["attempts"] < budget:
            await slots.acquire()
            if time.monotonic() >= end:
                slots.release()
                break
            stats["attempts"] += 1
            task = loop.create_task(one(loop, end))
            running.add(task)
            task.add_done_callback(finished)
            if stats["attempts"] % 64 == 0:
                await asyncio.sleep(0)  # let the started ones run
        if running:  # each ends by `end` + 3 s (connect 1 s, first byte 2 s)
            await asyncio.wait(set(running), timeout=max(0.0, end - time.monotonic()) + 5)
    asyncio.run(run())
    return stats


def main(argv: list[str]) -> int:
    """Run the flood from this host and print its figures as JSON. Refuses
    any target outside the lab's range 198.18.0.0/15, more than 120 s or
    5,000,000 connections; one process per CPU, each `--inflight` at most."""

    parser = argparse.ArgumentParser(prog="flood")
    parser.add_argument("--target", required=True)
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--server-name", required=True)
    parser.add_argument("--mode", choices=MODES, default="hello")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--max-connections", type=int, default=1_000_000)
    parser.add_argument("--inflight", type=int, default=2000, help="per process")
    parser.add_argument("--processes", type=int, default=0, help="0: one per CPU")
    args = parser.parse_args(argv)
    if ipaddress.ip_address(args.target) not in LAB:
        parser.error(f"{args.target} is outside the lab's range 198.18.0.0/15")
    if not 0 < args.seconds <= 120 or not 0 < args.max_connections <= 5_000_000 or not 0 < args.inflight <= 20000:
        parser.error("--seconds 0..120, --max-connections 1..5000000, --inflight 1..20000")
    processes = args.processes or len(os.sched_getaffinity(0))
    if not 0 < processes <= 64:
        parser.error("--processes 1..64")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    hello = client_hello(args.server_name)
    budget = max(1, args.max_connections // processes)
    began = time.monotonic()
    children = []
    for _ in range(processes):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child floods and reports on its pipe
            os.close(read_end)
            try:
                figures = flood_process(args.target, args.port, hello, args.mode, args.seconds, budget, args.inflight)
                with os.fdopen(write_end, "w") as out:
                    out.write(json.dumps(figures))
            finally:
                os._exit(0)
        os.close(write_end)
        children.append((pid, read_end))
    totals: dict = {"attempts": 0, "connected": 0, "answered": 0, "errors": {}}
    first_byte: list = []
    for pid, read_end in children:
        with os.fdopen(read_end) as pipe:
            text = pipe.read()
        os.waitpid(pid, 0)
        figures = json.loads(text) if text else {"attempts": 0, "connected": 0, "answered": 0, "errors": {"lost": 1}}
        for key in ("attempts", "connected", "answered"):
            totals[key] += figures[key]
        for name, count in figures["errors"].items():
            totals["errors"][name] = totals["errors"].get(name, 0) + count
        first_byte += figures.get("first_byte", [])
    wall = time.monotonic() - began
    first_byte.sort()
    totals.update(mode=args.mode, processes=processes, seconds=round(wall, 3),
                  offered_per_s=round(totals["attempts"] / args.seconds, 1),
                  answered_per_s=round(totals["answered"] / args.seconds, 1),
                  first_byte_p50=round(statistics.median(first_byte), 4) if first_byte else None,
                  first_byte_p99=round(first_byte[int(0.99 * (len(first_byte) - 1))], 4) if first_byte else None)
    print(json.dumps(totals))
    return 0


def from_container(container: str, target: str, server_name: str, mode: str, seconds: float, processes: int = 0,
                   max_connections: int = 5_000_000) -> dict:
    """The flood sent from `container` (this file run there); its figures."""
    command = ["podman", "exec", "-i", container, "timeout", str(int(seconds) + 20), "python3", "-", "--target", target,
               "--port", "443", "--server-name", server_name, "--mode", mode, "--seconds", str(seconds),
               "--max-connections", str(max_connections), "--processes", str(processes)]
    run = subprocess.run(command, input=Path(__file__).read_text(), capture_output=True, text=True,
                         timeout=seconds + 60, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"the flooder failed ({run.returncode}): {run.stderr.strip()[-500:]}")
    return dict(json.loads(run.stdout))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
