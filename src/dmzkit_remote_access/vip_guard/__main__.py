"""dmzkit-vip-guard: on the gateway, claim the VIP only when nobody else holds it.

    dmzkit-vip-guard --interface IF --vip ADDRESS/PREFIX [--interval SECONDS] [--probes N]
                     [--peer-mac MAC ...] [--patience SECONDS]
    python3 -m dmzkit_remote_access.vip_guard --interface IF --vip ADDRESS/PREFIX

Only a --peer-mac (the VNC backup host's standby NIC) holding the VIP makes
the guard wait for as long as it holds it; any other MAC claiming it holds the
guard back for --patience seconds at most (ARP can be forged by anyone on the
segment), then the guard claims the VIP and defends it.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import math
import sys

from ..daemon import until_stopped
from ..net.arp import DEFEND_INTERVAL, unicast_mac

PROG = "dmzkit-vip-guard"


def mac(value: str) -> str:
    try:
        return unicast_mac(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--interface", required=True, help="the interface in the VIP's subnet")
    parser.add_argument("--vip", required=True, type=ipaddress.IPv4Interface, help="address/prefix")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between probes (default 0.1)")
    parser.add_argument("--probes", type=int, default=3, help="unanswered probes before claiming (default 3)")
    parser.add_argument("--peer-mac", dest="peers", type=mac, action="append", default=[], metavar="MAC",
                        help="a MAC of the backup, whose hold of the VIP the guard waits out (repeat for more)")
    parser.add_argument("--patience", type=float, default=DEFEND_INTERVAL,
                        help=f"seconds claims of other MACs may keep the guard from claiming "
                             f"(default {DEFEND_INTERVAL:g})")
    args = parser.parse_args(argv)
    if args.interval <= 0 or args.probes < 1:
        parser.error("--interval must be positive and --probes at least 1")
    if not 0 <= args.patience < math.inf:  # never forever: a forger could park the guard
        parser.error("--patience must be zero or more seconds, and finite")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    from .guard import Guard  # raw sockets: only when running

    try:
        guard = Guard.open(args.interface, args.vip, args.interval, args.probes, args.peers, args.patience)
    except OSError as e:
        print(f"{PROG}: cannot open {args.interface}: {e.strerror}", file=sys.stderr)
        return 1
    except ValueError as e:  # this gateway's own MAC among the peers
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    asyncio.run(until_stopped(guard.run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
