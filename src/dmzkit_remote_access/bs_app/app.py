"""A small B/S (browser/server) application for the internal network.

It answers only over mutual TLS with a certificate of the organisation's
CA, and only to connections from the gateway (the clientless portal, or a
user's tunnel, which the gateway masquerades). Who is at the other end
comes from the TLS layer, never from the client:

- when the TLS peer is one of the trusted portals, the portal has verified
  the user's certificate and put the user's name in the identity header
  (nginx always overwrites it);
- otherwise the peer is the user's own certificate, sent through the VPN
  tunnel, and any identity header is ignored.

With single sign-on configured the app is also a SAML SP (HTTP-Artifact
binding): the user is whoever the IdP says, and a browser without the
app's session is sent to the IdP first. `/saml2/acs` takes the artifact
back, resolves it over mutual TLS and opens the session: a sealed cookie,
bound to the sign-in the same browser started. Nothing can revoke such a
cookie, so it is short (session_seconds): then the app asks the IdP again,
which answers at once while its session lives and the user may sign in,
and asks for a sign-in otherwise. `POST /logout` ends the cookie and sends
the browser to the IdP's single logout; `/saml2/slo` takes its answer.

Routes: `GET /` (a page naming the user), `GET /whoami` (JSON); with single
sign-on `GET /saml2/acs`, `POST /logout`, `GET /saml2/slo`.
"""
from __future__ import annotations

import html
import ipaddress
import json
import logging
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from ..constant_time import same
from ..sealing import Sealer, load_key
from ..sso.settings import load_certificate, load_signing_key
from ..sso.sp import ArtifactConsumer, IdpFailed, Partner, Relying
from ..tls import client_context, common_name, host_name, peer_certificate, server_context
from ..web import start_site
from .settings import Settings, SingleSignOn

log = logging.getLogger("dmzkit.bs_app")

SESSION_COOKIE = "dmzkit_bs_session"
SIGN_IN_COOKIE = "dmzkit_bs_sign_in"
SIGN_OUT_COOKIE = "dmzkit_bs_sign_out"
# A sign-in (or a sign-out) must come back from the IdP within this time.
SIGN_IN_SECONDS = 600
# Assertion IDs remembered at most; past it, sign-ins are refused until
# some expire (the memory bound of the replay cache).
SEEN_LIMIT = 100_000
SESSION, SIGN_IN, SIGN_OUT = b"dmzkit bs_app: session", b"dmzkit bs_app: sign-in", b"dmzkit bs_app: sign-out"


@dataclass(frozen=True)
class Visitor:
    user: str
    via: str  # "portal" (its identity header), "certificate" (the client's own) or "saml"


class Refused(Exception):
    """The request did not come through the gateway with a verified user."""


def through_gateway(request: web.Request, settings: Settings) -> Visitor:
    """Who the gateway vouches for: the portal's header or the tunnel's certificate."""
    source = ipaddress.ip_address(request.remote or "0.0.0.0")
    if not any(source in network for network in settings.networks):
        raise Refused(f"requests from {source} do not come through the gateway")
    certificate = peer_certificate(request.transport)
    # The TLS layer requires a valid certificate; without one, refuse
    # rather than trust anything.
    if certificate is None or not common_name(certificate):
        raise Refused("no verified client certificate")
    # A portal is a host: its certificate has no OU, so a user or a desktop
    # whose CN happens to be a portal's name vouches for nobody.
    host = host_name(certificate)
    if host is None:
        return Visitor(common_name(certificate), "certificate")
    if host not in settings.trusted_portals:
        raise Refused(f"{host} is a host's certificate, which names no user")
    user = request.headers.get(settings.identity_header, "").strip()
    if not user:
        raise Refused(f"portal {host} sent no user")
    return Visitor(user, "portal")


class SeenIds:
    """Assertion IDs seen, each until its window ends; bounded in memory."""

    def __init__(self, limit: int = SEEN_LIMIT) -> None:
        self.limit = limit
        self.until: dict[str, float] = {}

    async def first_use(self, identifier: str, seconds: float) -> bool:
        now = time.monotonic()
        if len(self.until) >= self.limit:
            self.until = {k: v for k, v in self.until.items() if v > now}
        if self.until.get(identifier, 0.0) > now or len(self.until) >= self.limit:
            return False
        self.until[identifier] = now + seconds
        return True


