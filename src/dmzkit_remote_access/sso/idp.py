"""The identity provider: a front channel for browsers and a back channel
for service providers, two aiohttp applications on their own ports.

Front channel (TLS, client certificate optional):
- `GET /saml2/sso`: an AuthnRequest (HTTP-Redirect). A user with a live IdP
  session, presented from the device it was opened on (the same client
  certificate, or none), goes straight back to the SP's ACS with an artifact
  (303), unless the SP asks for ForceAuthn; anyone else gets the login form.
- `POST /saml2/login`: the form, with a password checked against the user
  database, or with the certificate the browser presented.
- `GET /saml2/slo`: a LogoutRequest (HTTP-Redirect, signed by a registered
  SP) ends the browser's session if it is the named user's; the SP gets a
  signed LogoutResponse at its registered SLO URL, or the user a page.
- `GET|POST /saml2/logout`: the user's own sign-out, a form (CSRF-checked).
- `GET /saml2/metadata`: signed metadata.

Back channel (mutual TLS, client certificate required):
- `POST /saml2/ars`: SOAP ArtifactResolve (resolver.py), answered 200 with
  a signed ArtifactResponse, or with a SOAP 1.1 fault (HTTP 500, SOAP 1.1
  §6.2) when the requester or the request is refused (soap:Client, or
  soap:MustUnderstand / soap:VersionMismatch) or the IdP fails (soap:Server).

A refused browser request gets a 4xx and a page that says why in general
terms; nothing in the input is echoed and nothing raises past a handler.
"""
from __future__ import annotations

import datetime as dt
import html
import ipaddress
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
from ..tls import client_context, peer_certificate, person_of, server_context, spki_sha256
from ..web import start_site
from . import assertion, protocol, xmldsig
from .metadata import SignedMetadata
from .resolver import Resolver, ServiceProvider
from .settings import Settings, load_signing_pair, read_providers
from .store import Store, Ticket
from ..userdb import Account, Directory
from .xml import SOAP_LIMIT, XmlError

log = logging.getLogger("dmzkit.sso.idp")

# __Host- (RFC 6265bis §4.1.3.2): a browser keeps such a cookie only if it
# is Secure, for Path=/ and without Domain, so no other site of the domain
# and no plain-HTTP answer can plant or overwrite it (the CSRF check relies
# on that). The IdP has a host name of its own: Path=/ shows them to no one else.
SESSION_COOKIE = "__Host-dmzkit_idp_session"
CSRF_COOKIE = "__Host-dmzkit_idp_csrf"
FORM_LIMIT = 8 * 1024
X509_CONTEXT = "urn:oasis:names:tc:SAML:2.0:ac:classes:X509"


@dataclass(frozen=True)
class Pending:
    """An AuthnRequest being answered: for which SP, where the answer goes."""
    provider: ServiceProvider
    request_id: str
    acs_url: str
    relay_state: str | None
    query: str
    is_passive: bool
    force_authn: bool


