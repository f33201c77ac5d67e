"""The identity provider: a front channel for browsers and a back channel
for service providers, two aiohttp applications on their own ports.

Front channel (TLS, client certificate optional):
- `GET /saml2/sso`: an AuthnRequest (HTTP-Redirect). A user with a live IdP
  session goes straight back to the SP's ACS with an artifact (303); anyone
  else gets the login form.
- `POST /saml2/login`: the form, with a password checked against the user
  database, or with the certificate the browser presented.
- `GET /saml2/metadata`: signed metadata.

Back channel (mutual TLS, client certificate required):
- `POST /saml2/ars`: SOAP ArtifactResolve (resolver.py), answered 200 with
  a signed ArtifactResponse, or 400 with a SOAP fault when the requester or
  the request is refused.

A refused request gets a 4xx and a page or fault that says why in general
terms; nothing in the input is echoed and nothing raises past a handler.
"""
from __future__ import annotations

import datetime as dt
import html
import logging
import secrets
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
from aiohttp import web
from cryptography import x509
from redis.asyncio import Redis

from ..config import read_secret
from ..constant_time import same
from ..tls import client_context, common_name, peer_certificate, server_context, spki_sha256
from ..web import start_site
from . import assertion, protocol, xmldsig
from .metadata import idp_metadata
from .resolver import Resolver, ServiceProvider
from .settings import Settings, load_providers, load_signing_pair
from .store import Store
from .users import Account, Directory
from .xml import SOAP_LIMIT, XmlError

log = logging.getLogger("dmzkit.sso.idp")

SESSION_COOKIE = "dmzkit_idp_session"
CSRF_COOKIE = "dmzkit_idp_csrf"
# Only the IdP's own paths see its cookies.
COOKIE_PATH = "/saml2"
FORM_LIMIT = 8 * 1024
X509_CONTEXT = "urn:oasis:names:tc:SAML:2.0:ac:classes:X509"
SOAP_FAULT = (
    b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault>'
    b"<faultcode>soap:Client</faultcode><faultstring>request refused</faultstring>"
    b"</soap:Fault></soap:Body></soap:Envelope>"
)


@dataclass(frozen=True)
class Pending:
    """An AuthnRequest being answered: for which SP, where the answer goes."""
    provider: ServiceProvider
    request_id: str
    acs_url: str
    relay_state: str | None
    query: str
    is_passive: bool


