"""The SAML proxy for C/S applications (seed 003): it signs users in at the
IdP on their behalf and turns SAML into what a C/S application accepts.

API (JSON over TLS; `login`, `sso` and `logout` need the user's device
certificate, which the SSO ticket is bound to):

- `POST /v1/login {app, username, password}`: the proxy, as the SP of
  `app`, sends an AuthnRequest to the IdP, signs in with the password on
  the IdP's own form, resolves the artifact over mutual TLS, validates the
  assertion, and answers `{ticket, user, expires, app_token}`. The ticket
  is bound to the key of the device certificate the request came with.
- `POST /v1/sso {app}` with `Authorization: Bearer <ticket>`, from the same
  device: the IdP session the login opened gives a *fresh* artifact for
  `app`, resolved and validated the same way; answers `{user, app_token}`.
- `POST /v1/logout` with the ticket: the ticket is gone, and so is its IdP
  session (a signed LogoutRequest on the IdP's front channel, the IdP's
  signed LogoutResponse checked).
- `POST /v1/introspect` (an application server, HTTP Basic with the app's
  secret; RFC 7662 form `token=`): `{active, username}`, once per token.
  Dovecot's `oauth2` passdb asks here.

Nothing the user's machine keeps is a SAML artifact or assertion: only the
ticket, useless without the device key. The proxy keeps the IdP session
cookie in Redis encrypted with a key derived from the ticket, so Redis
alone can open no session.
"""
from __future__ import annotations

import base64
import html
import json
import logging
import re
import secrets
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from redis.asyncio import Redis
from yarl import URL

from ..config import read_secret
from ..constant_time import same
from ..sealing import Sealer
from ..tls import client_context, peer_certificate, server_context, spki_sha256
from ..web import start_site
from . import assertion, xmldsig
from .idp import SESSION_COOKIE
from .settings import ProxyApp, ProxySettings, load_certificate, load_signing_pair
from .sp import ArtifactConsumer, IdpFailed, Partner, Relying
from .store import Store

log = logging.getLogger("dmzkit.sso.proxy")

API_LIMIT = 4 * 1024
HIDDEN_FIELD = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)"')
SEAL_INFO = b"dmzkit sso proxy: IdP session"


class SignInRefused(Exception):
    """The IdP would not sign the user in (wrong password, locked, session over)."""


def _sealer(ticket: str) -> Sealer:
    return Sealer(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=SEAL_INFO).derive(ticket.encode()))


def seal(ticket: str, value: str) -> str:
    return _sealer(ticket).seal(value.encode(), SEAL_INFO)


def unseal(ticket: str, sealed: str) -> str | None:
    value = _sealer(ticket).unseal(sealed, SEAL_INFO)
    return value.decode() if value is not None else None