class SignOn:
    """The app's SP side: sealed cookies for the session and the pending sign-in."""

    def __init__(self, settings: SingleSignOn, consumer: ArtifactConsumer, sealer: Sealer) -> None:
        self.settings = settings
        self.consumer = consumer
        self.sealer = sealer
        self.sp = Relying(settings.entity_id, settings.acs_url)

    def _open(self, request: web.Request, cookie: str, purpose: bytes, live: bool = True) -> dict | None:
        """What we sealed into `cookie`, if it is ours; with `live`, only until its time is up."""
        raw = request.cookies.get(cookie)
        value = self.sealer.unseal(raw, purpose) if raw else None
        record = json.loads(value) if value else None
        return record if record and (record["until"] > time.time() or not live) else None

    def _seal(self, purpose: bytes, seconds: float, **fields: str) -> str:
        return self.sealer.seal(json.dumps({**fields, "until": time.time() + seconds}).encode(), purpose)

    def user(self, request: web.Request) -> str | None:
        session = self._open(request, SESSION_COOKIE, SESSION)
        return session["user"] if session else None

    def to_idp(self, request: web.Request) -> web.Response:
        """Send the browser to the IdP; remember, in this browser only, what it asked for."""
        state = secrets.token_urlsafe(16)
        location, request_id = self.consumer.request(self.sp, state)
        response = web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})
        sealed = self._seal(SIGN_IN, SIGN_IN_SECONDS, request_id=request_id, state=state, path=request.path)
        # SameSite=Lax: the IdP's redirect back is a top-level GET.
        response.set_cookie(SIGN_IN_COOKIE, sealed, path="/saml2/acs", secure=True, httponly=True, samesite="Lax",
                            max_age=SIGN_IN_SECONDS)
        return response

    async def acs(self, request: web.Request) -> web.Response:
        pending = self._open(request, SIGN_IN_COOKIE, SIGN_IN)
        artifact = request.query.get("SAMLart", "")
        # The RelayState must be the one this browser's sign-in started with:
        # nobody can push their own login into another's browser.
        if pending is None or not artifact or not same(request.query.get("RelayState", ""), pending["state"]):
            return page(400, "Sign-in refused", "Open the application again.")
        try:
            login = await self.consumer.resolve(self.sp, artifact, pending["request_id"])
        except IdpFailed as e:
            log.warning("sign-in from %s refused: %s", request.remote, e)
            return page(403, "Sign-in refused", "The identity provider's answer was not accepted.")
        log.info("%s signed in from %s", login.user, request.remote)
        response = web.Response(status=303, headers={"Location": pending["path"], "Cache-Control": "no-store"})
        seconds = self.settings.session_seconds
        if login.session_not_on_or_after is not None:  # the IdP's session bounds ours (SAMLCore 2.7.2)
            seconds = min(seconds, login.session_not_on_or_after.timestamp() - time.time())
        response.set_cookie(SESSION_COOKIE, self._seal(SESSION, seconds, user=login.user),
                            path="/", secure=True, httponly=True, samesite="Lax")
        response.del_cookie(SIGN_IN_COOKIE, path="/saml2/acs")
        return response

    async def logout(self, request: web.Request) -> web.Response:
        """End the app's session, and send the browser to the IdP to end its own.
        Only with the session cookie, which SameSite=Lax keeps from another
        site's form: nobody else can sign the user out."""
        # Past its time too: a user idle for a while who signs out means the
        # IdP session, which lives longer.
        session = self._open(request, SESSION_COOKIE, SESSION, live=False)
        if session is None:
            return page(200, "Signed out", "<p>You are not signed in to this application.</p>")
        location, request_id = self.consumer.logout(self.sp, session["user"])
        log.info("%s signs out from %s", session["user"], request.remote)
        response = web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})
        response.del_cookie(SESSION_COOKIE, path="/")
        response.set_cookie(SIGN_OUT_COOKIE, self._seal(SIGN_OUT, SIGN_IN_SECONDS, request_id=request_id),
                            path="/saml2/slo", secure=True, httponly=True, samesite="Lax", max_age=SIGN_IN_SECONDS)
        return response

    async def logged_out(self, request: web.Request) -> web.Response:
        """The IdP's LogoutResponse: whether it ended its session too."""
        pending = self._open(request, SIGN_OUT_COOKIE, SIGN_OUT)
        if pending is None:
            return page(400, "Sign-out", "<p>No sign-out of this browser was waiting for this answer.</p>")
        try:
            self.consumer.logged_out(request.rel_url.raw_query_string, self.settings.slo_url, pending["request_id"])
        except IdpFailed as e:
            log.warning("sign-out from %s: %s", request.remote, e)
            response = page(502, "Signed out of the application",
                            "<p>The sign-in service did not confirm your sign-out there: sign out there too.</p>")
        else:
            response = page(200, "Signed out",
                            "<p>You are signed out of the application and of the sign-in service.</p>")
        response.del_cookie(SIGN_OUT_COOKIE, path="/saml2/slo")
        return response


