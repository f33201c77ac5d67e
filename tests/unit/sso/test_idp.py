"""The IdP end to end, on loopback with real TLS, Redis and PostgreSQL: an SP
sends an AuthnRequest, the user signs in, the SP resolves the artifact over
mutual TLS and validates the assertion; and what must be refused is."""
from __future__ import annotations

import asyncio
import logging
import re
import ssl
import urllib.parse

import aiohttp
import asyncpg
import pytest
from yarl import URL

from conftest import IDP, LOCKOUT, PASSWORD, Pki
from dmzkit_remote_access.sso import assertion, protocol, xmldsig
from dmzkit_remote_access.sso.idp import SESSION_COOKIE, IdentityProvider
from dmzkit_remote_access.sso.xml import NS, SOAP_LIMIT, parse

SP = "https://sp.test/sp"
ACS = "https://sp.test/acs"


class Browser:
    """A user agent with a cookie jar, optionally presenting a client certificate."""

    def __init__(self, idp: IdentityProvider, pki: Pki, certificate: str | None = None) -> None:
        context = ssl.create_default_context(cafile=pki.path("ca.pem"))
        if certificate:
            context.load_cert_chain(pki.path(f"{certificate}.pem"), pki.path(f"{certificate}.key"))
        self.base = f"https://localhost:{idp.addresses[0][1]}"
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context),
                                             cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, path: str) -> tuple[int, str, dict[str, str]]:
        # As a browser does, send the query as it is (yarl would re-quote it).
        async with self.session.get(URL(self.base + path, encoded=True), allow_redirects=False) as r:
            return r.status, await r.text(), dict(r.headers)

    async def post(self, path: str, form: dict[str, str]) -> tuple[int, str, dict[str, str]]:
        async with self.session.post(self.base + path, data=form, allow_redirects=False) as r:
            return r.status, await r.text(), dict(r.headers)


class ServiceProvider:
    """The SP's side: AuthnRequest out, artifact resolved over mutual TLS."""

    def __init__(self, idp: IdentityProvider, pki: Pki, client: str = "sp-client") -> None:
        self.idp, self.pki = idp, pki
        self.context = ssl.create_default_context(cafile=pki.path("ca.pem"))
        self.context.load_cert_chain(pki.path(f"{client}.pem"), pki.path(f"{client}.key"))
        self.request_id = ""

    def login_path(self, relay_state: str = "/inbox", **attributes: str) -> str:
        request, self.request_id = protocol.authn_request(SP, self.idp.settings.sso_url, ACS)
        for name, value in attributes.items():
            request.set(name, value)
        return "/saml2/sso?" + protocol.redirect_url("", request, relay_state, self.pki.sp_key).lstrip("?")

    async def post_ars(self, body: bytes) -> tuple[int, bytes]:
        url = f"https://localhost:{self.idp.addresses[1][1]}/saml2/ars"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.context)) as session:
            async with session.post(url, data=body, headers={"Content-Type": "text/xml"}) as r:
                return r.status, await r.read()

    async def resolve(self, artifact: str) -> assertion.Login | None:
        body, resolve_id = protocol.artifact_resolve(SP, self.idp.settings.ars_url, artifact, self.pki.sp_key)
        status, answer = await self.post_ars(body)
        assert status == 200, answer
        idp_keys = [self.idp.certificate.public_key()]
        message = protocol.read_artifact_response(answer, IDP, resolve_id, idp_keys)
        if message is None:
            return None
        return assertion.validate(message, IDP, SP, ACS, self.request_id, idp_keys)


def artifact_of(headers: dict[str, str]) -> tuple[str, str]:
    location = urllib.parse.urlsplit(headers["Location"])
    assert f"https://{location.netloc}{location.path}" == ACS
    query = dict(urllib.parse.parse_qsl(location.query))
    return query["SAMLart"], query.get("RelayState", "")


def form_fields(page: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page))


async def sign_in(browser: Browser, sp: ServiceProvider, user: str, password: str, **attributes: str):
    status, page, headers = await browser.get(sp.login_path(**attributes))
    assert status == 200 and "Sign in" in page
    # The form may post here, and the browser may follow the answer to the SP's ACS.
    assert headers["Content-Security-Policy"] == "default-src 'none'; form-action 'self' https://sp.test"
    fields = {k: v.replace("&amp;", "&") for k, v in form_fields(page).items()}
    return await browser.post("/saml2/login", {**fields, "username": user, "password": password,
                                               "method": "password"})