class Proxy:
    def __init__(self, settings: ProxySettings, key: xmldsig.PrivateKey, idp_keys: list[xmldsig.PublicKey],
                 store: Store, front: aiohttp.TCPConnector, back: aiohttp.ClientSession,
                 app_secrets: dict[str, str]) -> None:
        self.settings = settings
        self.store = store
        self.front = front
        self.app_secrets = app_secrets
        idp = Partner(settings.idp_entity_id, settings.idp_sso_url, settings.idp_ars_url, tuple(idp_keys))
        self.consumer = ArtifactConsumer(idp, key, back,
                                         lambda assertion_id, seconds: store.first_use("assertion", assertion_id, seconds))
        self.apps = {app.name: app for app in settings.apps}
        self.address: tuple[str, int] | None = None

    def application(self) -> web.Application:
        app = web.Application(client_max_size=API_LIMIT)
        app.router.add_post("/v1/login", self.login)
        app.router.add_post("/v1/sso", self.sso)
        app.router.add_post("/v1/logout", self.logout)
        app.router.add_post("/v1/introspect", self.introspect)
        return app

    # -- SAML, as the SP of each application ---------------------------------------

    def browser(self, idp_session: str | None) -> aiohttp.ClientSession:
        """A browser of the IdP's front channel, holding the IdP session if there is one."""
        jar = aiohttp.CookieJar(unsafe=True)
        if idp_session:
            jar.update_cookies({SESSION_COOKIE: idp_session}, URL(self.settings.idp_sso_url))
        return aiohttp.ClientSession(connector=self.front, connector_owner=False, cookie_jar=jar)

    async def sign_in(self, app: ProxyApp, idp_session: str | None, username: str = "", password: str = ""
                      ) -> tuple[assertion.Login, str]:
        """Through the IdP's front channel: an AuthnRequest for `app`, the
        login form if there is no live IdP session, then the artifact. Returns
        the validated login and the IdP session cookie."""
        sp = Relying(app.entity_id, self.settings.acs_url(app))
        location, request_id = self.consumer.request(sp)
        async with self.browser(idp_session) as browser:
            async with browser.get(URL(location, encoded=True), allow_redirects=False) as r:
                status, page, answer = r.status, await r.text(), r.headers.get("Location", "")
            if status != 303:
                if not password:
                    raise SignInRefused("the IdP session is over")
                if status != 200:
                    raise IdpFailed(f"the IdP answered {status} to the AuthnRequest")
                form = {name: html.unescape(value) for name, value in HIDDEN_FIELD.findall(page)}
                form |= {"username": username, "password": password, "method": "password"}
                login_url = urllib.parse.urljoin(self.settings.idp_sso_url, "/saml2/login")
                async with browser.post(login_url, data=form, allow_redirects=False) as r:
                    status, answer = r.status, r.headers.get("Location", "")
                if status == 401:
                    raise SignInRefused("wrong user name or password, or the account is locked")
                if status != 303:
                    raise IdpFailed(f"the IdP answered {status} to the login")
            cookies = browser.cookie_jar.filter_cookies(URL(self.settings.idp_sso_url))
            session = cookies[SESSION_COOKIE].value if SESSION_COOKIE in cookies else idp_session or ""
        target = urllib.parse.urlsplit(answer)
        if urllib.parse.urlunsplit(target._replace(query="")) != sp.acs_url:
            raise IdpFailed("the IdP sent the artifact somewhere else")
        artifacts = urllib.parse.parse_qs(target.query).get("SAMLart", [])
        if len(artifacts) != 1:
            raise IdpFailed("no artifact in the IdP's answer")
        return await self.consumer.resolve(sp, artifacts[0], request_id), session

    async def sign_out(self, user: str, idp_session: str) -> None:
        """End `user`'s IdP session through the IdP's single logout, as the SP
        of the first application: every one of them is the proxy, with one
        key, and the IdP ends the session of the user named, whoever asks."""
        app = self.settings.apps[0]
        location, request_id = self.consumer.logout(Relying(app.entity_id, self.settings.acs_url(app)), user)
        try:
            async with self.browser(idp_session) as browser:
                async with browser.get(URL(location, encoded=True), allow_redirects=False) as r:
                    status, answer = r.status, r.headers.get("Location", "")
        except (aiohttp.ClientError, OSError) as e:
            raise IdpFailed(f"the IdP's front channel failed: {e}") from None
        if status != 303:
            raise IdpFailed(f"the IdP answered {status} to the LogoutRequest")
        target = urllib.parse.urlsplit(answer)
        if urllib.parse.urlunsplit(target._replace(query="")) != self.settings.slo_url(app):
            raise IdpFailed("the IdP sent its LogoutResponse somewhere else")
        self.consumer.logged_out(target.query, self.settings.slo_url(app), request_id)

    async def app_token(self, app: ProxyApp, user: str) -> str:
        token = secrets.token_urlsafe(32)
        await self.store.put_value("app-token", token, json.dumps({"app": app.name, "user": user}),
                                   self.settings.app_token_ttl, once=True)
        return token

    # -- API ---------------------------------------------------------------------

    async def _request(self, request: web.Request) -> tuple[dict, str]:
        """The JSON body and the SPKI fingerprint of the device certificate."""
        certificate = peer_certificate(request.transport)
        if certificate is None:
            raise web.HTTPUnauthorized(text=json.dumps({"error": "a device certificate is required"}),
                                       content_type="application/json")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text=json.dumps({"error": "a JSON object is expected"}),
                                     content_type="application/json")
        return body, spki_sha256(certificate.public_key())

    def _app(self, body: dict) -> ProxyApp:
        app = self.apps.get(str(body.get("app", "")))
        if app is None:
            raise web.HTTPNotFound(text=json.dumps({"error": "no such application"}), content_type="application/json")
        return app

    async def login(self, request: web.Request) -> web.Response:
        body, device = await self._request(request)
        app = self._app(body)
        username, password = str(body.get("username", ""))[:64], str(body.get("password", ""))[:1024]
        if not username or not password:
            return answer(400, error="username and password are required")
        try:
            login, idp_session = await self.sign_in(app, None, username, password)
        except SignInRefused as e:
            log.info("login of %s for %s from %s refused: %s", username, app.name, request.remote, e)
            return answer(401, error="sign-in refused")
        except IdpFailed as e:
            log.warning("login of %s for %s: %s", username, app.name, e)
            return answer(502, error="the IdP could not be used")
        ticket = await self.store.issue_ticket(login.user, device, self.settings.ticket_idle,
                                               self.settings.ticket_absolute)
        await self.store.put_value("idp-session", ticket, seal(ticket, idp_session), self.settings.ticket_absolute)
        log.info("%s signed in for %s from %s", login.user, app.name, request.remote)
        return answer(200, ticket=ticket, user=login.user, expires=int(self.settings.ticket_absolute),
                      app_token=await self.app_token(app, login.user))

    async def _ticket(self, request: web.Request, device: str):
        scheme, _, ticket = request.headers.get("Authorization", "").partition(" ")
        record = await self.store.ticket(ticket) if scheme == "Bearer" else None
        if record is None:
            return ticket, None
        # Checked before renewal: a stolen ticket tried elsewhere must not keep it alive.
        if not same(device, record.device):
            log.warning("ticket of %s presented with another device certificate from %s", record.user, request.remote)
            return ticket, None
        await self.store.renew_ticket(ticket, record, self.settings.ticket_idle)
        return ticket, record

    async def sso(self, request: web.Request) -> web.Response:
        body, device = await self._request(request)
        app = self._app(body)
        ticket, record = await self._ticket(request, device)
        sealed = await self.store.get_value("idp-session", ticket) if record else None
        idp_session = unseal(ticket, sealed) if sealed else None
        if record is None or idp_session is None:
            return answer(401, error="no valid ticket for this device")
        try:
            login, _ = await self.sign_in(app, idp_session)
        except SignInRefused:
            await self.store.revoke_ticket(ticket)
            return answer(401, error="the single sign-on session is over")
        except IdpFailed as e:
            log.warning("sso of %s for %s: %s", record.user, app.name, e)
            return answer(502, error="the IdP could not be used")
        if login.user != record.user:
            log.error("the IdP session of %s's ticket names %s", record.user, login.user)
            return answer(401, error="no valid ticket for this device")
        log.info("%s signed in to %s with the ticket from %s", login.user, app.name, request.remote)
        return answer(200, user=login.user, app_token=await self.app_token(app, login.user))

    async def logout(self, request: web.Request) -> web.Response:
        _, device = await self._request(request)
        ticket, record = await self._ticket(request, device)
        if record is None:
            return answer(401, error="no valid ticket for this device")
        await self.store.revoke_ticket(ticket)
        sealed = await self.store.take_value("idp-session", ticket)
        idp_session = unseal(ticket, sealed) if sealed else None
        # The IdP session would outlive the ticket (the IdP's idle time),
        # good for anyone who got its cookie.
        if idp_session is not None:
            try:
                await self.sign_out(record.user, idp_session)
            except IdpFailed as e:
                log.warning("%s signed out, but the IdP session may live on: %s", record.user, e)
                return answer(502, error="signed out here; the IdP could not end its session")
        log.info("%s signed out", record.user)
        return answer(200, user=record.user)

    async def introspect(self, request: web.Request) -> web.Response:
        """RFC 7662 for the application servers: is this app token live, and whose."""
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        try:
            decoded = base64.b64decode(credentials, validate=True).decode() if scheme == "Basic" else ""
        except ValueError:  # binascii.Error, UnicodeDecodeError, or text that is not ASCII
            decoded = ""
        name, _, secret = decoded.partition(":")
        expected = self.app_secrets.get(name)
        if expected is None or not same(secret, expected):
            return answer(401, error="unknown application")
        form = await request.post()
        found = await self.store.take_value("app-token", str(form.get("token", "")))
        record = json.loads(found) if found else None
        if record is None or record["app"] != name:
            return answer(200, active=False)
        return answer(200, active=True, username=record["user"])


