"""dmzkit-radius-relay: sign a local NAS's RADIUS for AAA, or check the settings.

    dmzkit-radius-relay --config FILE [--check]
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ..config import ConfigError
from ..daemon import until_stopped
from .relay import Relay
from .settings import Settings

PROG = "dmzkit-radius-relay"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--check", action="store_true", help="validate the settings and the secrets they name, and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        relay = Relay(Settings.load(args.config))
    except ConfigError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config}: ok")
        return 0
    asyncio.run(until_stopped(relay.run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