class Refused(Exception):
    """A front-channel request the IdP will not serve (status, message for the user)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class IdentityProvider:
    def __init__(self, settings: Settings, key: xmldsig.PrivateKey, certificate: x509.Certificate,
                 providers: dict[str, ServiceProvider], store: Store, directory: Directory,
                 metadata: bytes) -> None:
        self.settings = settings
        self.key = key
        self.certificate = certificate
        self.providers = providers
        self.store = store
        self.directory = directory
        self.metadata = metadata
        self.resolver = Resolver(settings.entity_id, settings.ars_url, settings.ars_index, key, store,
                                 providers, settings.artifact_ttl)
        # (host, port) of the front and back channels once they listen.
        self.addresses: list[tuple[str, int]] = []

    # -- applications ------------------------------------------------------------

    def front(self) -> web.Application:
        app = web.Application(client_max_size=FORM_LIMIT, middlewares=[security_headers])
        app.router.add_get("/saml2/sso", self.sso)
        app.router.add_post("/saml2/login", self.login)
        app.router.add_get("/saml2/metadata", self.serve_metadata)
        return app

    def back(self) -> web.Application:
        app = web.Application(client_max_size=SOAP_LIMIT)
        app.router.add_post("/saml2/ars", self.artifact_resolve)
        return app

    # -- front channel -----------------------------------------------------------

    def pending(self, query: str) -> Pending:
        """The AuthnRequest in a Redirect query string, checked."""
        try:
            element, relay_state, _ = protocol.read_redirect(
                query, lambda issuer: self.providers[issuer].signing_keys if issuer in self.providers else [])
            request = protocol.read_authn_request(element, self.settings.sso_urls)
        except XmlError as e:
            log.info("AuthnRequest refused: %s", e)
            raise Refused(400, "The sign-in request is not valid.") from None
        provider = self.providers.get(request.issuer)
        if provider is None:
            raise Refused(400, "The application is not registered here.")
        if request.acs_url not in (None, provider.acs_url):
            log.info("AuthnRequest from %s names an unregistered ACS", request.issuer)
            raise Refused(400, "The sign-in request is not valid.")
        if request.is_passive and request.force_authn:
            raise Refused(400, "The sign-in request is not valid.")
        return Pending(provider, request.id, provider.acs_url, relay_state, query, request.is_passive)

    async def session_user(self, request: web.Request) -> tuple[Account, str] | None:
        """The user of the browser's IdP session, and how they signed in."""
        token = request.cookies.get(SESSION_COOKIE)
        ticket = await self.store.use_ticket(token, self.settings.session_idle) if token else None
        if ticket is None:
            return None
        # A disabled or deleted user's session ends at their next request.
        account = await self.directory.account(ticket.user)
        return (account, X509_CONTEXT if ticket.device else assertion.PASSWORD) if account else None

    async def sso(self, request: web.Request) -> web.StreamResponse:
        try:
            # The signature covers the query exactly as sent: the raw, still encoded one.
            pending = self.pending(request.rel_url.raw_query_string)
        except Refused as e:
            return page(e.status, "Sign-in refused", str(e))
        session = await self.session_user(request)
        if session is not None:
            return await self.answer(pending, *session)
        if pending.is_passive:
            return page(403, "Not signed in", "Sign in first, then open the application again.")
        return self.form(request, pending)

    def form(self, request: web.Request, pending: Pending, status: int = 200, error: str = "") -> web.Response:
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        certificate = peer_certificate(request.transport)
        offer = ""
        if certificate is not None:
            name = html.escape(common_name(certificate))
            offer = (f'<p><button name="method" value="certificate">Continue as {name}</button> '
                     "(your certificate)</p><p>or</p>")
        body = (
            f'<form method="post" action="/saml2/login">{offer}'
            f'<input type="hidden" name="csrf" value="{csrf}">'
            f'<input type="hidden" name="request" value="{html.escape(pending.query)}">'
            '<p><label>User name <input name="username" autocomplete="username" required></label></p>'
            '<p><label>Password <input type="password" name="password" autocomplete="current-password">'
            '</label></p><p><button name="method" value="password">Sign in</button></p></form>'
        )
        if error:
            body = f'<p class="error">{html.escape(error)}</p>' + body
        response = page(status, "Sign in", body, raw=True)
        # Browsers hold a form's redirect to form-action too: the answer goes
        # to this SP's ACS.
        acs = urllib.parse.urlsplit(pending.acs_url)
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; form-action 'self' {acs.scheme}://{acs.netloc}")
        response.set_cookie(CSRF_COOKIE, csrf, path=COOKIE_PATH, secure=True, httponly=True, samesite="Strict")
        return response

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie or not same(str(form.get("csrf", "")), cookie):
            return page(403, "Sign-in refused", "Open the application again and sign in from there.")
        try:
            pending = self.pending(str(form.get("request", "")))
        except Refused as e:
            return page(e.status, "Sign-in refused", str(e))
        source = request.remote
        if form.get("method") == "certificate":
            certificate = peer_certificate(request.transport)
            if certificate is None:
                return self.form(request, pending, 401, "No certificate was presented.")
            name = common_name(certificate)
            account = await self.directory.account(name)
            await self.directory.audit(name, "login.certificate", account is not None, source,
                                       {"sp": pending.provider.entity_id})
            context, device = X509_CONTEXT, spki_sha256(certificate.public_key())
        else:
            account = await self.directory.check_password(str(form.get("username", ""))[:64],
                                                          str(form.get("password", ""))[:1024], source)
            context, device = assertion.PASSWORD, ""
        if account is None:
            return self.form(request, pending, 401, "Wrong user name or password, or the account is locked.")
        token = await self.store.issue_ticket(account.username, device, self.settings.session_idle,
                                              self.settings.session_absolute)
        response = await self.answer(pending, account, context)
        response.set_cookie(SESSION_COOKIE, token, path=COOKIE_PATH, secure=True, httponly=True, samesite="Lax",
                            max_age=int(self.settings.session_absolute))
        return response

    async def answer(self, pending: Pending, account: Account, context: str) -> web.Response:
        """Keep a Response for the SP and send the browser to its ACS with the artifact."""
        login = assertion.Login(account.username, protocol.new_id(), None, context, account.attributes())
        message = assertion.response(self.settings.entity_id, pending.provider.entity_id, pending.acs_url,
                                     pending.request_id, login, self.key,
                                     dt.timedelta(seconds=self.settings.session_idle))
        artifact = await self.resolver.issue(pending.provider, message)
        query = [("SAMLart", artifact)]
        if pending.relay_state is not None:
            query.append(("RelayState", pending.relay_state))
        separator = "&" if "?" in pending.acs_url else "?"
        location = pending.acs_url + separator + urllib.parse.urlencode(query)
        return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})

    async def serve_metadata(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metadata, content_type="application/samlmetadata+xml")

    # -- back channel ------------------------------------------------------------

    async def artifact_resolve(self, request: web.Request) -> web.Response:
        certificate = peer_certificate(request.transport)
        peer = spki_sha256(certificate.public_key()) if certificate is not None else None
        body = await request.read()
        try:
            answer, outcome = await self.resolver.resolve(body, peer)
        except XmlError as e:
            log.info("ArtifactResolve from %s refused: %s", request.remote, e)
            return web.Response(status=400, body=SOAP_FAULT, content_type="text/xml")
        log.info("ArtifactResolve from %s: %s", request.remote, outcome)
        return web.Response(body=answer, content_type="text/xml", headers={"Cache-Control": "no-store"})