def answer(status: int, **fields: object) -> web.Response:
    return web.Response(status=status, text=json.dumps(fields), content_type="application/json",
                        headers={"Cache-Control": "no-store"})


@asynccontextmanager
async def running(settings: ProxySettings) -> AsyncIterator[Proxy]:
    key, _ = load_signing_pair(settings)
    idp_keys = [load_certificate(settings.idp_signing_certificate).public_key()]
    app_secrets = {app.name: read_secret(app.secret_file) for app in settings.apps}
    redis = Redis(unix_socket_path=settings.store_socket, username=settings.store_user,
                  password=read_secret(settings.store_password_file))
    front = aiohttp.TCPConnector(ssl=client_context(settings.ca_chain, crl=settings.crl))
    back = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
        ssl=client_context(settings.ca_chain, settings.client_certificate, settings.client_key, crl=settings.crl)))
    runner: web.AppRunner | None = None
    try:
        proxy = Proxy(settings, key, idp_keys, Store(redis, prefix="dmzkit:proxy:"), front, back, app_secrets)
        context = server_context(settings.certificate, settings.private_key, settings.ca_chain, settings.crl,
                                 ssl.CERT_OPTIONAL)
        runner = await start_site(proxy.application(), settings.listen, context)
        proxy.address = runner.addresses[0]
        yield proxy
    finally:
        if runner is not None:
            await runner.cleanup()
        await back.close()
        await front.close()
        await redis.close()
