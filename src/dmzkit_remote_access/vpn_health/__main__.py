"""dmzkit-vpn-health: judge the gateway's VPN and tell the failover watchdog, or check the settings.

    dmzkit-vpn-health [--config FILE]
    dmzkit-vpn-health --check --config FILE
"""
from __future__ import annotations

import sys

from ..config import ConfigError
from ..daemon import Service, service_main
from .settings import Settings

DEFAULT_CONFIG = "/etc/dmzkit-vpn-health/config.json"


def agent(path: str) -> Service:
    from .agent import Agent

    built = Agent(Settings.load(path))
    try:
        built.context()  # the certificate, key, CA and CRL, read as the agent will read them
    except OSError as e:  # ssl.SSLError is an OSError
        raise ConfigError(f"the TLS files cannot be used: {e.strerror or e}") from None
    return built


def main(argv: list[str] | None = None) -> int:
    return service_main("dmzkit-vpn-health", __doc__, agent, argv, DEFAULT_CONFIG)


if __name__ == "__main__":
    sys.exit(main())
