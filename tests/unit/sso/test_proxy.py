"""The SAML proxy and its client against a real IdP, Redis and PostgreSQL on
loopback: a C/S login with a password, a second application with the ticket
only, an application server introspecting the tokens, and every refusal."""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import IDP, PASSWORD, PROXY_APPS, PROXY_BASE, Pki, idp_settings
from dmzkit_remote_access.sso.idp import running as idp_running
from dmzkit_remote_access.config import ConfigError
from dmzkit_remote_access.sso.proxy import running as proxy_running, seal, unseal
from dmzkit_remote_access.sso.settings import ProxySettings
from dmzkit_remote_access.sso.store import Store, _digest

SRC = Path(__file__).resolve().parents[3] / "src"


def proxy_settings(pki: Pki, redis_socket: Path, idp) -> ProxySettings:
    for name in PROXY_APPS:
        (pki.where / f"app-{name}.secret").write_text(f"{name}-introspection-secret\n")
    return ProxySettings.from_dict({
        "base_url": PROXY_BASE, "listen": "127.0.0.1:0",
        "certificate": pki.path("localhost.pem"), "private_key": pki.path("localhost.key"),
        "ca_chain": pki.path("ca.pem"), "crl": pki.path("crl.pem"),
        "client_certificate": pki.path("proxy-client.pem"), "client_key": pki.path("proxy-client.key"),
        "signing_key": pki.path("proxy-signing.key"), "signing_certificate": pki.path("proxy-signing.pem"),
        "idp_entity_id": IDP, "idp_sso_url": idp.settings.sso_url, "idp_ars_url": idp.settings.ars_url,
        "idp_signing_certificate": pki.path("signing.pem"),
        "store_socket": str(redis_socket), "store_user": "default", "store_password_file": pki.path("store.secret"),
        "apps": [{"name": n, "entity_id": e, "secret_file": pki.path(f"app-{n}.secret")} for n, e in PROXY_APPS.items()],
    })


class Device:
    """A user's machine: its certificate, and HTTP calls to the proxy with it."""

    def __init__(self, pki: Pki, proxy, certificate: str | None) -> None:
        context = ssl.create_default_context(cafile=pki.path("ca.pem"))
        if certificate:
            context.load_cert_chain(pki.path(f"{certificate}.pem"), pki.path(f"{certificate}.key"))
        self.url = f"https://localhost:{proxy.address[1]}"
        self.context = context

    async def call(self, path: str, body: object, ticket: str | None = None) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {ticket}"} if ticket else {}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.context)) as session:
            async with session.post(self.url + path, json=body, headers=headers) as r:
                return r.status, await r.json()


async def introspect(proxy, pki: Pki, app: str, token: str, secret: str | None = None) -> tuple[int, dict]:
    """As the application's server asks (Dovecot's oauth2 passdb: POST, Basic)."""
    secret = secret or f"{app}-introspection-secret"
    context = ssl.create_default_context(cafile=pki.path("ca.pem"))
    credentials = base64.b64encode(f"{app}:{secret}".encode()).decode()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async with session.post(f"https://localhost:{proxy.address[1]}/v1/introspect", data={"token": token},
                                headers={"Authorization": f"Basic {credentials}"}) as r:
            return r.status, await r.json()


@pytest.fixture
def stack(pki: Pki, accounts: dict[str, str], redis_socket: Path, tmp_path: Path
          ) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
    """Run a coroutine with the IdP and the proxy in front of it."""
    def run(body: Callable[..., Awaitable[Any]]) -> Any:
        async def main() -> Any:
            async with idp_running(idp_settings(pki, accounts, redis_socket, tmp_path / "db.secret")) as idp:
                async with proxy_running(proxy_settings(pki, redis_socket, idp)) as proxy:
                    return await body(proxy)
        return asyncio.run(main())
    return run


def test_one_password_then_a_second_app_with_the_ticket_only(stack, pki) -> None:
    async def body(proxy):
        laptop = Device(pki, proxy, "alice-laptop")
        status, login = await laptop.call("/v1/login", {"app": "mail", "username": "alice", "password": PASSWORD})
        assert status == 200, login
        mail = [await introspect(proxy, pki, "mail", login["app_token"]) for _ in range(2)]
        status, sso = await laptop.call("/v1/sso", {"app": "chat"}, login["ticket"])
        assert status == 200, sso
        chat_as_mail = await introspect(proxy, pki, "mail", sso["app_token"])
        chat = await introspect(proxy, pki, "chat", sso["app_token"])
        return login, mail, sso, chat_as_mail, chat
    login, mail, sso, chat_as_mail, chat = stack(body)
    assert login["user"] == "alice" and login["ticket"] and login["app_token"] != login["ticket"]
    # An application token is good once, for its own application; shown to
    # another application's server, it is spent all the same.
    assert mail == [(200, {"active": True, "username": "alice"}), (200, {"active": False})]
    assert sso["user"] == "alice"
    assert chat_as_mail == (200, {"active": False}) and chat == (200, {"active": False})


