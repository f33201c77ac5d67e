"""The IdP end to end, on loopback with real TLS, Redis and PostgreSQL: an SP
sends an AuthnRequest, the user signs in, the SP resolves the artifact over
mutual TLS and validates the assertion; and what must be refused is."""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import re
import shutil
import ssl
import urllib.parse
from collections.abc import Callable
from http.cookies import SimpleCookie

import aiohttp
import asyncpg
import pytest
from yarl import URL

from conftest import IDP, LOCKOUT, PASSWORD, Pki, idp_settings
from dmzkit_remote_access.bs_app.app import SIGN_IN_SECONDS
from dmzkit_remote_access.sso import assertion, protocol, xmldsig
from dmzkit_remote_access.sso.__main__ import main as sso_main
from dmzkit_remote_access.sso.idp import CSRF_COOKIE, SESSION_COOKIE, IdentityProvider, running
from dmzkit_remote_access.sso.metadata import SignedMetadata
from dmzkit_remote_access.sso.settings import load_signing_pair
from dmzkit_remote_access.sso.xml import NS, SOAP_LIMIT, parse

SP = "https://sp.test/sp"
ACS = "https://sp.test/acs"


class Browser:
    """A user agent with a cookie jar, optionally presenting a client certificate."""

    def __init__(self, idp: IdentityProvider, pki: Pki, certificate: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        context = ssl.create_default_context(cafile=pki.path("ca.pem"))
        if certificate:
            context.load_cert_chain(pki.path(f"{certificate}.pem"), pki.path(f"{certificate}.key"))
        self.base = f"https://localhost:{idp.addresses[0][1]}"
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context),
                                             cookie_jar=aiohttp.CookieJar(unsafe=True), headers=headers)

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

    async def post_ars(self, body: bytes) -> tuple[int, bytes, str]:
        """The status, body and Content-Type of the IdP's answer."""
        url = f"https://localhost:{self.idp.addresses[1][1]}/saml2/ars"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.context)) as session:
            async with session.post(url, data=body, headers={"Content-Type": "text/xml"}) as r:
                return r.status, await r.read(), r.headers.get("Content-Type", "")

    async def resolve(self, artifact: str, envelope: Callable[[bytes], bytes] = lambda soap: soap
                      ) -> assertion.Login | None:
        """The login behind `artifact`; `envelope` may change the SOAP message before it goes."""
        body, resolve_id = protocol.artifact_resolve(SP, self.idp.settings.ars_url, artifact, self.pki.sp_key)
        status, answer, _ = await self.post_ars(envelope(body))
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


async def sign_in(browser: Browser, sp: ServiceProvider, user: str, password: str, relay_state: str = "/inbox",
                  **attributes: str):
    status, page, headers = await browser.get(sp.login_path(relay_state, **attributes))
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


# The longest RelayState taken (1024 bytes), of what must be escaped on each way.
LONG_RELAY_STATE = "https://sp.test/r\u00e9turn?a=<'\">&b=%41+ #" * 26 + "x" * 10


def test_a_long_relay_state_comes_back_to_the_acs_as_sent(idp_run, pki) -> None:
    assert len(LONG_RELAY_STATE.encode()) == 1024

    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            status, _, headers = await sign_in(browser, sp, "alice", PASSWORD, relay_state=LONG_RELAY_STATE)
            assert status == 303, status
            artifact, relay = artifact_of(headers)
            return relay, await sp.resolve(artifact)
        finally:
            await browser.session.close()
    relay, login = idp_run(body)
    assert relay == LONG_RELAY_STATE and login.user == "alice"


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


@pytest.mark.parametrize("certificate", ["alice-desktop", "alice-device", "stranger"])
def test_only_a_persons_certificate_signs_in(idp_run, pki, certificate) -> None:
    """A desktop's certificate (its key on the DMZ's VNC host) or a device's
    carries alice's CN: neither is offered nor taken as alice's."""
    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki, certificate=certificate), ServiceProvider(idp, pki)
        try:
            _, page, _ = await browser.get(sp.login_path())
            status, refusal, headers = await certificate_sign_in(browser, sp)
            return "Continue as" in page, status, refusal, headers
        finally:
            await browser.session.close()
    offered, status, refusal, headers = idp_run(body)
    assert not offered
    assert status == 401 and "not one to sign in with" in refusal and "Location" not in headers


def session_cookie(browser: Browser) -> str:
    return browser.session.cookie_jar.filter_cookies(URL(browser.base + "/saml2/sso"))[SESSION_COOKIE].value


async def certificate_sign_in(browser: Browser, sp: ServiceProvider):
    _, page, _ = await browser.get(sp.login_path())
    fields = {k: v.replace("&amp;", "&") for k, v in form_fields(page).items()}
    return await browser.post("/saml2/login", {**fields, "method": "certificate"})


