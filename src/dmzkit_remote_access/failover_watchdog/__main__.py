"""dmzkit-failover-watchdog: run the watchdog, check its configuration, or talk to it.

    python3 -m dmzkit_remote_access.failover_watchdog run [--config FILE]
    python3 -m dmzkit_remote_access.failover_watchdog check-config FILE
    python3 -m dmzkit_remote_access.failover_watchdog ctl takeover|handback|reset|status
    python3 -m dmzkit_remote_access.failover_watchdog guard --interface IF --vip ADDRESS/PREFIX
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import socket
import sys

from ..daemon import until_stopped
from .settings import ConfigError, Settings

DEFAULT_CONFIG = "/etc/dmzkit-failover-watchdog/config.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dmzkit-failover-watchdog", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="watch the primary and take over its address when it dies")
    run.add_argument("--config", default=DEFAULT_CONFIG)
    check = commands.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("config")
    ctl = commands.add_parser("ctl", help="ask the running watchdog to act")
    ctl.add_argument("verb", choices=["takeover", "handback", "reset", "status"])
    ctl.add_argument("--config", default=DEFAULT_CONFIG)
    guard = commands.add_parser("guard", help="on the primary: claim the VIP only when nobody else holds it")
    guard.add_argument("--interface", required=True)
    guard.add_argument("--vip", required=True, type=ipaddress.IPv4Interface, help="address/prefix")
    guard.add_argument("--interval", type=float, default=0.1, help="seconds between probes (default 0.1)")
    guard.add_argument("--probes", type=int, default=3, help="unanswered probes before claiming (default 3)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    if args.command == "guard":
        return run_guard(args.interface, args.vip, args.interval, args.probes)

    try:
        settings = Settings.load(args.config)
    except ConfigError as e:
        print(f"dmzkit-failover-watchdog: {e}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{args.config}: ok (profile {settings.profile_name}, interval {settings.profile.interval:g} s "
              f"x {settings.profile.misses})")
        return 0
    if args.command == "ctl":
        return control(settings, args.verb)
    from .service import Watchdog  # raw sockets need privileges: only when running

    try:
        watchdog = Watchdog(settings)
    except ConfigError as e:
        print(f"dmzkit-failover-watchdog: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"dmzkit-failover-watchdog: cannot open {settings.interface}: {e.strerror}", file=sys.stderr)
        return 1
    asyncio.run(until_stopped(watchdog.run()))
    return 0


def run_guard(interface: str, vip: ipaddress.IPv4Interface, interval: float, probes: int) -> int:
    from .guard import Guard

    if interval <= 0 or probes < 1:
        print("dmzkit-failover-watchdog: --interval must be positive and --probes at least 1", file=sys.stderr)
        return 2
    try:
        guard = Guard(interface, vip, interval, probes)
    except OSError as e:
        print(f"dmzkit-failover-watchdog: cannot open {interface}: {e.strerror}", file=sys.stderr)
        return 1
    asyncio.run(until_stopped(guard.run()))
    return 0


def control(settings: Settings, verb: str) -> int:
    path = f"{settings.state_dir}/control.sock"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(path)
            sock.sendall(verb.encode() + b"\n")
            answer = json.loads(sock.makefile().readline())
    except (OSError, ValueError) as e:
        print(f"dmzkit-failover-watchdog: cannot reach the watchdog at {path}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0 if answer.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
