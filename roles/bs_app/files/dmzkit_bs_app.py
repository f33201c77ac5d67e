#!/usr/bin/python3
"""A small B/S (browser/server) application for the internal network.

It answers only over mutual TLS with a certificate of the organisation's CA,
and only to connections from the gateway (the clientless portal, or a user's
tunnel, which the gateway masquerades). Who is signed in comes from the TLS
layer, never from the client:

- when the TLS peer is one of the trusted portals, the portal has verified the
  user's certificate and put the user's name in the identity header (nginx
  always overwrites it);
- otherwise the peer is the user's own certificate, sent through the VPN
  tunnel, and any identity header is ignored.

Run by systemd with a JSON settings file; SIGHUP reloads the TLS context so a
fresh CRL takes effect without dropping the listener.
"""
from __future__ import annotations

import argparse
import html
import ipaddress
import json
import signal
import ssl
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass(frozen=True)
class Settings:
    listen_address: str
    port: int
    certificate: str
    private_key: str
    ca_chain: str
    crl: str
    trusted_portals: frozenset[str]
    allowed_sources: tuple[Network, ...]
    identity_header: str
    title: str

    @classmethod
    def load(cls, path: str) -> Settings:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        return cls(
            listen_address=raw["listen_address"],
            port=int(raw["port"]),
            certificate=raw["certificate"],
            private_key=raw["private_key"],
            ca_chain=raw["ca_chain"],
            crl=raw["crl"],
            trusted_portals=frozenset(raw["trusted_portals"]),
            allowed_sources=tuple(ipaddress.ip_network(n) for n in raw["allowed_sources"]),
            identity_header=raw["identity_header"],
            title=raw["title"],
        )

    @property
    def identity_environ_key(self) -> str:
        return "HTTP_" + self.identity_header.upper().replace("-", "_")


@dataclass(frozen=True)
class Visitor:
    user: str
    via: str  # "portal" (its identity header) or "certificate" (the client's own)


class Refused(Exception):
    """The request did not come through the gateway with a verified user."""


def identify(environ: dict[str, Any], settings: Settings) -> Visitor:
    source = ipaddress.ip_address(environ.get("REMOTE_ADDR", "0.0.0.0"))
    if not any(source in network for network in settings.allowed_sources):
        raise Refused(f"requests from {source} do not come through the gateway")
    # The TLS layer refuses connections without a valid certificate, so a
    # missing peer name here means the server runs without client
    # verification: refuse rather than trust anything.
    peer = environ.get("SSL_CLIENT_S_DN_CN", "")
    if environ.get("SSL_CLIENT_VERIFY") != "SUCCESS" or not peer:
        raise Refused("no verified client certificate")
    if peer in settings.trusted_portals:
        user = environ.get(settings.identity_environ_key, "").strip()
        if not user:
            raise Refused(f"portal {peer} sent no user")
        return Visitor(user=user, via="portal")
    return Visitor(user=peer, via="certificate")


def _respond(start_response: StartResponse, status: str, content_type: str, body: str) -> list[bytes]:
    data = body.encode("utf-8")
    start_response(status, [
        ("Content-Type", content_type),
        ("Content-Length", str(len(data))),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
    ])
    return [data]


def make_app(settings: Settings) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _respond(start_response, "405 Method Not Allowed", "text/plain; charset=utf-8",
                            "only GET\n")
        path = environ.get("PATH_INFO", "/")
        if path not in ("/", "/whoami"):
            return _respond(start_response, "404 Not Found", "text/plain; charset=utf-8", "not found\n")
        try:
            visitor = identify(environ, settings)
        except Refused as refusal:
            return _respond(start_response, "403 Forbidden", "text/plain; charset=utf-8", f"{refusal}\n")
        if path == "/whoami":
            return _respond(start_response, "200 OK", "application/json",
                            json.dumps({"user": visitor.user, "via": visitor.via}) + "\n")
        title = html.escape(settings.title)
        page = (
            f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>"
            f"<body><h1>{title}</h1><p>Signed in as <strong id=\"user\">{html.escape(visitor.user)}</strong>"
            f" (identified by the {visitor.via}).</p></body></html>\n"
        )
        return _respond(start_response, "200 OK", "text/html; charset=utf-8", page)

    return app


def tls_context(settings: Settings) -> ssl.SSLContext:
    """Server context that demands a client certificate chaining to the CA
    and not listed on its CRL."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.certificate, settings.private_key)
    context.load_verify_locations(cafile=settings.ca_chain)
    context.load_verify_locations(cafile=settings.crl)
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def serve(settings: Settings) -> None:
    from cheroot import wsgi
    from cheroot.ssl.builtin import BuiltinSSLAdapter

    server = wsgi.Server((settings.listen_address, settings.port), make_app(settings),
                         server_name=settings.title)
    adapter = BuiltinSSLAdapter(settings.certificate, settings.private_key, settings.ca_chain)
    adapter.context = tls_context(settings)
    server.ssl_adapter = adapter

    def reload_tls(_signum: int, _frame: object) -> None:
        adapter.context = tls_context(settings)

    def shut_down(_signum: int, _frame: object) -> None:
        # safe_start() stops the server cleanly on SystemExit.
        raise SystemExit(0)

    signal.signal(signal.SIGHUP, reload_tls)
    signal.signal(signal.SIGTERM, shut_down)
    server.safe_start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="JSON settings file")
    args = parser.parse_args(argv)
    try:
        settings = Settings.load(args.config)
    except (OSError, KeyError, ValueError) as error:
        print(f"dmzkit-bs-app: bad settings in {args.config}: {error}", file=sys.stderr)
        return 2
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
