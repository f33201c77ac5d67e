"""The B/S application as a SAML SP of the real IdP, both on loopback with
real TLS, Redis and PostgreSQL: a browser without the app's session goes
to the IdP, signs in, comes back with an artifact the app resolves over
mutual TLS, and is then who the IdP said; and what must be refused is."""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
import ssl
import time
import urllib.parse
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from yarl import URL

import local_servers
from conftest import BS_APP, PASSWORD, Pki, add_user, free_port
from dmzkit_remote_access.bs_app import app as bs_app
from dmzkit_remote_access.bs_app.__main__ import main
from dmzkit_remote_access.bs_app.app import running
from dmzkit_remote_access.bs_app.settings import Settings
from dmzkit_remote_access.config import ConfigError
from dmzkit_remote_access.sso.idp import IdentityProvider

# How the app's browsers name it (the portal, in the lab); the test maps it
# to the app's loopback address, as the portal does.
APP_BASE = "https://app.test"
HIDDEN = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)"')


def app_settings(pki: Pki, idp: IdentityProvider, tmp_path: Path) -> Settings:
    (tmp_path / "session.key").write_text("ab" * 32 + "\n")
    return Settings.from_dict({
        "listen_address": "127.0.0.1", "port": free_port(),
        "certificate": pki.path("localhost.pem"), "private_key": pki.path("localhost.key"),
        "ca_chain": pki.path("ca.pem"), "crl": pki.path("crl.pem"),
        "trusted_portals": ["portal"], "allowed_sources": ["127.0.0.1/32"],
        "identity_header": "X-Dmzkit-User", "title": "Intranet",
        "sso": {
            "entity_id": BS_APP, "base_url": APP_BASE,
            "idp_entity_id": idp.settings.entity_id, "idp_sso_url": idp.settings.sso_url,
            "idp_ars_url": idp.settings.ars_url, "idp_signing_certificate": pki.path("signing.pem"),
            "signing_key": pki.path("sp-signing.key"),
            "client_certificate": pki.path("sp-client.pem"), "client_key": pki.path("sp-client.key"),
            "session_key_file": str(tmp_path / "session.key"),
        },
    })


