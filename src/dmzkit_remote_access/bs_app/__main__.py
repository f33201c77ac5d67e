"""dmzkit-bs-app: serve the B/S application, or check its settings.

    dmzkit-bs-app [--config FILE]
    dmzkit-bs-app --check --config FILE
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import sys

from ..config import ConfigError
from ..daemon import Notifier, until_stopped
from ..sso.settings import load_certificate, load_signing_key
from ..tls import server_context
from ..sealing import load_key
from .settings import Settings

DEFAULT_CONFIG = "/etc/dmzkit-bs-app/settings.json"


def check(settings: Settings) -> None:
    """Everything the app reads at start, read once now."""
    try:
        server_context(settings.certificate, settings.private_key, settings.ca_chain, settings.crl, ssl.CERT_REQUIRED)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"the TLS files cannot be used: {e}") from None
    if settings.sso is not None:
        load_certificate(settings.sso.idp_signing_certificate)
        load_signing_key(settings.sso.signing_key)
        load_key(settings.sso.session_key_file)


async def serve(settings: Settings) -> None:
    from .app import running  # the web stack only when serving

    async with running(settings) as address:
        how = "with single sign-on" if settings.sso is not None else "gateway identities only"
        Notifier().notify(ready=1, status=f"serving on {address[0]}:{address[1]}, {how}")
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dmzkit-bs-app", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--check", action="store_true", help="validate the settings and the files they name, and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s", stream=sys.stderr)
    try:
        settings = Settings.load(args.config)
        check(settings)
        if args.check:
            print(f"{args.config}: ok")
            return 0
        asyncio.run(until_stopped(serve(settings)))
    except ConfigError as e:
        print(f"dmzkit-bs-app: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