def page(status: int, title: str, message: str, raw: bool = False) -> web.Response:
    content = message if raw else f"<p>{html.escape(message)}</p>"
    return web.Response(
        status=status, content_type="text/html", charset="utf-8",
        text=f"<!doctype html><html><head><title>{html.escape(title)}</title></head>"
             f"<body><h1>{html.escape(title)}</h1>{content}</body></html>",
        headers={"Cache-Control": "no-store"},
    )


@web.middleware
async def security_headers(request: web.Request, handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as e:
        response = page(e.status, e.reason, "The request was refused.") if e.status >= 400 else e
    response.headers.setdefault("Content-Security-Policy", "default-src 'none'; form-action 'self'")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[IdentityProvider]:
    """The IdP with its keys, registry, store and user database opened once,
    serving both channels until the block ends."""
    key, certificate = load_signing_pair(settings)
    providers = load_providers(settings.providers_dir)
    metadata = idp_metadata(settings, certificate, key)
    redis = Redis(unix_socket_path=settings.store_socket, username=settings.store_user,
                  password=read_secret(settings.store_password_file))
    database_tls = None if settings.db_host.startswith("/") else client_context(settings.ca_chain)
    pool = await asyncpg.create_pool(host=settings.db_host, port=settings.db_port, database=settings.db_name,
                                     user=settings.db_user, password=read_secret(settings.db_password_file),
                                     ssl=database_tls, min_size=1, max_size=8)
    runners: list[web.AppRunner] = []
    try:
        directory = Directory(pool, settings.lockout_attempts, settings.lockout_seconds)
        await directory.prepare()
        idp = IdentityProvider(settings, key, certificate, providers, Store(redis), directory, metadata)
        for app, listen, clients in ((idp.front(), settings.front_listen, ssl.CERT_OPTIONAL),
                                     (idp.back(), settings.back_listen, ssl.CERT_REQUIRED)):
            context = server_context(settings.certificate, settings.private_key, settings.ca_chain, settings.crl,
                                     clients)
            runners.append(await start_site(app, listen, context))
        idp.addresses = [runner.addresses[0] for runner in runners]
        yield idp
    finally:
        for runner in runners:
            await runner.cleanup()
        await pool.close()
        await redis.close()
