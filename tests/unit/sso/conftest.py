"""Fixtures of the SSO tests: real servers, gone when the test session ends
(Redis for the store, PostgreSQL for the user database, local_servers.py),
a throw-away PKI, and the IdP on loopback."""
from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from redis.asyncio import Redis

import local_servers
from testpki import NOW, make_ca, make_crl, make_leaf, pem, write_key

from ansible_collections.dmzkit.remote_access.plugins.modules.userdb_user import hasher
from dmzkit_remote_access.sso import xmldsig
from dmzkit_remote_access.sso.idp import IdentityProvider, running
from dmzkit_remote_access.sso.settings import Settings
from dmzkit_remote_access.sso.store import Store

T = TypeVar("T")


@pytest.fixture(scope="session")
def redis_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if not local_servers.have_redis():
        pytest.skip("redis-server (Debian package) is not installed")
    with local_servers.redis_server(tmp_path_factory.mktemp("redis")) as path:
        yield path


@pytest.fixture
def with_store(redis_socket: Path, request: pytest.FixtureRequest) -> Callable[[Callable[[Store], Awaitable[T]]], T]:
    """Run a coroutine against a Store on a key prefix of this test's own."""
    def run(body: Callable[[Store], Awaitable[T]]) -> T:
        async def main() -> T:
            redis = Redis(unix_socket_path=str(redis_socket))
            try:
                return await body(Store(redis, prefix=f"test:{request.node.name}:"))
            finally:
                await redis.close()
        return asyncio.run(main())
    return run


# -- PostgreSQL ------------------------------------------------------------------


def add_user(userdb: dict[str, str], name: str, password: str, groups: tuple[str, ...] = (),
             enabled: bool = True) -> None:
    """Add a user with a hash as the module userdb_user makes it."""
    local_servers.add_user(userdb, name, hasher().hash(password), groups, enabled)


# -- an IdP on loopback ----------------------------------------------------------

IDP = "https://idp.test/saml2"
PASSWORD = "correct horse battery staple"
LOCKOUT = 3
# The C/S applications the proxy tests sign in to, as SPs served by the proxy.
PROXY_APPS = {"mail": "https://mail.test/sp", "chat": "https://chat.test/sp"}
PROXY_BASE = "https://localhost:9443"
# The B/S application, an SP with the browser SP's keys.
BS_APP = "https://app.test/intranet"


@dataclass(frozen=True)
class Pki:
    where: Path
    sp_key: xmldsig.PrivateKey

    def path(self, name: str) -> str:
        return str(self.where / name)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The CA and its CRL; the IdP's TLS and signing keys; a browser SP's
    registration (signing key, TLS client certificate); the proxy's, for
    each of its applications; a stranger's and users' client certificates."""
    where = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = make_ca("unit ca")
    (where / "ca.pem").write_bytes(pem(ca_cert))
    (where / "crl.pem").write_bytes(pem(make_crl(ca_key, ca_cert, NOW, NOW.replace(year=NOW.year + 1), serials=())))
    keys = {}
    # People's certificates carry their group as OU, as the ca role issues
    # them; a desktop's and a device's carry alice's CN but are not hers.
    people = {"alice": "staff", "alice-laptop": "staff", "bob": "contractors", "alice-desktop": "desktops on vnc1"}
    for name, server in (("localhost", True), ("signing", False), ("sp-signing", False), ("sp-client", False),
                         ("proxy-signing", False), ("proxy-client", False), ("stranger", False), ("alice", False),
                         ("alice-laptop", False), ("bob", False), ("alice-desktop", False), ("alice-device", False)):
        keys[name], cert = make_leaf(ca_key, ca_cert, name, server=server, unit=people.get(name),
                                     common_name="alice" if name in ("alice-desktop", "alice-device") else None)
        write_key(where / f"{name}.key", keys[name])
        (where / f"{name}.pem").write_bytes(pem(cert))
    providers = where / "providers"
    providers.mkdir()
    registrations = {"sp": ("https://sp.test/sp", "https://sp.test/acs", "https://sp.test/slo", "sp"),
                     "bs-app": (BS_APP, "https://app.test/saml2/acs", "https://app.test/saml2/slo", "sp")} | {
        f"proxy-{name}": (entity, f"{PROXY_BASE}/v1/acs/{name}", f"{PROXY_BASE}/v1/slo/{name}", "proxy")
        for name, entity in PROXY_APPS.items()}
    for file, (entity, acs, slo, owner) in registrations.items():
        (providers / f"{file}.json").write_text(json.dumps({
            "entity_id": entity, "acs_url": acs, "slo_url": slo,
            "signing_certificates": [(where / f"{owner}-signing.pem").read_text()],
            "tls_certificates": [(where / f"{owner}-client.pem").read_text()],
        }))
    (where / "store.secret").write_text("any password: the test Redis has no users\n")
    return Pki(where, keys["sp-signing"])


@pytest.fixture(scope="session")
def accounts(userdb: dict[str, str]) -> dict[str, str]:
    add_user(userdb, "alice", PASSWORD, ("staff",))
    add_user(userdb, "mallory", PASSWORD, ("staff",))
    add_user(userdb, "dora", PASSWORD, enabled=False)
    return userdb


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def idp_settings(pki: Pki, userdb: dict[str, str], redis_socket: Path, secret_file: Path) -> Settings:
    """Settings of an IdP on two free loopback ports, which its URLs name."""
    secret_file.write_text(userdb["password"])
    front, back = free_port(), free_port()
    return Settings.from_dict({
        "entity_id": IDP, "base_url": f"https://localhost:{front}", "back_url": f"https://localhost:{back}",
        "front_listen": f"127.0.0.1:{front}", "back_listen": f"127.0.0.1:{back}",
        "certificate": pki.path("localhost.pem"), "private_key": pki.path("localhost.key"),
        "ca_chain": pki.path("ca.pem"), "crl": pki.path("crl.pem"),
        "signing_key": pki.path("signing.key"), "signing_certificate": pki.path("signing.pem"),
        "providers_dir": pki.path("providers"),
        "store_socket": str(redis_socket), "store_user": "default", "store_password_file": pki.path("store.secret"),
        "db_host": userdb["host"], "db_name": userdb["database"], "db_user": userdb["user"],
        "db_password_file": str(secret_file), "lockout_attempts": LOCKOUT,
        "person_certificate_units": ["staff", "contractors"],
    })


@pytest.fixture
def idp_run(pki: Pki, accounts: dict[str, str], redis_socket: Path, tmp_path: Path
            ) -> Callable[[Callable[[IdentityProvider], Awaitable[T]]], T]:
    """Run a coroutine with the IdP serving both channels on loopback."""
    def run(body: Callable[[IdentityProvider], Awaitable[T]]) -> T:
        async def main() -> T:
            async with running(idp_settings(pki, accounts, redis_socket, tmp_path / "db.secret")) as idp:
                return await body(idp)
        return asyncio.run(main())
    return run