@pytest.mark.parametrize(("owner", "method", "thief"), [
    ("alice", "certificate", "bob"), ("alice", "certificate", None), ("alice", "password", None),
    (None, "password", "bob"),
])
def test_a_copied_session_cookie_does_not_work_from_another_device(idp_run, pki, owner, method, thief) -> None:
    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki, certificate=owner), ServiceProvider(idp, pki)
        elsewhere = Browser(idp, pki, certificate=thief)
        try:
            if method == "certificate":
                status, _, _ = await certificate_sign_in(browser, sp)
            else:
                status, _, _ = await sign_in(browser, sp, "alice", PASSWORD)
            assert status == 303
            elsewhere.session.cookie_jar.update_cookies({SESSION_COOKIE: session_cookie(browser)}, URL(browser.base))
            stolen = await elsewhere.get(sp.login_path())
            # The owner's session is not ended by someone else trying its cookie.
            return stolen[0], "Sign in" in stolen[1], (await browser.get(sp.login_path()))[0]
        finally:
            await browser.session.close()
            await elsewhere.session.close()
    assert idp_run(body) == (200, True, 303)


def authn_statement(login: tuple[int, str, dict[str, str]], sp: ServiceProvider):
    """What the SP learns of the sign-in behind the IdP's answer, and the AuthnStatement itself."""
    async def resolve():
        artifact = artifact_of(login[2])[0]
        body, resolve_id = protocol.artifact_resolve(SP, sp.idp.settings.ars_url, artifact, sp.pki.sp_key)
        _, answer, _ = await sp.post_ars(body)
        keys = [sp.idp.certificate.public_key()]
        message = protocol.read_artifact_response(answer, IDP, resolve_id, keys)
        statement = message.find("saml:Assertion/saml:AuthnStatement", NS)
        return assertion.validate(message, IDP, SP, ACS, sp.request_id, keys), statement
    return resolve()


def test_authn_instant_is_when_the_user_signed_in(idp_run, pki, monkeypatch) -> None:
    # Less than the IdP's idle time before its session's absolute end (24 h).
    later = protocol.now() + dt.timedelta(hours=23)

    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            first = await authn_statement(await sign_in(browser, sp, "alice", PASSWORD), sp)
            # 23 hours on, the same IdP session answers another AuthnRequest.
            monkeypatch.setattr(protocol, "now", lambda: later)
            monkeypatch.setattr(assertion, "now", lambda: later)
            second = await authn_statement(await browser.get(sp.login_path()), sp)
            return first, second, idp.settings.session_absolute
        finally:
            await browser.session.close()
    (first, first_statement), (second, second_statement), absolute = idp_run(body)
    signed_in = protocol.parse_instant(first_statement.get("AuthnInstant"), "AuthnInstant")
    assert abs(signed_in - later) > dt.timedelta(hours=22)
    assert second_statement.get("AuthnInstant") == first_statement.get("AuthnInstant")
    assert second.authn_instant == first.authn_instant == signed_in
    # The session ends when the IdP's does: at its absolute end, counted from
    # the sign-in, even if its idle time would reach further.
    assert second.session_not_on_or_after == signed_in + dt.timedelta(seconds=absolute)


def test_force_authn_asks_again(idp_run, pki) -> None:
    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki, certificate="alice"), ServiceProvider(idp, pki)
        try:
            await sign_in(browser, sp, "alice", PASSWORD)
            forced = await browser.get(sp.login_path(ForceAuthn="true"))
            status, _, headers = await sign_in(browser, sp, "alice", PASSWORD, ForceAuthn="true")
            return forced[0], "Sign in" in forced[1], status, await sp.resolve(artifact_of(headers)[0])
        finally:
            await browser.session.close()
    forced, form, status, login = idp_run(body)
    assert (forced, form, status) == (200, True, 303) and login.user == "alice"


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


@pytest.mark.parametrize(("trusted", "forwarded", "recorded"), [
    (["127.0.0.1"], "203.0.113.7", "203.0.113.7"),
    (["127.0.0.1"], "not an address", "127.0.0.1"),
    ([], "203.0.113.7", "127.0.0.1"),
], ids=["through-a-trusted-proxy", "garbage-from-the-proxy", "forged-by-anyone-else"])
def test_sign_ins_go_by_the_browsers_address_only_through_a_trusted_proxy(pki, accounts, redis_socket, tmp_path,
                                                                          trusted, forwarded, recorded) -> None:
    """The gateway's portal names the browser in X-Forwarded-For: the limits
    per source and the audit log go by it, and nobody else can choose it."""
    settings = dataclasses.replace(idp_settings(pki, accounts, redis_socket, tmp_path / "db.secret"),
                                   trusted_proxies=trusted)
    subject = f"nobody-{tmp_path.name}"[:64]

    async def body():
        async with running(settings) as idp:
            browser = Browser(idp, pki, headers={"X-Forwarded-For": forwarded})
            try:
                return (await sign_in(browser, ServiceProvider(idp, pki), subject, "a guess"))[0]
            finally:
                await browser.session.close()

    async def sources():
        conn = await asyncpg.connect(host=accounts["host"], user="postgres", database="dmzkit")
        try:
            return [r[0] for r in await conn.fetch("SELECT host(source) FROM dmzkit.audit_log WHERE subject = $1",
                                                   subject)]
        finally:
            await conn.close()
    assert asyncio.run(body()) == 401
    assert asyncio.run(sources()) == [recorded]


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
    (status, fault, _), first, replay = idp_run(body)
    # The wrong client certificate is refused with a SOAP fault, and burns nothing.
    refused = ("Client", "ArtifactResolve refused: the TLS client certificate is not the requester's")
    assert status == 500 and fault_of(fault) == refused
    assert first is not None and first.user == "alice"
    assert replay is None


