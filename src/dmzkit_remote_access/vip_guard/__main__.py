"""dmzkit-vip-guard: on the gateway, claim the VIP only when nobody else holds it.

    dmzkit-vip-guard --interface IF --vip ADDRESS/PREFIX [--interval SECONDS] [--probes N]
    python3 -m dmzkit_remote_access.vip_guard --interface IF --vip ADDRESS/PREFIX
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys

from ..daemon import until_stopped

PROG = "dmzkit-vip-guard"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--interface", required=True, help="the interface in the VIP's subnet")
    parser.add_argument("--vip", required=True, type=ipaddress.IPv4Interface, help="address/prefix")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between probes (default 0.1)")
    parser.add_argument("--probes", type=int, default=3, help="unanswered probes before claiming (default 3)")
    args = parser.parse_args(argv)
    if args.interval <= 0 or args.probes < 1:
        parser.error("--interval must be positive and --probes at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    from .guard import Guard  # raw sockets: only when running

    try:
        guard = Guard.open(args.interface, args.vip, args.interval, args.probes)
    except OSError as e:
        print(f"{PROG}: cannot open {args.interface}: {e.strerror}", file=sys.stderr)
        return 1
    asyncio.run(until_stopped(guard.run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
