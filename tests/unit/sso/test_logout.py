"""Signing out at the IdP, on loopback with real TLS, Redis and PostgreSQL:
a LogoutRequest from a registered SP (SAML 2.0 single logout, HTTP-Redirect
binding), the user's own sign-out on the IdP's page, and what neither may do."""
from __future__ import annotations

import dataclasses
import datetime as dt
from http.cookies import SimpleCookie

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from yarl import URL

import local_servers
from conftest import IDP, PASSWORD, add_user
from dmzkit_remote_access.sso import protocol, xmldsig
from dmzkit_remote_access.sso.idp import SESSION_COOKIE, IdentityProvider
from dmzkit_remote_access.sso.xml import NS, SOAP_LIMIT, parse
from test_idp import SP, Browser, ServiceProvider, form_fields, session_cookie, sign_in

SLO = "https://sp.test/slo"
STRANGER = ec.generate_private_key(ec.SECP256R1())


def logout_path(idp: IdentityProvider, key: xmldsig.PrivateKey | None, name_id: str = "alice",
                relay_state: str | None = "/signed-out", **attributes: str) -> tuple[str, str]:
    """A LogoutRequest from the SP, built by hand (SAMLCore §3.7.1), sent the
    Redirect way; and its ID."""
    element, request_id = protocol.new_message("LogoutRequest", SP, Destination=f"{idp.settings.base_url}/saml2/slo")
    for name, value in attributes.items():
        element.set(name, value)
    protocol.node("saml", "NameID", element).text = name_id
    return "/saml2/slo?" + protocol.redirect_url("", element, relay_state, key).lstrip("?"), request_id


def cookie_set(headers: dict[str, str], name: str = SESSION_COOKIE):
    return SimpleCookie(headers.get("Set-Cookie", "")).get(name)


def cleared(headers: dict[str, str]) -> bool:
    """The session cookie is dropped the way a browser takes it for a __Host- one."""
    morsel = cookie_set(headers)
    return (morsel is not None and morsel.value == "" and morsel["max-age"] == "0" and bool(morsel["secure"])
            and morsel["path"] == "/")


async def live(browser: Browser, sp: ServiceProvider) -> bool:
    """Whether the browser's IdP session still answers an AuthnRequest at once."""
    return (await browser.get(sp.login_path()))[0] == 303


def test_a_signed_logout_request_ends_the_session_and_answers_the_sp(idp_run, pki) -> None:
    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            await sign_in(browser, sp, "alice", PASSWORD)
            cookie = session_cookie(browser)
            path, request_id = logout_path(idp, pki.sp_key)
            answer = await browser.get(path)
            # The old cookie, put back, opens nothing: the ticket is gone from Redis.
            browser.session.cookie_jar.update_cookies({SESSION_COOKIE: cookie}, URL(browser.base))
            return (answer, request_id, await live(browser, sp), await idp.store.ticket(cookie),
                    idp.certificate.public_key())
        finally:
            await browser.session.close()
    (status, _, headers), request_id, still_live, ticket, key = idp_run(body)
    assert status == 303, headers
    assert cleared(headers) and not still_live and ticket is None
    location = URL(headers["Location"], encoded=True)
    assert str(location.with_query(None)) == SLO
    element, relay_state, signed = protocol.read_redirect(
        location.raw_query_string, lambda issuer: [key] if issuer == IDP else [], "SAMLResponse")
    assert signed and relay_state == "/signed-out"
    assert protocol.read_logout_response(element, IDP, SLO, request_id) == (protocol.SUCCESS,)


def test_without_a_registered_slo_url_the_idp_says_so_itself(idp_run, pki) -> None:
    async def body(idp: IdentityProvider):
        idp.providers[SP] = dataclasses.replace(idp.providers[SP], slo_url=None)
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            await sign_in(browser, sp, "alice", PASSWORD)
            answer = await browser.get(logout_path(idp, pki.sp_key)[0])
            return answer, await live(browser, sp)
        finally:
            await browser.session.close()
    (status, page, headers), still_live = idp_run(body)
    assert status == 200 and "Signed out" in page and "Location" not in headers
    assert cleared(headers) and not still_live


@pytest.mark.parametrize("how", ["unsigned", "another key", "stale", "another destination", "for an hour ago",
                                 "replayed"])
