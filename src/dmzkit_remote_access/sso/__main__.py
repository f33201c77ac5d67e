"""dmzkit-sso: run the SAML identity provider or proxy, or check their configuration.

    dmzkit-sso idp [--config FILE]
    dmzkit-sso proxy [--config FILE]
    dmzkit-sso check-config FILE
    dmzkit-sso check-proxy-config FILE
    dmzkit-sso check-provider FILE
    dmzkit-sso metadata [--config FILE]
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ..config import ConfigError, load_object
from ..daemon import Notifier, until_stopped
from .settings import (ProxySettings, Settings, load_certificate, load_providers, load_signing_pair,
                       provider_from_dict)

DEFAULT_CONFIG = "/etc/dmzkit-sso/idp.json"
DEFAULT_PROXY_CONFIG = "/etc/dmzkit-sso-proxy/proxy.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dmzkit-sso", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    idp = commands.add_parser("idp", help="serve the IdP's front and back channels")
    idp.add_argument("--config", default=DEFAULT_CONFIG)
    proxy = commands.add_parser("proxy", help="serve the SAML proxy for C/S applications")
    proxy.add_argument("--config", default=DEFAULT_PROXY_CONFIG)
    check = commands.add_parser("check-config", help="validate the IdP's configuration, its keys and SPs, and exit")
    check.add_argument("config")
    check_proxy = commands.add_parser("check-proxy-config", help="validate the proxy's configuration and exit")
    check_proxy.add_argument("config")
    check_provider = commands.add_parser("check-provider", help="validate one SP's registration file and exit")
    check_provider.add_argument("file")
    metadata = commands.add_parser("metadata", help="print the IdP's signed metadata")
    metadata.add_argument("--config", default=DEFAULT_CONFIG)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s", stream=sys.stderr)
    try:
        if args.command in ("proxy", "check-proxy-config"):
            return proxy_command(args.command, args.config)
        if args.command == "check-provider":
            provider_from_dict(load_object(args.file), args.file)
            print(f"{args.file}: ok")
            return 0
        settings = Settings.load(args.config)
        if args.command == "check-config":
            load_signing_pair(settings)
            providers = load_providers(settings.providers_dir)
            print(f"{args.config}: ok ({settings.entity_id}, {len(providers)} service providers)")
            return 0
        if args.command == "metadata":
            sys.stdout.write(signed_metadata(settings).decode() + "\n")
            return 0
        asyncio.run(until_stopped(serve(settings)))
    except ConfigError as e:
        print(f"dmzkit-sso: {e}", file=sys.stderr)
        return 2
    return 0


def proxy_command(command: str, path: str) -> int:
    settings = ProxySettings.load(path)
    load_signing_pair(settings)
    load_certificate(settings.idp_signing_certificate)
    if command == "check-proxy-config":
        print(f"{path}: ok ({len(settings.apps)} applications)")
        return 0
    asyncio.run(until_stopped(serve_proxy(settings)))
    return 0


async def serve_proxy(settings: ProxySettings) -> None:
    from .proxy import running  # the web stack only when serving

    async with running(settings) as proxy:
        Notifier().notify(ready=1, status=f"SAML proxy for {len(settings.apps)} applications on {proxy.address}")
        await asyncio.Event().wait()


def signed_metadata(settings: Settings) -> bytes:
    from . import protocol
    from .metadata import idp_metadata

    key, certificate = load_signing_pair(settings)
    return idp_metadata(settings, certificate, key, protocol.now())


async def serve(settings: Settings) -> None:
    from .idp import running  # the web and database stack only when serving

    async with running(settings) as idp:
        notifier = Notifier()
        notifier.notify(ready=1, status=f"serving {settings.entity_id} on {idp.addresses}")
        await asyncio.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