def fault_of(answer: bytes) -> tuple[str, str]:
    """A SOAP 1.1 Fault's code (local name, in the envelope's namespace) and string."""
    fault = parse(answer, SOAP_LIMIT).find("soap:Body/soap:Fault", NS)
    assert fault is not None, answer[:300]
    code = fault.find("faultcode")
    prefix, _, local = code.text.partition(":")
    assert code.nsmap[prefix] == NS["soap"]
    return local, fault.findtext("faultstring")


def with_soap_header(entry: str) -> Callable[[bytes], bytes]:
    """Puts a Header holding `entry` (XML) in front of the Body."""
    return lambda soap: soap.replace(b"<soap:Body>", f"<soap:Header>{entry}</soap:Header><soap:Body>".encode(), 1)


def test_an_artifact_resolve_with_a_soap_header_is_answered(idp_run, pki) -> None:
    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            _, _, headers = await sign_in(browser, sp, "alice", PASSWORD)
            return await sp.resolve(artifact_of(headers)[0], with_soap_header(""))
        finally:
            await browser.session.close()
    login = idp_run(body)
    assert login is not None and login.user == "alice"


MUST_UNDERSTAND = f'<x:Tx xmlns:x="urn:example:tx" xmlns:soap="{NS["soap"]}" soap:mustUnderstand="1"/>'


@pytest.mark.parametrize(("case", "code", "says"), [
    ("not-soap", "Client", "not well-formed XML"),
    ("must-understand", "MustUnderstand", "header entry we must understand"),
    ("store-down", "Server", "could not be answered now"),
])
def test_a_refused_artifact_resolve_gets_a_soap_1_1_fault_with_http_500(
        idp_run, pki, case: str, code: str, says: str) -> None:
    secret_detail = "/run/dmzkit/secret-socket-path"

    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            _, _, headers = await sign_in(browser, sp, "alice", PASSWORD)
            request, _ = protocol.artifact_resolve(SP, idp.settings.ars_url, artifact_of(headers)[0], pki.sp_key)
            if case == "not-soap":
                request = b"<soap:Envelope"
            elif case == "must-understand":
                request = with_soap_header(MUST_UNDERSTAND)(request)
            else:
                async def down(*_):
                    raise ConnectionError(f"Error connecting to {secret_detail}")
                idp.resolver.store.first_use = down
            return await sp.post_ars(request)
        finally:
            await browser.session.close()
    status, answer, content_type = idp_run(body)
    # SOAP 1.1 §6.2: a fault goes out with 500; SAMLBind §3.2.3.3: text/xml.
    assert status == 500 and content_type == "text/xml"
    found, reason = fault_of(answer)
    assert found == code and says in reason, reason
    assert secret_detail not in reason and "Traceback" not in reason


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
    "SAMLRequest=" + "A" * 6000, "RelayState=" + "r" * 1025, "SAMLRequest=%FF", "SAMLRequest=%C3%A9",
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


def test_the_idps_cookies_are_host_cookies(idp_run, pki) -> None:
    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            _, _, form = await browser.get(sp.login_path())
            _, _, signed_in = await sign_in(browser, sp, "alice", PASSWORD)
            return form["Set-Cookie"], signed_in["Set-Cookie"]
        finally:
            await browser.session.close()
    names = []
    for header in idp_run(body):
        (name, morsel), = SimpleCookie(header).items()
        names.append(name)
        # RFC 6265bis §4.1.3.2: what a browser requires of a __Host- cookie.
        assert name.startswith("__Host-") and morsel["secure"] and morsel["path"] == "/" and not morsel["domain"]
        assert morsel["httponly"]
    assert names == [CSRF_COOKIE, SESSION_COOKIE]