def test_a_password_login_ends_in_a_valid_assertion_at_the_sp(idp_run, pki) -> None:
    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            status, _, headers = await sign_in(browser, sp, "alice", PASSWORD)
            assert status == 303, headers
            artifact, relay = artifact_of(headers)
            cookies = browser.session.cookie_jar.filter_cookies(URL(browser.base + "/saml2/sso"))
            return await sp.resolve(artifact), relay, cookies
        finally:
            await browser.session.close()
    login, relay, cookies = idp_run(body)
    assert login.user == "alice" and relay == "/inbox"
    assert login.authn_context == assertion.PASSWORD
    assert login.attributes["groups"] == ["staff"] and login.attributes["mail"] == ["alice@unit.test"]
    assert SESSION_COOKIE in cookies


def test_a_second_sp_visit_needs_no_password_and_gets_a_fresh_artifact(idp_run, pki) -> None:
    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            _, _, first = await sign_in(browser, sp, "alice", PASSWORD)
            status, _, second = await browser.get(sp.login_path())
            assert status == 303
            return artifact_of(first)[0], artifact_of(second)[0], await sp.resolve(artifact_of(second)[0])
        finally:
            await browser.session.close()
    first, second, login = idp_run(body)
    assert first != second and login.user == "alice"


def test_a_certificate_login_names_the_certificates_user(idp_run, pki) -> None:
    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki, certificate="alice"), ServiceProvider(idp, pki)
        try:
            status, page, _ = await browser.get(sp.login_path())
            assert "Continue as alice" in page
            fields = {k: v.replace("&amp;", "&") for k, v in form_fields(page).items()}
            status, _, headers = await browser.post("/saml2/login", {**fields, "method": "certificate"})
            assert status == 303
            return await sp.resolve(artifact_of(headers)[0])
        finally:
            await browser.session.close()
    login = idp_run(body)
    assert login.user == "alice" and login.authn_context == "urn:oasis:names:tc:SAML:2.0:ac:classes:X509"


def test_wrong_passwords_lock_the_account_and_everything_is_audited(idp_run, pki, accounts) -> None:
    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            wrong = [(await sign_in(browser, sp, "mallory", "guess number %d" % i))[0] for i in range(LOCKOUT)]
            right = (await sign_in(browser, sp, "mallory", PASSWORD))[0]
            unknown = (await sign_in(browser, sp, "nobody", PASSWORD))[0]
            disabled = (await sign_in(browser, sp, "dora", PASSWORD))[0]
            return wrong, right, unknown, disabled
        finally:
            await browser.session.close()
    wrong, right, unknown, disabled = idp_run(body)
    assert wrong == [401] * LOCKOUT and right == 401 and unknown == 401 and disabled == 401

    async def audit():
        conn = await asyncpg.connect(host=accounts["host"], user="postgres", database="dmzkit")
        try:
            return [tuple(r) for r in await conn.fetch(
                "SELECT subject, outcome, detail->>'reason', actor FROM dmzkit.audit_log "
                "WHERE subject IN ('mallory', 'nobody', 'dora') ORDER BY id")]
        finally:
            await conn.close()
    records = asyncio.run(audit())
    assert records == ([("mallory", "failure", "wrong password", "sso_idp")] * LOCKOUT
                       + [("mallory", "failure", "locked", "sso_idp"),
                          ("nobody", "failure", "unknown or disabled user", "sso_idp"),
                          ("dora", "failure", "unknown or disabled user", "sso_idp")])


def test_an_artifact_resolves_once_and_only_for_its_sp_with_its_certificate(idp_run, pki) -> None:
    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            _, _, headers = await sign_in(browser, sp, "alice", PASSWORD)
            artifact = artifact_of(headers)[0]
            stranger = ServiceProvider(idp, pki, client="stranger")
            body_, _ = protocol.artifact_resolve(SP, idp.settings.ars_url, artifact, pki.sp_key)
            refused = await stranger.post_ars(body_)
            return refused, await sp.resolve(artifact), await sp.resolve(artifact)
        finally:
            await browser.session.close()
    (status, fault), first, replay = idp_run(body)
    # The wrong client certificate is refused with a SOAP fault, and burns nothing.
    assert status == 400 and b"soap:Client" in fault
    assert first is not None and first.user == "alice"
    assert replay is None