def test_the_ticket_is_worth_nothing_on_another_device_or_after_logout(stack, pki) -> None:
    async def body(proxy):
        laptop, other = Device(pki, proxy, "alice-laptop"), Device(pki, proxy, "bob")
        _, login = await laptop.call("/v1/login", {"app": "mail", "username": "alice", "password": PASSWORD})
        stolen = await other.call("/v1/sso", {"app": "mail"}, login["ticket"])
        still = await laptop.call("/v1/sso", {"app": "mail"}, login["ticket"])
        out = await laptop.call("/v1/logout", {}, login["ticket"])
        after = await laptop.call("/v1/sso", {"app": "mail"}, login["ticket"])
        return stolen, still[0], out[0], after
    stolen, still, out, after = stack(body)
    assert stolen[0] == 401 and "ticket" in stolen[1]["error"]
    assert still == 200 and out == 200 and after[0] == 401


def test_logout_ends_the_idp_session_behind_the_ticket(stack, pki) -> None:
    """The proxy signs in at the IdP as a browser would, with a session of
    its own there: logging out ends that session too, not the ticket only."""
    async def body(proxy):
        laptop = Device(pki, proxy, "alice-laptop")
        _, login = await laptop.call("/v1/login", {"app": "mail", "username": "alice", "password": PASSWORD})
        idp_session = unseal(login["ticket"], await proxy.store.get_value("idp-session", login["ticket"]))
        idp_store = Store(proxy.store.redis)  # the IdP's keys, as the IdP reads them
        before = await idp_store.ticket(idp_session)
        out = await laptop.call("/v1/logout", {}, login["ticket"])
        return before, out, await idp_store.ticket(idp_session)
    before, (status, out), after = stack(body)
    assert before is not None and before.user == "alice"
    assert status == 200 and out == {"user": "alice"}
    assert after is None


def test_a_logout_the_idp_does_not_confirm_is_reported(pki, accounts, redis_socket, tmp_path) -> None:
    async def main():
        async with idp_running(idp_settings(pki, accounts, redis_socket, tmp_path / "db.secret")) as idp:
            # The proxy signs out as its first application: registered without an slo_url, the
            # IdP shows a page instead of a LogoutResponse the proxy could check.
            first = PROXY_APPS["mail"]
            idp.providers[first] = dataclasses.replace(idp.providers[first], slo_url=None)
            async with proxy_running(proxy_settings(pki, redis_socket, idp)) as proxy:
                laptop = Device(pki, proxy, "alice-laptop")
                _, login = await laptop.call("/v1/login", {"app": "mail", "username": "alice", "password": PASSWORD})
                out = await laptop.call("/v1/logout", {}, login["ticket"])
                return out, await laptop.call("/v1/sso", {"app": "mail"}, login["ticket"])
    (status, out), (after, _) = asyncio.run(main())
    assert status == 502 and out["error"] == "signed out here; the IdP could not end its session"
    assert after == 401


def test_a_ticket_tried_on_another_device_is_not_kept_alive(stack, pki) -> None:
    async def body(proxy):
        laptop, other = Device(pki, proxy, "alice-laptop"), Device(pki, proxy, "bob")
        _, login = await laptop.call("/v1/login", {"app": "mail", "username": "alice", "password": PASSWORD})
        key = proxy.store._key("ticket", _digest(login["ticket"]))
        await proxy.store.redis.expire(key, 30)  # as if it had been idle for hours
        stolen = await other.call("/v1/sso", {"app": "mail"}, login["ticket"])
        after_stolen = await proxy.store.redis.ttl(key)
        still = await laptop.call("/v1/sso", {"app": "mail"}, login["ticket"])
        return stolen[0], after_stolen, still[0], await proxy.store.redis.ttl(key)
    stolen, after_stolen, still, after_owner = stack(body)
    assert stolen == 401 and 0 < after_stolen <= 30
    assert still == 200 and after_owner > 30  # the owner's use renews it to ticket_idle