def page(status: int, title: str, message: str) -> web.Response:
    return web.Response(
        status=status, content_type="text/html", charset="utf-8",
        text=f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title></head>"
             f"<body><h1>{html.escape(title)}</h1>{message}</body></html>\n",
        headers={"Cache-Control": "no-store"},
    )


def application(settings: Settings, sign_on: SignOn | None) -> web.Application:
    @web.middleware
    async def gateway_only(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        try:
            request["visitor"] = through_gateway(request, settings)
        except Refused as refusal:
            return web.Response(status=403, text=f"{refusal}\n")
        response = await handler(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    async def show(request: web.Request) -> web.Response:
        visitor: Visitor = request["visitor"]
        if sign_on is not None:
            user = sign_on.user(request)
            if user is None:
                return sign_on.to_idp(request)
            visitor = Visitor(user, "saml")
        if request.path == "/whoami":
            return web.json_response({"user": visitor.user, "via": visitor.via})
        how = {"portal": "the portal", "certificate": "your certificate", "saml": "single sign-on"}[visitor.via]
        sign_out = '<form method="post" action="/logout"><button>Sign out</button></form>' if sign_on else ""
        return page(200, settings.title,
                    f"<p>Signed in as <strong id=\"user\">{html.escape(visitor.user)}</strong>"
                    f" (identified by {how}).</p>{sign_out}")

    app = web.Application(middlewares=[gateway_only], client_max_size=16 * 1024)
    app.router.add_get("/", show)
    app.router.add_get("/whoami", show)
    if sign_on is not None:
        app.router.add_get("/saml2/acs", sign_on.acs)
        app.router.add_post("/logout", sign_on.logout)
        app.router.add_get("/saml2/slo", sign_on.logged_out)
    return app


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[str, int]]:
    """The app serving until the block ends; yields the address it listens on."""
    back: aiohttp.ClientSession | None = None
    sign_on = None
    if settings.sso is not None:
        sso = settings.sso
        idp = Partner(sso.idp_entity_id, sso.idp_sso_url, sso.idp_ars_url,
                      (load_certificate(sso.idp_signing_certificate).public_key(),))
        back = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            ssl=client_context(settings.ca_chain, sso.client_certificate, sso.client_key, crl=settings.crl)))
        sealer = Sealer(load_key(sso.session_key_file))
        sign_on = SignOn(sso, ArtifactConsumer(idp, load_signing_key(sso.signing_key), back, SeenIds().first_use),
                         sealer)
    try:
        context = server_context(settings.certificate, settings.private_key, settings.ca_chain, settings.crl,
                                 ssl.CERT_REQUIRED)
        runner = await start_site(application(settings, sign_on), f"{settings.listen_address}:{settings.port}",
                                  context)
        try:
            yield runner.addresses[0][:2]
        finally:
            await runner.cleanup()
    finally:
        if back is not None:
            await back.close()
