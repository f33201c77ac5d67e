"""dmzkit-vpn-health: judge the gateway's VPN and tell the failover watchdog, or check the settings.

    dmzkit-vpn-health [--config FILE]
    dmzkit-vpn-health --check --config FILE
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ..config import ConfigError
from ..daemon import until_stopped
from .settings import Settings

DEFAULT_CONFIG = "/etc/dmzkit-vpn-health/config.json"
PROG = "dmzkit-vpn-health"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--check", action="store_true", help="validate the settings and the files they name, and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    from .agent import Agent

    try:
        agent = Agent(Settings.load(args.config))
        try:
            agent.context()  # the certificate, key, CA and CRL, read as the agent will read them
        except OSError as e:  # ssl.SSLError is an OSError
            raise ConfigError(f"the TLS files cannot be used: {e.strerror or e}") from None
    except ConfigError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config}: ok")
        return 0
    asyncio.run(until_stopped(agent.run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