def test_what_the_proxy_refuses(stack, pki) -> None:
    async def body(proxy):
        laptop, anonymous = Device(pki, proxy, "alice-laptop"), Device(pki, proxy, None)
        wrong = await laptop.call("/v1/login", {"app": "mail", "username": "alice", "password": "not it at all"})
        no_device = await anonymous.call("/v1/login", {"app": "mail", "username": "alice", "password": PASSWORD})
        unknown = await laptop.call("/v1/login", {"app": "nope", "username": "alice", "password": PASSWORD})
        not_json = await laptop.call("/v1/login", ["app"])
        forged = await laptop.call("/v1/sso", {"app": "mail"}, "forged-ticket")
        not_ascii = await laptop.call("/v1/sso", {"app": "mail"}, "\u00e9")
        _, login = await laptop.call("/v1/login", {"app": "mail", "username": "alice", "password": PASSWORD})
        bad_secret = await introspect(proxy, pki, "mail", login["app_token"], secret="guess")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=laptop.context)) as session:
            async with session.post(f"{laptop.url}/v1/introspect", data={"token": login["app_token"]},
                                    headers={"Authorization": "Basic %%%"}) as r:
                garbled = r.status
            not_ascii_secret = base64.b64encode("mail:\u00e9".encode()).decode()
            async with session.post(f"{laptop.url}/v1/introspect", data={"token": login["app_token"]},
                                    headers={"Authorization": f"Basic {not_ascii_secret}"}) as r:
                wrong_text = r.status
            async with session.post(f"{laptop.url}/v1/introspect", data={"token": login["app_token"]},
                                    headers={"Authorization": "Basic \u00e9"}) as r:
                not_base64 = r.status
        return [wrong[0], no_device[0], unknown[0], not_json[0], forged[0], not_ascii[0], bad_secret[0], garbled,
                wrong_text, not_base64]
    assert stack(body) == [401, 401, 404, 400, 401, 401, 401, 401, 401, 401]


def test_the_client_keeps_the_ticket_in_a_private_file(stack, pki, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "XDG_CONFIG_HOME": str(home), "PYTHONPATH": str(SRC)}
    device = ["--cert", pki.path("alice-laptop.pem"), "--key", pki.path("alice-laptop.key"), "--ca", pki.path("ca.pem")]

    def client(*args: str, password: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dmzkit_remote_access.sso.client", *args], input=password,
                              capture_output=True, text=True, env=env, timeout=60, check=False)

    async def body(proxy):
        url = f"https://localhost:{proxy.address[1]}"
        runs = [await asyncio.to_thread(client, "login", "--proxy", url, "--app", "mail", "--user", "alice", *device,
                                        password=PASSWORD + "\n")]
        runs.append(await asyncio.to_thread(client, "token", "--app", "chat"))
        tokens = [await introspect(proxy, pki, app, run.stdout.strip()) for app, run in zip(("mail", "chat"), runs)]
        mode = (home / "dmzkit-sso" / "credentials.json").stat().st_mode & 0o777
        runs.append(await asyncio.to_thread(client, "logout"))
        runs.append(await asyncio.to_thread(client, "token", "--app", "mail"))
        return runs, tokens, mode
    runs, tokens, mode = stack(body)
    assert [r.returncode for r in runs] == [0, 0, 0, 1], [r.stderr for r in runs]
    assert tokens == [(200, {"active": True, "username": "alice"})] * 2
    assert mode == 0o600
    assert "not signed in" in runs[3].stderr
    assert not (home / "dmzkit-sso" / "credentials.json").exists()


def test_a_sealed_idp_session_opens_with_its_ticket_only() -> None:
    sealed = seal("ticket-one", "idp-session-cookie")
    assert "idp-session-cookie" not in sealed
    assert unseal("ticket-one", sealed) == "idp-session-cookie"
    assert unseal("ticket-two", sealed) is None


@pytest.mark.parametrize("change, why", [
    ({"apps": []}, "at least one application"),
    ({"apps": [{"name": "Mail!", "entity_id": "e", "secret_file": "/x"}]}, "lower-case"),
    ({"apps": [{"name": "mail", "entity_id": "e", "secret_file": "/x"}] * 2}, "unique"),
    ({"apps": [{"name": "mail"}]}, "missing settings: entity_id"),
    ({"base_url": "http://proxy.test"}, "https://"),
    ({"ticket_idle": 90000.0}, "at most ticket_absolute"),
    ({"app_token_ttl": 3600}, "10-300"),
    ({"listen": "0.0.0.0"}, "address:port"),
])
def test_bad_proxy_settings_are_refused(change: dict, why: str) -> None:
    raw = {name: "/x" for name in ("certificate", "private_key", "ca_chain", "crl", "client_certificate",
                                   "client_key", "signing_key", "signing_certificate", "idp_signing_certificate",
                                   "store_socket", "store_password_file")}
    raw |= {"base_url": "https://proxy.test", "listen": "0.0.0.0:9443", "idp_entity_id": IDP,
            "idp_sso_url": "https://idp.test/saml2/sso", "idp_ars_url": "https://idp.test:8443/saml2/ars",
            "store_user": "sso-proxy", "apps": [{"name": "mail", "entity_id": "e", "secret_file": "/x"}]}
    ProxySettings.from_dict(raw)
    with pytest.raises(ConfigError, match=why):
        ProxySettings.from_dict(raw | change)
