"""The B/S application's JSON settings, written by the `bs_app` role."""
from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from ..config import ConfigError, FileSettings, check_url, typed

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# session_seconds: long enough for a sign-in's redirects, short enough to bound revocation.
SESSION_SECONDS = (30, 3600)


@dataclass(frozen=True)
class SingleSignOn:
    """The app as a SAML SP of the collection's IdP (HTTP-Artifact binding)."""
    entity_id: str
    # How browsers reach the app (through the gateway's portal): the ACS is
    # <base_url>/saml2/acs.
    base_url: str
    idp_entity_id: str
    # The IdP's SSO endpoint as browsers reach it.
    idp_sso_url: str
    idp_ars_url: str
    # Pinned: assertions are checked with this certificate only.
    idp_signing_certificate: str
    signing_key: str
    # The app's client certificate on the IdP's back channel.
    client_certificate: str
    client_key: str
    # 32 random bytes, hex: seals the app's session and sign-in cookies.
    session_key_file: str
    # How long the app takes an assertion for. Its sealed cookie cannot be
    # revoked: past this the app asks the IdP again, which answers at once
    # for a live session and refuses a disabled user or an ended session.
    # The bound on how long either keeps the app.
    session_seconds: float = 300.0

    @property
    def acs_url(self) -> str:
        return f"{self.base_url}/saml2/acs"

    @property
    def slo_url(self) -> str:
        return f"{self.base_url}/saml2/slo"


@dataclass(frozen=True)
class Settings(FileSettings):
    listen_address: str
    port: int
    certificate: str
    private_key: str
    ca_chain: str
    crl: str
    # CNs of the portals' client certificates: only they may name the user
    # in the identity header.
    trusted_portals: list[str]
    # Networks that count as "through the gateway".
    allowed_sources: list[str]
    identity_header: str
    title: str
    sso: SingleSignOn | None = None

    @property
    def networks(self) -> tuple[Network, ...]:
        return tuple(ipaddress.ip_network(n) for n in self.allowed_sources)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Settings:
        sso = raw.get("sso")
        if sso is not None and not isinstance(sso, dict):
            raise ConfigError("sso must be an object")
        settings = typed(cls, {k: v for k, v in raw.items() if k != "sso"})
        if sso is not None:
            try:
                settings = dataclasses.replace(settings, sso=typed(SingleSignOn, sso))
            except ConfigError as e:
                raise ConfigError(f"sso: {e}") from None
        settings.check()
        return settings

    def check(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1-65535, got {self.port}")
        if not self.allowed_sources:
            raise ConfigError("allowed_sources must name at least one network")
        try:
            self.networks
        except (ValueError, TypeError) as e:
            raise ConfigError(f"allowed_sources: {e}") from None
        if not re.fullmatch(r"[A-Za-z0-9-]+", self.identity_header):
            raise ConfigError("identity_header must be letters, digits and dashes")
        if self.sso is not None:
            for name in ("base_url", "idp_sso_url", "idp_ars_url"):
                check_url(self.sso, name)
            if not SESSION_SECONDS[0] <= self.sso.session_seconds <= SESSION_SECONDS[1]:
                raise ConfigError(f"sso: session_seconds must be {SESSION_SECONDS[0]}-{SESSION_SECONDS[1]}: "
                                  "a disabled or signed-out user keeps the app that long")