def test_a_forged_csrf_cookie_cannot_write_into_the_form(idp_run, pki) -> None:
    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        forged = f'{CSRF_COOKIE}="\\"><img src=x onerror=alert(1)>"'
        try:
            async with browser.session.get(URL(browser.base + sp.login_path(), encoded=True),
                                           headers={"Cookie": forged}) as r:
                return r.status, await r.text()
        finally:
            await browser.session.close()
    status, page = idp_run(body)
    assert status == 200 and "<img" not in page and 'value="&quot;&gt;&lt;img src=x' in page


def test_a_login_form_lasts_as_long_as_the_sps_sign_in(idp_run, pki, monkeypatch) -> None:
    start = protocol.now()

    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            _, page, _ = await browser.get(sp.login_path())
            fields = {k: v.replace("&amp;", "&") for k, v in form_fields(page).items()}
            form = {**fields, "username": "alice", "password": PASSWORD, "method": "password"}
            posted = []
            # The user posts the form just before the SP stops waiting, then far too late.
            for seconds in (SIGN_IN_SECONDS - 5, SIGN_IN_SECONDS + 5 * 60):
                later = start + dt.timedelta(seconds=seconds)
                monkeypatch.setattr(protocol, "now", lambda: later)
                monkeypatch.setattr(assertion, "now", lambda: later)
                posted.append(await browser.post("/saml2/login", form))
            return posted[0][0], await sp.resolve(artifact_of(posted[0][2])[0]), posted[1][0]
        finally:
            await browser.session.close()
    in_time, login, too_late = idp_run(body)
    assert in_time == 303 and login.user == "alice" and too_late == 400


def test_a_broken_sp_registration_is_skipped_and_the_others_served(
        pki, accounts, redis_socket, tmp_path, caplog, capsys) -> None:
    providers = tmp_path / "providers"
    shutil.copytree(pki.path("providers"), providers)
    (providers / "a-broken.json").write_text("{ not json")
    (providers / "b-bad-certificate.json").write_text(json.dumps({
        "entity_id": "https://bad.test/sp", "acs_url": "https://bad.test/acs",
        "signing_certificates": ["not a certificate"], "tls_certificates": ["neither"]}))
    settings = dataclasses.replace(idp_settings(pki, accounts, redis_socket, tmp_path / "db.secret"),
                                   providers_dir=str(providers))

    async def body():
        async with running(settings) as idp:
            browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
            try:
                _, _, headers = await sign_in(browser, sp, "alice", PASSWORD)
                return set(idp.providers), await sp.resolve(artifact_of(headers)[0])
            finally:
                await browser.session.close()
    with caplog.at_level(logging.ERROR, logger="dmzkit"):
        registered, login = asyncio.run(body())
    assert SP in registered and "https://bad.test/sp" not in registered and login.user == "alice"
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 2 and "a-broken.json is not JSON" in skipped[0], skipped
    assert "b-bad-certificate.json: signing_certificates" in skipped[1], skipped
    # The check before a change still refuses it.
    (tmp_path / "idp.json").write_text(json.dumps(dataclasses.asdict(settings)))
    assert sso_main(["check-config", str(tmp_path / "idp.json")]) == 2
    assert "a-broken.json is not JSON" in capsys.readouterr().err


def test_metadata_is_signed_again_before_it_goes_stale(idp_run, pki, monkeypatch) -> None:
    async def body(idp: IdentityProvider):
        browser = Browser(idp, pki)
        try:
            later = protocol.now() + dt.timedelta(days=idp.settings.metadata_valid_days, hours=1)
            monkeypatch.setattr(protocol, "now", lambda: later)
            _, text, _ = await browser.get("/saml2/metadata")
            return text, later, idp.certificate.public_key()
        finally:
            await browser.session.close()
    text, later, key = idp_run(body)
    root = xmldsig.verify(parse(text.encode(), SOAP_LIMIT), [key])
    assert protocol.parse_instant(root.get("validUntil"), "validUntil") > later


def test_metadata_is_signed_again_once_half_its_validity_is_past(pki, accounts, redis_socket, tmp_path) -> None:
    settings = idp_settings(pki, accounts, redis_socket, tmp_path / "db.secret")
    key, certificate = load_signing_pair(settings)
    metadata = SignedMetadata(settings, certificate, key)
    start, valid = protocol.now(), dt.timedelta(days=settings.metadata_valid_days)

    def valid_until(document: bytes) -> dt.datetime:
        root = xmldsig.verify(parse(document, SOAP_LIMIT), [key.public_key()])
        return protocol.parse_instant(root.get("validUntil"), "validUntil")
    first = metadata.at(start)
    assert metadata.at(start + valid / 2 - dt.timedelta(seconds=1)) is first
    # Served at any moment of a month, it is good for half its validity at least.
    for hours in range(0, 31 * 24, 5):
        moment = start + dt.timedelta(hours=hours)
        assert valid_until(metadata.at(moment)) >= moment + valid / 2 - dt.timedelta(seconds=1)