def test_a_logout_request_that_is_not_the_sps_own_ends_nothing(idp_run, pki, how) -> None:
    """Unsigned ones are refused (SAMLProf §4.4.4.1 wants the requester
    authenticated): any page could otherwise sign users out with an image."""
    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            await sign_in(browser, sp, "alice", PASSWORD)
            key = {"unsigned": None, "another key": STRANGER}.get(how, pki.sp_key)
            attributes = {}
            if how == "stale":
                attributes["IssueInstant"] = protocol.instant(protocol.now() - dt.timedelta(minutes=10))
            if how == "for an hour ago":
                attributes["NotOnOrAfter"] = protocol.instant(protocol.now() - dt.timedelta(hours=1))
            if how == "another destination":
                attributes["Destination"] = "https://elsewhere.test/saml2/slo"
            path, _ = logout_path(idp, key, **attributes)
            if how == "replayed":
                # Used once by a session since ended and opened again: the same URL again ends nothing.
                await browser.get(path)
                await sign_in(browser, sp, "alice", PASSWORD)
            refused = await browser.get(path)
            return refused, await live(browser, sp)
        finally:
            await browser.session.close()
    (status, page, headers), still_live = idp_run(body)
    assert status == 400 and "<h1>" in page and cookie_set(headers) is None
    assert still_live


def test_a_logout_request_for_another_user_leaves_the_session(idp_run, pki) -> None:
    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            await sign_in(browser, sp, "alice", PASSWORD)
            path, request_id = logout_path(idp, pki.sp_key, name_id="mallory")
            answer = await browser.get(path)
            return answer, request_id, await live(browser, sp), idp.certificate.public_key()
        finally:
            await browser.session.close()
    (status, _, headers), request_id, still_live, key = idp_run(body)
    assert status == 303 and cookie_set(headers) is None and still_live
    location = URL(headers["Location"], encoded=True)
    element, _, _ = protocol.read_redirect(location.raw_query_string, lambda issuer: [key], "SAMLResponse")
    status = protocol.read_logout_response(element, IDP, SLO, request_id)
    assert status == (protocol.REQUESTER, protocol.UNKNOWN_PRINCIPAL)


def test_the_user_signs_out_on_the_idps_page(idp_run, pki) -> None:
    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            await sign_in(browser, sp, "alice", PASSWORD)
            status, page, _ = await browser.get("/saml2/logout")
            assert status == 200, page
            forged = await browser.post("/saml2/logout", {"csrf": "forged"})
            after_forged = await live(browser, sp)
            signed_out = await browser.post("/saml2/logout", form_fields(page))
            return forged[0], after_forged, signed_out, await live(browser, sp)
        finally:
            await browser.session.close()
    forged, after_forged, (status, page, headers), still_live = idp_run(body)
    assert forged == 403 and after_forged
    assert status == 200 and "Signed out" in page and cleared(headers) and not still_live


def test_the_idp_session_cookie_lives_no_longer_than_the_browser(idp_run, pki) -> None:
    """Redis decides how long a session lives (idle, absolute); the cookie
    carries no lifetime of its own that could outlast a sign-out."""
    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            return (await sign_in(browser, sp, "alice", PASSWORD))[2]
        finally:
            await browser.session.close()
    morsel = cookie_set(idp_run(body))
    assert morsel is not None and morsel.value
    assert not morsel["max-age"] and not morsel["expires"]


def test_metadata_names_the_single_logout_service(idp_run, pki) -> None:
    async def body(idp: IdentityProvider):
        browser = Browser(idp, pki)
        try:
            return (await browser.get("/saml2/metadata"))[1], idp.settings.base_url
        finally:
            await browser.session.close()
    text, base_url = idp_run(body)
    descriptor = parse(text.encode(), SOAP_LIMIT).find("md:IDPSSODescriptor", NS)
    services = descriptor.findall("md:SingleLogoutService", NS)
    assert [(s.get("Binding"), s.get("Location")) for s in services] == [
        (protocol.REDIRECT_BINDING, f"{base_url}/saml2/slo")]


def test_a_disabled_users_session_ends_for_good(idp_run, pki, accounts) -> None:
    """Refused while disabled, and gone: enabled again, the user signs in again."""
    user = "frank"
    add_user(accounts, user, PASSWORD)

    async def enabled(value: bool) -> None:
        conn = await asyncpg.connect(host=accounts["host"], user="postgres", database="dmzkit")
        try:
            await conn.execute("UPDATE dmzkit.users SET enabled = $2 WHERE username = $1", user, value)
        finally:
            await conn.close()

    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            await sign_in(browser, sp, user, PASSWORD)
            cookie = session_cookie(browser)
            await enabled(False)
            while_disabled = await live(browser, sp)
            await enabled(True)
            return while_disabled, await live(browser, sp), await idp.store.ticket(cookie)
        finally:
            await browser.session.close()
    try:
        while_disabled, after, ticket = idp_run(body)
    finally:
        local_servers.remove_user(accounts, user)
    assert not while_disabled
    assert not after and ticket is None