class Refused(Exception):
    """A front-channel request the IdP will not serve (status, message for the user)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class IdentityProvider:
    def __init__(self, settings: Settings, key: xmldsig.PrivateKey, certificate: x509.Certificate,
                 providers: dict[str, ServiceProvider], store: Store, directory: Directory,
                 metadata: SignedMetadata) -> None:
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
        app.router.add_get("/saml2/slo", self.single_logout)
        app.router.add_get("/saml2/logout", self.logout_page)
        app.router.add_post("/saml2/logout", self.logout)
        app.router.add_get("/saml2/metadata", self.serve_metadata)
        return app

    def back(self) -> web.Application:
        app = web.Application(client_max_size=SOAP_LIMIT)
        app.router.add_post("/saml2/ars", self.artifact_resolve)
        return app

    # -- front channel -----------------------------------------------------------

    def signing_keys(self, issuer: str) -> list[xmldsig.PublicKey]:
        """The keys a registered SP signs its Redirect messages with; none for anyone else."""
        provider = self.providers.get(issuer)
        return provider.signing_keys if provider is not None else []

    def pending(self, query: str) -> Pending:
        """The AuthnRequest in a Redirect query string, checked."""
        try:
            element, relay_state, _ = protocol.read_redirect(query, self.signing_keys)
            request = protocol.read_authn_request(element, self.settings.front_urls("/saml2/sso"))
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
        return Pending(provider, request.id, provider.acs_url, relay_state, query, request.is_passive,
                       request.force_authn)

    def person(self, certificate: x509.Certificate | None) -> str | None:
        """The user a client certificate signs in, if it is a person's: a desktop
        or a device holds a certificate with the user's CN too, and its key
        sits on a DMZ host."""
        if certificate is None:
            return None
        return person_of(certificate, self.settings.person_certificate_units)

    def source(self, request: web.Request) -> str | None:
        """The browser's address: as a trusted proxy forwards it, else the peer's."""
        if request.remote in self.settings.trusted_proxies:
            forwarded = request.headers.get("X-Forwarded-For", "").rsplit(",", 1)[-1].strip()
            try:
                return str(ipaddress.ip_address(forwarded))
            except ValueError:
                log.warning("trusted proxy %s sent no usable X-Forwarded-For", request.remote)
        return request.remote

    async def session_ticket(self, request: web.Request) -> tuple[str, Ticket] | None:
        """The browser's IdP session, its token and ticket, if it is live and
        presented from the device it was opened on; untouched."""
        token = request.cookies.get(SESSION_COOKIE, "")
        ticket = await self.store.ticket(token) if token else None
        # A ticket that does not say how its user authenticated (one of an
        # older version) cannot vouch for them.
        if ticket is None or not ticket.context:
            return None
        # A copied cookie tried elsewhere must neither keep the session alive nor end it.
        if not same(device_of(peer_certificate(request.transport)), ticket.device):
            log.warning("IdP session of %s presented from another device, from %s", ticket.user, self.source(request))
            return None
        return token, ticket

    async def session_user(self, request: web.Request) -> tuple[Account, Ticket] | None:
        """The user of the browser's IdP session and its ticket, the session renewed."""
        session = await self.session_ticket(request)
        if session is None:
            return None
        token, ticket = session
        account = await self.directory.account(ticket.user)
        if account is None:
            # A disabled or deleted user's session ends at their next request,
            # for good: enabled again, they sign in again.
            await self.store.revoke_ticket(token)
            return None
        await self.store.renew_ticket(token, ticket, self.settings.session_idle)
        return account, ticket

    async def sso(self, request: web.Request) -> web.StreamResponse:
        try:
            # The signature covers the query exactly as sent: the raw, still encoded one.
            pending = self.pending(request.rel_url.raw_query_string)
        except Refused as e:
            return page(e.status, "Sign-in refused", str(e))
        # ForceAuthn (SAMLCore §3.4.1): the user authenticates anew, whatever session there is.
        session = None if pending.force_authn else await self.session_user(request)
        if session is not None:
            return await self.answer(pending, *session)
        if pending.is_passive:
            return page(403, "Not signed in", "Sign in first, then open the application again.")
        return self.form(request, pending)

    def form(self, request: web.Request, pending: Pending, status: int = 200, error: str = "") -> web.Response:
        csrf = csrf_token(request)
        person = self.person(peer_certificate(request.transport))
        offer = ""
        if person is not None:
            offer = (f'<p><button name="method" value="certificate">Continue as {html.escape(person)}</button> '
                     "(your certificate)</p><p>or</p>")
        body = (
            f'<form method="post" action="/saml2/login">{offer}{csrf_field(csrf)}'
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
        keep_csrf(response, csrf)
        return response

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if not csrf_checked(request, form):
            return page(403, "Sign-in refused", "Open the application again and sign in from there.")
        try:
            pending = self.pending(str(form.get("request", "")))
        except Refused as e:
            return page(e.status, "Sign-in refused", str(e))
        source = self.source(request)
        certificate = peer_certificate(request.transport)
        if form.get("method") == "certificate":
            if certificate is None:
                return self.form(request, pending, 401, "No certificate was presented.")
            name = self.person(certificate)
            if name is None:
                await self.directory.audit(certificate.subject.rfc4514_string()[:200], "login.certificate", False,
                                           source, {"sp": pending.provider.entity_id, "reason": "not a person's"})
                return self.form(request, pending, 401, "This certificate is not one to sign in with.")
            account = await self.directory.account(name)
            await self.directory.audit(name, "login.certificate", account is not None, source,
                                       {"sp": pending.provider.entity_id})
            context = X509_CONTEXT
        else:
            account = await self.directory.check_password(str(form.get("username", ""))[:64],
                                                          str(form.get("password", ""))[:1024], source)
            context = assertion.PASSWORD
        if account is None:
            return self.form(request, pending, 401, "Wrong user name or password, or the account is locked.")
        # Bound to the certificate the browser presented, whichever way the user signed in.
        token, ticket = await self.store.open_ticket(account.username, device_of(certificate),
                                                     self.settings.session_idle, self.settings.session_absolute,
                                                     context)
        response = await self.answer(pending, account, ticket)
        # No Max-Age: the ticket in Redis alone says when the session ends
        # (idle, absolute, signed out); the cookie goes with the browser.
        response.set_cookie(SESSION_COOKIE, token, path="/", secure=True, httponly=True, samesite="Lax")
        return response

    async def answer(self, pending: Pending, account: Account, ticket: Ticket) -> web.Response:
        """Keep a Response for the SP and send the browser to its ACS with the artifact.
        The assertion says when and how the session's user authenticated, and
        when the session ends: after the idle time unless the user comes back,
        at its absolute end at the latest."""
        login = assertion.Login(account.username, protocol.new_id(), None, ticket.context, account.attributes(),
                                authn_instant=dt.datetime.fromtimestamp(ticket.created, dt.timezone.utc))
        ends = dt.datetime.fromtimestamp(ticket.expires, dt.timezone.utc) - protocol.now()
        message = assertion.response(self.settings.entity_id, pending.provider.entity_id, pending.acs_url,
                                     pending.request_id, login, self.key,
                                     min(dt.timedelta(seconds=self.settings.session_idle), ends))
        artifact = await self.resolver.issue(pending.provider, message)
        query = [("SAMLart", artifact)]
        if pending.relay_state is not None:
            query.append(("RelayState", pending.relay_state))
        separator = "&" if "?" in pending.acs_url else "?"
        location = pending.acs_url + separator + urllib.parse.urlencode(query)
        return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})

    async def end_session(self, request: web.Request, session: tuple[str, Ticket], detail: dict) -> None:
        token, ticket = session
        await self.store.revoke_ticket(token)
        await self.directory.audit(ticket.user, "logout", True, self.source(request), detail)
        log.info("%s signed out at the IdP (%s)", ticket.user, detail)

    async def single_logout(self, request: web.Request) -> web.Response:
        """SAMLProf §4.4 at the IdP, without propagation: the browser's session
        ends if it is the user the SP names, and the SP is answered. The
        other SPs' sessions run to their own ends (docs/sso.md)."""
        try:
            element, relay_state, signed = protocol.read_redirect(request.rel_url.raw_query_string,
                                                                  self.signing_keys)
            # SAMLProf §4.4.4.1 wants the requester authenticated; unsigned,
            # any page could sign users out with an <img>.
            if not signed:
                raise XmlError("an unsigned LogoutRequest")
            logout = protocol.read_logout_request(element, self.settings.front_urls("/saml2/slo"))
        except XmlError as e:
            log.info("LogoutRequest refused: %s", e)
            return page(400, "Sign-out refused", "The sign-out request is not valid.")
        provider = self.providers[logout.issuer]  # it verified with this SP's keys
        # A signed URL can leak (a log, a Referer): once used, it ends nothing again.
        if not await self.store.first_use("logout-request", f"{provider.entity_id} {logout.id}",
                                          protocol.accepted_for()):
            log.info("LogoutRequest %s from %s replayed", logout.id, provider.entity_id)
            return page(400, "Sign-out refused", "The sign-out request is not valid.")
        session = await self.session_ticket(request)
        # No session (any more) is a success too: the user is signed out.
        ended = session is None or session[1].user == logout.name_id
        if not ended:
            log.warning("LogoutRequest from %s names another user than the session's, which stays", provider.entity_id)
        status = (protocol.SUCCESS,) if ended else (protocol.REQUESTER, protocol.UNKNOWN_PRINCIPAL)
        if provider.slo_url is None:
            response = (page(200, "Signed out", "You are signed out of the sign-in service.") if ended else
                        page(200, "Not signed out", "This browser is signed in as another user, who stays signed in."))
        else:
            answer = protocol.logout_response(self.settings.entity_id, provider.slo_url, logout.id, status)
            location = protocol.redirect_url(provider.slo_url, answer, relay_state, self.key, "SAMLResponse")
            response = web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})
        if session is not None and ended:
            await self.end_session(request, session, {"sp": provider.entity_id})
            end_cookie(response)
        return response

    async def logout_page(self, request: web.Request) -> web.Response:
        csrf = csrf_token(request)
        response = page(200, "Sign out", f'<form method="post" action="/saml2/logout">{csrf_field(csrf)}'
                                         "<p><button>Sign out</button></p></form>", raw=True)
        keep_csrf(response, csrf)
        return response

    async def logout(self, request: web.Request) -> web.Response:
        """The user's own sign-out: only from our page (another site's form
        would sign them out against their will)."""
        form = await request.post()
        if not csrf_checked(request, form):
            return page(403, "Sign-out refused", "Open the sign-out page again and sign out from there.")
        response = page(200, "Signed out", "You are signed out of the sign-in service. Applications you opened "
                                           "keep you signed in until they next check with it: sign out of them too.")
        session = await self.session_ticket(request)
        if session is not None:
            await self.end_session(request, session, {"via": "sign-out page"})
            end_cookie(response)
        return response

    async def serve_metadata(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metadata.at(protocol.now()), content_type="application/samlmetadata+xml")

    # -- back channel ------------------------------------------------------------

    async def artifact_resolve(self, request: web.Request) -> web.Response:
        certificate = peer_certificate(request.transport)
        peer = spki_sha256(certificate.public_key()) if certificate is not None else None
        body = await request.read()  # past SOAP_LIMIT: 413, before any SOAP
        try:
            answer, outcome = await self.resolver.resolve(body, peer)
        except XmlError as e:
            log.info("ArtifactResolve from %s refused: %s", request.remote, e)
            code = e.code if isinstance(e, protocol.SoapError) else "Client"
            return soap_fault(code, f"ArtifactResolve refused: {e}")
        except Exception:  # the store or a bug: the requester learns nothing of it
            log.exception("ArtifactResolve from %s failed", request.remote)
            return soap_fault("Server", "the ArtifactResolve could not be answered now; try again later")
        log.info("ArtifactResolve from %s: %s", request.remote, outcome)
        return web.Response(body=answer, content_type="text/xml", headers={"Cache-Control": "no-store"})


