"""dmzkit-radius-relay: sign a local NAS's RADIUS for AAA, or check the settings.

    dmzkit-radius-relay --config FILE [--check]
"""
from __future__ import annotations

import sys

from ..daemon import service_main
from .relay import Relay
from .settings import Settings


def main(argv: list[str] | None = None) -> int:
    return service_main("dmzkit-radius-relay", __doc__, lambda path: Relay(Settings.load(path)), argv)


if __name__ == "__main__":
    sys.exit(main())