def test_the_back_channel_wants_a_client_certificate(idp_run, pki) -> None:
    async def body(idp: IdentityProvider):
        context = ssl.create_default_context(cafile=pki.path("ca.pem"))
        url = f"https://localhost:{idp.addresses[1][1]}/saml2/ars"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            try:
                async with session.post(url, data=b"<x/>") as r:
                    return r.status
            except (aiohttp.ClientError, ssl.SSLError) as e:
                return type(e).__name__
    outcome = idp_run(body)
    assert outcome != 200 and not isinstance(outcome, int), outcome


@pytest.mark.parametrize("query", [
    "", "SAMLRequest=", "SAMLRequest=%%%", "SAMLRequest=AAAA", "SAMLRequest=x&SAMLRequest=y",
    "SAMLRequest=" + "A" * 6000, "RelayState=" + "r" * 100, "SAMLRequest=%FF", "SAMLRequest=%C3%A9",
])
def test_broken_requests_get_a_4xx_page(idp_run, pki, query: str) -> None:
    async def body(idp: IdentityProvider):
        browser = Browser(idp, pki)
        try:
            return await browser.get("/saml2/sso?" + query)
        finally:
            await browser.session.close()
    status, page, headers = idp_run(body)
    assert 400 <= status < 500 and "<h1>" in page
    assert headers["X-Frame-Options"] == "DENY"


def test_requests_the_idp_will_not_serve(idp_run, pki) -> None:
    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            other_acs = await browser.get(sp.login_path(AssertionConsumerServiceURL="https://evil.test/acs"))
            passive = await browser.get(sp.login_path(IsPassive="true"))
            status, page, _ = await browser.get(sp.login_path())
            fields = form_fields(page)
            no_csrf = await browser.post("/saml2/login", {"request": fields["request"], "username": "alice",
                                                          "password": PASSWORD, "csrf": "forged"})
            not_ascii_csrf = await browser.post("/saml2/login", {"request": fields["request"], "username": "alice",
                                                                 "password": PASSWORD, "csrf": "\u00e9"})
            huge = await browser.post("/saml2/login", {"request": "x" * (SOAP_LIMIT * 2)})
            not_ascii_signature = await browser.get(re.sub(r"Signature=[^&]+", "Signature=%C3%A9", sp.login_path()))
            return other_acs[0], passive[0], no_csrf[0], not_ascii_csrf[0], huge[0], not_ascii_signature[0]
        finally:
            await browser.session.close()
    assert idp_run(body) == (400, 403, 403, 403, 413, 400)


def test_a_signature_algorithm_cannot_write_lines_into_the_log(idp_run, pki, caplog) -> None:
    forged = "SigAlg=" + urllib.parse.quote("sha1\nINFO alice signed in", safe="")

    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            return await browser.get(re.sub(r"SigAlg=[^&]+", forged, sp.login_path()))
        finally:
            await browser.session.close()
    with caplog.at_level(logging.INFO, logger="dmzkit"):
        status, _, _ = idp_run(body)
    assert status == 400
    refusal = [r.getMessage() for r in caplog.records if "is not allowed" in r.getMessage()]
    assert refusal and all("\n" not in line for line in refusal), refusal


def test_metadata_is_signed_and_names_the_endpoints(idp_run, pki) -> None:
    async def body(idp: IdentityProvider):
        browser = Browser(idp, pki)
        try:
            return await browser.get("/saml2/metadata"), idp.certificate.public_key(), idp.settings.ars_url
        finally:
            await browser.session.close()
    (status, text, _), key, ars_url = idp_run(body)
    assert status == 200
    root = xmldsig.verify(parse(text.encode(), SOAP_LIMIT), [key])
    descriptor = root.find(f"{{{NS['md']}}}IDPSSODescriptor")
    ars = descriptor.find(f"{{{NS['md']}}}ArtifactResolutionService")
    assert root.get("entityID") == IDP
    assert ars.get("Location") == ars_url and ars_url.endswith("/saml2/ars") and ars.get("index") == "0"