def soap_fault(code: str, reason: str) -> web.Response:
    """SOAP 1.1 §6.2: a fault goes out with HTTP 500."""
    return web.Response(status=500, body=protocol.soap_fault(code, reason), content_type="text/xml",
                        headers={"Cache-Control": "no-store"})


def csrf_token(request: web.Request) -> str:
    """The double-submit token for a form: the browser's, or a new one."""
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)


def csrf_field(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{html.escape(token)}">'


def keep_csrf(response: web.Response, token: str) -> None:
    response.set_cookie(CSRF_COOKIE, token, path="/", secure=True, httponly=True, samesite="Strict")


def csrf_checked(request: web.Request, form) -> bool:
    """Whether a posted form carries the browser's own token: it came from our page."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and same(str(form.get("csrf", "")), cookie)


def end_cookie(response: web.Response) -> None:
    """Drop the session cookie. aiohttp's del_cookie cannot say Secure, and
    browsers refuse a __Host- cookie without it, even an expired one."""
    response.set_cookie(SESSION_COOKIE, "", path="/", secure=True, httponly=True, samesite="Lax", max_age=0)


def device_of(certificate: x509.Certificate | None) -> str:
    """What an IdP session is bound to: the key of the client certificate the
    browser presented, or "" for none."""
    return spki_sha256(certificate.public_key()) if certificate is not None else ""


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
    providers, problems = read_providers(settings.providers_dir)
    for problem in problems:
        log.error("service provider skipped: %s", problem)
    metadata = SignedMetadata(settings, certificate, key)
    redis = Redis(unix_socket_path=settings.store_socket, username=settings.store_user,
                  password=read_secret(settings.store_password_file))
    database_tls = None if settings.db_host.startswith("/") else client_context(settings.ca_chain, crl=settings.crl)
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