class Browser:
    """A user agent behind the gateway: alice's device certificate on every
    TLS connection, one cookie jar, redirects followed by hand."""

    def __init__(self, pki: Pki, app_port: int) -> None:
        context = ssl.create_default_context(cafile=pki.path("ca.pem"))
        context.load_cert_chain(pki.path("alice.pem"), pki.path("alice.key"))
        self.app = f"https://localhost:{app_port}"
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context),
                                             cookie_jar=aiohttp.CookieJar(unsafe=True))

    def where(self, url: str) -> str:
        return url.replace(APP_BASE, self.app, 1) if url.startswith(APP_BASE) else url

    async def get(self, url: str) -> tuple[int, str, str]:
        target = URL(self.where(url if "://" in url else self.app + url), encoded=True)
        async with self.session.get(target, allow_redirects=False) as r:
            return r.status, await r.text(), r.headers.get("Location", "")

    async def post(self, url: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
        async with self.session.post(self.where(url if "://" in url else self.app + url), data=form or {},
                                     allow_redirects=False) as r:
            return r.status, await r.text(), r.headers.get("Location", "")

    async def sign_in(self, password: str = PASSWORD, user: str = "alice") -> tuple[int, str, str]:
        """Open the app, sign in at the IdP; the IdP's answer (to the ACS)."""
        status, _, to_idp = await self.get("/whoami")
        assert status == 303 and to_idp.startswith("https://localhost:"), (status, to_idp)
        status, form, _ = await self.get(to_idp)
        assert status == 200
        fields = {name: value.replace("&amp;", "&") for name, value in HIDDEN.findall(form)}
        login = urllib.parse.urljoin(to_idp, "/saml2/login")
        return await self.post(login, fields | {"username": user, "password": password, "method": "password"})

    async def open_app(self, user: str = "alice") -> None:
        """Signed in to the app: at the IdP, then through the ACS."""
        status, _, to_acs = await self.sign_in(user=user)
        assert status == 303, to_acs
        assert (await self.get(to_acs))[0] == 303

    async def whoami(self) -> str | None:
        """Who the app says is signed in, following it to the IdP and back when
        the IdP answers at once; None when the IdP wants a sign-in."""
        status, answer, to_idp = await self.get("/whoami")
        if status == 303:
            status, answer, to_acs = await self.get(to_idp)
            if status != 303:
                assert status == 200 and "Sign in" in answer
                return None
            assert (await self.get(to_acs))[0] == 303
            status, answer, _ = await self.get("/whoami")
        assert status == 200, answer
        return json.loads(answer)["user"]

    async def close(self) -> None:
        await self.session.close()


def with_app(idp_run, pki: Pki, tmp_path: Path, body):
    async def main(idp: IdentityProvider):
        async with running(app_settings(pki, idp, tmp_path)) as (_, port):
            browser = Browser(pki, port)
            try:
                return await body(browser)
            finally:
                await browser.close()
    return idp_run(main)


def test_single_sign_on_opens_the_app_as_the_idps_user(idp_run, pki, tmp_path) -> None:
    async def body(browser: Browser):
        status, _, to_acs = await browser.sign_in()
        assert status == 303 and to_acs.startswith(f"{APP_BASE}/saml2/acs?SAMLart=")
        status, _, back = await browser.get(to_acs)
        assert (status, back) == (303, "/whoami")
        whoami = await browser.get("/whoami")
        page = await browser.get("/")
        return whoami, page

    (status, whoami, _), (page_status, page, _) = with_app(idp_run, pki, tmp_path, body)
    assert status == 200 and whoami.strip() == '{"user": "alice", "via": "saml"}'
    assert page_status == 200 and '<strong id="user">alice</strong> (identified by single sign-on)' in page


def test_an_artifact_opens_one_session_only(idp_run, pki, tmp_path) -> None:
    async def body(browser: Browser):
        _, _, to_acs = await browser.sign_in()
        first = await browser.get(to_acs)
        # The same answer again: the sign-in cookie is spent, and so is the artifact.
        again = await browser.get(to_acs)
        return first[0], again[0]

    assert with_app(idp_run, pki, tmp_path, body) == (303, 400)


def test_a_spent_artifact_is_refused_by_the_idp(idp_run, pki, tmp_path) -> None:
    async def body(browser: Browser):
        _, _, to_acs = await browser.sign_in()
        pending = [c for c in browser.session.cookie_jar if c.key == "dmzkit_bs_sign_in"][0].value
        await browser.get(to_acs)
        # Replayed with the sign-in cookie it came with: the IdP has nothing for it.
        browser.session.cookie_jar.update_cookies({"dmzkit_bs_sign_in": pending}, URL(browser.app))
        return await browser.get(to_acs)

    status, page, _ = with_app(idp_run, pki, tmp_path, body)
    assert status == 403 and "not accepted" in page


@pytest.mark.parametrize("tamper", ["no sign-in", "another relay state", "a relay state not in ASCII", "no artifact"])
def test_an_answer_this_browser_did_not_ask_for_is_refused(idp_run, pki, tmp_path, tamper) -> None:
    async def body(browser: Browser):
        _, _, to_acs = await browser.sign_in()
        if tamper == "no sign-in":
            browser.session.cookie_jar.clear()
        elif tamper == "another relay state":
            to_acs = re.sub(r"RelayState=[^&]+", "RelayState=someone-elses", to_acs)
        elif tamper == "a relay state not in ASCII":
            to_acs = re.sub(r"RelayState=[^&]+", "RelayState=%C3%A9", to_acs)
        else:
            to_acs = re.sub(r"SAMLart=[^&]+&", "", to_acs)
        refused = await browser.get(to_acs)
        return refused, await browser.get("/whoami")

    (status, _, _), (after, _, location) = with_app(idp_run, pki, tmp_path, body)
    assert status == 400
    # Still nobody: the app sends the browser to sign in.
    assert after == 303 and location.startswith("https://localhost:")


# Not base64, too short, and a well-formed artifact of another issuer.
@pytest.mark.parametrize("artifact", ["%00", "AAQAAA", urllib.parse.quote(base64.b64encode(b"\x00\x04" + bytes(42)))])
def test_what_is_not_an_artifact_of_our_idp_never_reaches_it(idp_run, pki, tmp_path, artifact) -> None:
    async def body(browser: Browser):
        _, _, to_acs = await browser.sign_in()
        return await browser.get(re.sub(r"SAMLart=[^&]+", f"SAMLart={artifact}", to_acs))

    status, page, _ = with_app(idp_run, pki, tmp_path, body)
    assert status == 403 and "not accepted" in page


def test_a_forged_session_cookie_is_nobody(idp_run, pki, tmp_path) -> None:
    async def body(browser: Browser):
        browser.session.cookie_jar.update_cookies({"dmzkit_bs_session": "AAAA" * 20}, URL(browser.app))
        return await browser.get("/whoami")

    status, _, location = with_app(idp_run, pki, tmp_path, body)
    assert status == 303 and "SAMLRequest=" in location


def test_the_app_session_ends_with_the_idps(idp_run, pki, tmp_path) -> None:
    """SessionNotOnOrAfter (here 2 s) bounds the app's own session (hours)."""
    async def main(idp: IdentityProvider):
        idp.settings = dataclasses.replace(idp.settings, session_idle=2.0)
        async with running(app_settings(pki, idp, tmp_path)) as (_, port):
            browser = Browser(pki, port)
            try:
                _, _, to_acs = await browser.sign_in()
                await browser.get(to_acs)
                during = await browser.get("/whoami")
                await asyncio.sleep(2.5)
                return during, await browser.get("/whoami")
            finally:
                await browser.close()
    (status, whoami, _), (after, _, location) = idp_run(main)
    assert status == 200 and '"alice"' in whoami
    assert after == 303 and "SAMLRequest=" in location


def test_bad_sso_settings_are_refused_by_the_check(tmp_path, pki, capsys) -> None:
    settings = {
        "listen_address": "127.0.0.1", "port": 8443,
        "certificate": pki.path("localhost.pem"), "private_key": pki.path("localhost.key"),
        "ca_chain": pki.path("ca.pem"), "crl": pki.path("crl.pem"),
        "trusted_portals": [], "allowed_sources": ["127.0.0.1/32"], "identity_header": "X-Dmzkit-User",
        "title": "t",
        "sso": {"entity_id": BS_APP, "base_url": "http://app.test", "idp_entity_id": "x",
                "idp_sso_url": "https://i/saml2/sso", "idp_ars_url": "https://i/saml2/ars",
                "idp_signing_certificate": "x", "signing_key": "x", "client_certificate": "x", "client_key": "x",
                "session_key_file": "x"},
    }
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    assert main(["--check", "--config", str(path)]) == 2
    assert "base_url must be an https:// URL" in capsys.readouterr().err


class Clock:
    """time as the app sees it, `ahead` seconds in the future (monotonic untouched)."""

    monotonic = staticmethod(time.monotonic)

    def __init__(self) -> None:
        self.ahead = 0.0

    def time(self) -> float:
        return time.time() + self.ahead


async def set_enabled(userdb: dict[str, str], name: str, enabled: bool) -> None:
    conn = await asyncpg.connect(host=userdb["host"], user="postgres", database="dmzkit")
    try:
        await conn.execute("UPDATE dmzkit.users SET enabled = $2 WHERE username = $1", name, enabled)
    finally:
        await conn.close()


def test_a_disabled_user_loses_the_app_within_its_session_seconds(
        idp_run, pki, tmp_path, accounts, monkeypatch) -> None:
    """The sealed cookie cannot be revoked, so it is short: past
    session_seconds the app asks the IdP again, which answers at once for a
    live session and not at all for a disabled user or an ended session."""
    user, bound = "erin", 300  # the default bound, as docs/sso.md states it
    add_user(accounts, user, PASSWORD)
    clock = Clock()
    monkeypatch.setattr(bs_app, "time", clock)

    async def body(browser: Browser):
        await browser.open_app(user)
        sealed = [c for c in browser.session.cookie_jar if c.key == "dmzkit_bs_session"][0].value
        clock.ahead = bound - 5
        within = await browser.get("/whoami")
        clock.ahead = bound + 1
        # Asked again past the bound: the IdP session is live, no password.
        again = await browser.whoami()
        await set_enabled(accounts, user, False)
        clock.ahead = 2 * bound + 2
        return sealed, within, again, await browser.whoami()

    try:
        sealed, (status, within, _), again, disabled = with_app(idp_run, pki, tmp_path, body)
    finally:
        local_servers.remove_user(accounts, user)
    assert status == 200 and json.loads(within)["user"] == user
    assert again == user and disabled is None
    session = json.loads(bs_app.Sealer(bytes.fromhex("ab" * 32)).unseal(sealed, bs_app.SESSION))
    assert session["until"] - time.time() <= bound, session


def test_signing_out_of_the_app_ends_its_session_and_the_idps(idp_run, pki, tmp_path) -> None:
    async def body(browser: Browser):
        await browser.open_app()
        status, _, to_idp = await browser.post("/logout")
        assert status == 303, to_idp
        app_after = await browser.get("/whoami")
        status, _, to_app = await browser.get(to_idp)
        assert status == 303, to_app
        return to_idp, app_after, to_app, await browser.get(to_app), await browser.whoami()

    to_idp, (app_after, _, _), to_app, (status, page, _), whoami = with_app(idp_run, pki, tmp_path, body)
    assert "/saml2/slo?SAMLRequest=" in to_idp and app_after == 303
    assert to_app.startswith(f"{APP_BASE}/saml2/slo?SAMLResponse=")
    assert status == 200 and "Signed out" in page
    # The IdP session is over too: the app's next visit there needs a sign-in.
    assert whoami is None


def test_a_sign_out_without_the_apps_session_changes_nothing(idp_run, pki, tmp_path) -> None:
    """A form on another site can post here, but SameSite=Lax keeps the
    session cookie from coming with it: nothing is signed out."""
    async def body(browser: Browser):
        await browser.open_app()
        cookies = browser.session.cookie_jar
        session = [c for c in cookies if c.key == "dmzkit_bs_session"][0].value
        cookies.clear()
        async with browser.session.post(browser.app + "/logout", allow_redirects=False) as r:
            answer = r.status, r.headers.get("Location"), r.headers.get("Set-Cookie")
        cookies.update_cookies({"dmzkit_bs_session": session}, URL(browser.app))
        return answer, await browser.get("/whoami")

    (status, location, set_cookie), (after, _, _) = with_app(idp_run, pki, tmp_path, body)
    assert status == 200 and location is None and set_cookie is None
    assert after == 200


@pytest.mark.parametrize("tamper", ["no sign-out", "unsigned", "another request"])
def test_a_sign_out_answer_the_app_cannot_check_is_not_taken_for_one(idp_run, pki, tmp_path, tamper) -> None:
    async def body(browser: Browser):
        await browser.open_app()
        _, _, to_idp = await browser.post("/logout")
        _, _, to_app = await browser.get(to_idp)
        if tamper == "no sign-out":
            browser.session.cookie_jar.clear()
        elif tamper == "unsigned":
            to_app = re.sub(r"&SigAlg=.*", "", to_app)
        else:  # the answer to another sign-out of this browser
            await browser.open_app()
            await browser.post("/logout")
        return await browser.get(to_app)

    status, page, _ = with_app(idp_run, pki, tmp_path, body)
    assert status == (400 if tamper == "no sign-out" else 502) and "Signed out</h1>" not in page


@pytest.mark.parametrize("seconds", [8 * 3600, 10])
def test_an_app_session_the_idp_cannot_end_in_time_is_refused(tmp_path, pki, seconds) -> None:
    settings = {
        "listen_address": "127.0.0.1", "port": 8443,
        "certificate": "x", "private_key": "x", "ca_chain": "x", "crl": "x",
        "trusted_portals": [], "allowed_sources": ["127.0.0.1/32"], "identity_header": "X-Dmzkit-User", "title": "t",
        "sso": {"entity_id": BS_APP, "base_url": "https://app.test", "idp_entity_id": "x",
                "idp_sso_url": "https://i/saml2/sso", "idp_ars_url": "https://i/saml2/ars",
                "idp_signing_certificate": "x", "signing_key": "x", "client_certificate": "x", "client_key": "x",
                "session_key_file": "x", "session_seconds": seconds},
    }
    with pytest.raises(ConfigError, match="session_seconds must be 30-3600"):
        Settings.from_dict(settings)
