"""dmzkit-failover-watchdog: run the watchdog, check its configuration, talk to it, or set up its NIC.

    python3 -m dmzkit_remote_access.failover_watchdog run [--config FILE]
    python3 -m dmzkit_remote_access.failover_watchdog check-config FILE
    python3 -m dmzkit_remote_access.failover_watchdog ctl takeover|handback|reset|status
    python3 -m dmzkit_remote_access.failover_watchdog standby-nic [--check] [--absent] FILE
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sys

from ..daemon import until_stopped
from .settings import ConfigError, Settings
from .standby import StandbyError, StandbyNic, converge

DEFAULT_CONFIG = "/etc/dmzkit-failover-watchdog/config.json"
PROG = "dmzkit-failover-watchdog"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="watch the primary and take over its address when it dies")
    run.add_argument("--config", default=DEFAULT_CONFIG)
    check = commands.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("config")
    ctl = commands.add_parser("ctl", help="ask the running watchdog to act")
    ctl.add_argument("verb", choices=["takeover", "handback", "reset", "status"])
    ctl.add_argument("--config", default=DEFAULT_CONFIG)
    standby = commands.add_parser("standby-nic", help="bring the standby NIC to what FILE says; print it as JSON")
    standby.add_argument("config", metavar="FILE")
    standby.add_argument("--check", action="store_true", help="change nothing, only tell what would change")
    standby.add_argument("--absent", action="store_true", help="remove the policy rule (the link stays up)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        if args.command == "standby-nic":
            return standby_nic(args.config, args.check, args.absent)
        settings = Settings.load(args.config)
    except ConfigError as e:
        return refused(e, 2)
    except StandbyError as e:
        return refused(e, 1)
    if args.command == "check-config":
        print(f"{args.config}: ok (profile {settings.profile_name}, interval {settings.profile.interval:g} s "
              f"x {settings.profile.misses})")
        return 0
    if args.command == "ctl":
        return control(settings, args.verb)
    return run_watchdog(settings)


def refused(error: Exception | str, code: int) -> int:
    print(f"{PROG}: {error}", file=sys.stderr)
    return code


def standby_nic(path: str, check: bool, absent: bool) -> int:
    print(json.dumps(converge(StandbyNic.load(path), present=not absent, check=check)))
    return 0


def run_watchdog(settings: Settings) -> int:
    from .service import Watchdog  # raw sockets need privileges: only when running

    try:
        watchdog = Watchdog(settings)
    except ConfigError as e:
        return refused(e, 2)
    except OSError as e:
        return refused(f"cannot open {settings.interface}: {e.strerror}", 1)
    asyncio.run(until_stopped(watchdog.run()))
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
        print(f"{PROG}: cannot reach the watchdog at {path}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0 if answer.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
