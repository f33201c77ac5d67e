"""The IdP's configuration and its registry of service providers.

One JSON file (written by the `saml_idp` role, checked with `dmzkit-sso
check-config` before it replaces the old one) and one JSON file per SP in
`providers_dir` (written by the `saml_sp` module). Keys and certificates
are read here, once, at start.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..config import ConfigError, FileSettings, check_listen, check_url, load_object, typed
from . import xmldsig
from ..tls import spki_sha256
from .resolver import ARTIFACT_TTL, ServiceProvider


@dataclass(frozen=True)
class Settings(FileSettings):
    entity_id: str
    # Front channel (browsers): the login page and the SSO endpoint, at the
    # URL the metadata publishes.
    base_url: str
    # Back channel (SPs and the proxy, mutual TLS): ArtifactResolve.
    back_url: str
    front_listen: str
    back_listen: str
    certificate: str
    private_key: str
    ca_chain: str
    crl: str
    signing_key: str
    signing_certificate: str
    providers_dir: str
    store_socket: str
    store_user: str
    store_password_file: str
    db_host: str
    db_name: str
    db_user: str
    db_password_file: str
    db_port: int = 5432
    ars_index: int = 0
    artifact_ttl: float = ARTIFACT_TTL
    session_idle: float = 8 * 3600.0
    session_absolute: float = 24 * 3600.0
    lockout_attempts: int = 5
    lockout_seconds: float = 300.0
    metadata_valid_days: int = 7
    # Other URLs the front channel is reached under (through a gateway's
    # portal, say): AuthnRequests addressed to them are accepted too.
    front_aliases: list[str] = field(default_factory=list)
    # Reverse proxies (a gateway's portal) whose X-Forwarded-For names the
    # browser: sign-in limits and the audit log go by the browser's address,
    # not by the one address every portal user shares.
    trusted_proxies: list[str] = field(default_factory=list)
    # The OUs the CA gives people's certificates (their groups): only such a
    # certificate signs its CN in. Empty: no sign-in by certificate.
    person_certificate_units: list[str] = field(default_factory=list)

    @property
    def ars_url(self) -> str:
        return f"{self.back_url}/saml2/ars"

    @property
    def sso_url(self) -> str:
        return f"{self.base_url}/saml2/sso"

    @property
    def slo_url(self) -> str:
        return f"{self.base_url}/saml2/slo"

    def front_urls(self, path: str) -> frozenset[str]:
        """Every URL of `path` on the front channel: what a request may name as its Destination."""
        return frozenset(f"{base}{path}" for base in (self.base_url, *self.front_aliases))

    def check(self) -> None:
        check_url(self, "base_url")
        check_url(self, "back_url")
        for alias in self.front_aliases:
            if not isinstance(alias, str) or not alias.startswith("https://") or alias.endswith("/"):
                raise ConfigError(
                    f"front_aliases: each must be an https:// URL without a trailing slash, got {alias!r}")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_address(proxy)
            except (TypeError, ValueError):
                raise ConfigError(f"trusted_proxies: each must be an IP address, got {proxy!r}") from None
        check_listen(self, "front_listen")
        check_listen(self, "back_listen")
        if not 0 <= self.ars_index <= 9:
            # pysaml2 reads the index from one ASCII digit (saml.md §3.1).
            raise ConfigError(f"ars_index must be 0-9, got {self.ars_index}")
        if not 10 <= self.artifact_ttl <= 300:
            raise ConfigError(f"artifact_ttl must be 10-300 s, got {self.artifact_ttl}")
        if not 0 < self.session_idle <= self.session_absolute:
            raise ConfigError("session_idle must be positive and at most session_absolute")
        if self.lockout_attempts < 1 or self.lockout_seconds <= 0:
            raise ConfigError("lockout_attempts and lockout_seconds must be positive")
        if not 1 <= self.metadata_valid_days <= 14:
            raise ConfigError(f"metadata_valid_days must be 1-14, got {self.metadata_valid_days}")


def load_signing_key(path: str) -> xmldsig.PrivateKey:
    try:
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except ValueError:
        raise ConfigError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path}: only RSA and ECDSA keys sign")
    check_key_policy(key, path)
    return key


def check_key_policy(key: xmldsig.PrivateKey | xmldsig.PublicKey, what: str) -> None:
    """xmldsig's key policy (RSA >= 2048 bits, or ECDSA P-256) as a
    ConfigError naming `what`: check-config then says what is wrong
    instead of failing with a traceback."""
    try:
        xmldsig.method_of(key)
    except xmldsig.SignatureError as e:
        raise ConfigError(f"{what}: {e}") from None


def load_certificate(path: str) -> x509.Certificate:
    try:
        with open(path, "rb") as f:
            return x509.load_pem_x509_certificate(f.read())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except ValueError:
        raise ConfigError(f"{path} is not a PEM certificate") from None


def load_signing_pair(settings: Settings | ProxySettings) -> tuple[xmldsig.PrivateKey, x509.Certificate]:
    """A signing key and the certificate that publishes it, which must match."""
    key = load_signing_key(settings.signing_key)
    certificate = load_certificate(settings.signing_certificate)
    if certificate.public_key().public_numbers() != key.public_key().public_numbers():
        raise ConfigError(f"{settings.signing_certificate} is not the certificate of {settings.signing_key}")
    return key, certificate


def _certificates(raw: dict[str, Any], name: str, source: str) -> list[x509.Certificate]:
    pems = raw.get(name, [])
    if not isinstance(pems, list) or not pems:
        raise ConfigError(f"{source}: {name} must list at least one PEM certificate")
    try:
        return [x509.load_pem_x509_certificate(p.encode()) for p in pems]
    except (AttributeError, ValueError):
        raise ConfigError(f"{source}: {name} holds something that is not a PEM certificate") from None


def provider_from_dict(raw: dict[str, Any], source: str) -> ServiceProvider:
    unknown = set(raw) - {"entity_id", "acs_url", "slo_url", "signing_certificates", "tls_certificates"}
    if unknown:
        raise ConfigError(f"{source}: unknown settings: {', '.join(sorted(unknown))}")
    entity_id, acs_url, slo_url = raw.get("entity_id"), raw.get("acs_url"), raw.get("slo_url")
    if not isinstance(entity_id, str) or not entity_id:
        raise ConfigError(f"{source}: entity_id is required")
    if not isinstance(acs_url, str) or not acs_url.startswith("https://"):
        raise ConfigError(f"{source}: acs_url must be an https:// URL")
    if slo_url is not None and (not isinstance(slo_url, str) or not slo_url.startswith("https://")):
        raise ConfigError(f"{source}: slo_url must be an https:// URL")
    signing = [c.public_key() for c in _certificates(raw, "signing_certificates", source)]
    for key in signing:
        check_key_policy(key, f"{source}: signing certificate")
    tls = frozenset(spki_sha256(c.public_key()) for c in _certificates(raw, "tls_certificates", source))
    return ServiceProvider(entity_id, acs_url, signing, tls, slo_url)


def read_providers(directory: str) -> tuple[dict[str, ServiceProvider], list[ConfigError]]:
    """Every valid `*.json` in `directory`, by entityID, and what is wrong
    with each of the others: one broken registration must not keep a running
    IdP from serving the rest."""
    providers: dict[str, ServiceProvider] = {}
    problems: list[ConfigError] = []
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
    except OSError as e:
        raise ConfigError(f"cannot list {directory}: {e.strerror}") from None
    for name in names:
        path = os.path.join(directory, name)
        try:
            provider = provider_from_dict(load_object(path), path)
            if provider.entity_id in providers:
                raise ConfigError(f"{path}: entity_id {provider.entity_id} is registered twice")
        except ConfigError as e:
            problems.append(e)
            continue
        providers[provider.entity_id] = provider
    return providers, problems


def load_providers(directory: str) -> dict[str, ServiceProvider]:
    """Every `*.json` in `directory`, by entityID; the first problem raised (check-config)."""
    providers, problems = read_providers(directory)
    if problems:
        raise problems[0]
    return providers


@dataclass(frozen=True)
class ProxyApp:
    """A C/S application behind the proxy: its SP name at the IdP, and the
    secret its server introspects tokens with."""
    name: str
    entity_id: str
    secret_file: str


@dataclass(frozen=True)
class ProxySettings(FileSettings):
    # How clients and the IdP's redirects name the proxy: https://host:port.
    base_url: str
    listen: str
    certificate: str
    private_key: str
    ca_chain: str
    crl: str
    # The proxy's client certificate on the IdP's back channel.
    client_certificate: str
    client_key: str
    signing_key: str
    signing_certificate: str
    idp_entity_id: str
    idp_sso_url: str
    idp_ars_url: str
    # Pinned: the proxy checks assertions with this certificate only.
    idp_signing_certificate: str
    store_socket: str
    store_user: str
    store_password_file: str
    apps: tuple[ProxyApp, ...]
    ticket_idle: float = 8 * 3600.0
    ticket_absolute: float = 24 * 3600.0
    app_token_ttl: float = 60.0

    def acs_url(self, app: ProxyApp) -> str:
        return f"{self.base_url}/v1/acs/{app.name}"

    def slo_url(self, app: ProxyApp) -> str:
        return f"{self.base_url}/v1/slo/{app.name}"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ProxySettings:
        apps = raw.get("apps")
        if not isinstance(apps, list) or not apps or not all(isinstance(app, dict) for app in apps):
            raise ConfigError("apps must list at least one application, each an object")
        try:
            parsed = tuple(typed(ProxyApp, app) for app in apps)
        except ConfigError as e:
            raise ConfigError(f"apps: {e}") from None
        if len({app.name for app in parsed}) != len(parsed):
            raise ConfigError("apps: names must be unique")
        settings = typed(cls, {**raw, "apps": parsed})
        settings.check()
        return settings

    def check(self) -> None:
        check_url(self, "base_url")
        check_listen(self, "listen")
        for app in self.apps:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", app.name):
                raise ConfigError(f"apps: name {app.name!r} must be lower-case letters, digits, '_' and '-'")
        if not 0 < self.ticket_idle <= self.ticket_absolute:
            raise ConfigError("ticket_idle must be positive and at most ticket_absolute")
        if not 10 <= self.app_token_ttl <= 300:
            raise ConfigError(f"app_token_ttl must be 10-300 s, got {self.app_token_ttl}")
