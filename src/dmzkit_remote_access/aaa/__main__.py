"""dmzkit-aaa: check AAA's settings (FreeRADIUS runs the check itself).

    dmzkit-aaa --check --config FILE
"""
from __future__ import annotations

import argparse
import sys

from ..config import ConfigError
from .settings import Settings

PROG = "dmzkit-aaa"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--check", action="store_true", required=True,
                        help="validate the settings and the files they name, and exit")
    args = parser.parse_args(argv)
    try:
        settings = Settings.load(args.config)
        for path in (settings.db_passfile, settings.ca_chain, settings.crl):
            if path:
                open(path, "rb").close()
    except ConfigError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{PROG}: cannot read {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    print(f"{args.config}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
