"""The SP side of the artifact profile, for every SP this package runs (the
SAML proxy's C/S applications, the B/S application): an AuthnRequest for
the browser to carry to the IdP, then the artifact it comes back with,
resolved over mutual TLS and validated (saml.md §4) before anyone is
signed in; and a LogoutRequest that ends the user's IdP session, with the
IdP's signed answer checked."""
from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from . import assertion, protocol, xmldsig
from .artifact import ArtifactError, decode, source_id
from .xml import XmlError

# Is this assertion ID new? Answers True once per ID within the lifetime (s).
FirstUse = Callable[[str, float], Awaitable[bool]]

# How long an assertion ID must be remembered to refuse its replay.
REPLAY_WINDOW_S = protocol.accepted_for(assertion.ASSERTION_LIFETIME)


class IdpFailed(Exception):
    """The IdP answered something an SP cannot accept."""


@dataclass(frozen=True)
class Partner:
    """The IdP as its SPs know it: endpoints and the pinned signing keys."""
    entity_id: str
    sso_url: str
    ars_url: str
    keys: tuple[xmldsig.PublicKey, ...]

    @property
    def slo_url(self) -> str:
        """The collection's IdP serves its SingleLogoutService beside its SSO
        endpoint, on the site its SPs' browsers reach it at."""
        return urllib.parse.urljoin(self.sso_url, "slo")


@dataclass(frozen=True)
class Relying:
    """One SP: its entity ID and the ACS the IdP sends browsers back to."""
    entity_id: str
    acs_url: str


class ArtifactConsumer:
    """Signs AuthnRequests and resolves artifacts for SPs sharing one
    signing key and one mutual-TLS session to the IdP's back channel."""

    def __init__(self, idp: Partner, key: xmldsig.PrivateKey, back: aiohttp.ClientSession,
                 first_use: FirstUse) -> None:
        self.idp = idp
        self.key = key
        self.back = back
        self.first_use = first_use

    def request(self, sp: Relying, relay_state: str | None = None) -> tuple[str, str]:
        """The IdP's SSO URL with a signed AuthnRequest, and the request's ID
        (the Response must answer it)."""
        element, request_id = protocol.authn_request(sp.entity_id, self.idp.sso_url, sp.acs_url)
        return protocol.redirect_url(self.idp.sso_url, element, relay_state, self.key), request_id

    async def resolve(self, sp: Relying, artifact: str, request_id: str) -> assertion.Login:
        """The login an artifact stands for; IdpFailed unless every check passes."""
        # SAMLBind 3.6.4: only an artifact of our IdP goes to its back channel.
        try:
            issuer = decode(artifact).source_id
        except ArtifactError as e:
            raise IdpFailed(f"not an artifact: {e}") from None
        if issuer != source_id(self.idp.entity_id):
            raise IdpFailed("an artifact from another issuer")
        body, resolve_id = protocol.artifact_resolve(sp.entity_id, self.idp.ars_url, artifact, self.key)
        try:
            async with self.back.post(self.idp.ars_url, data=body, headers=protocol.SOAP_HEADERS) as r:
                status, answer = r.status, await r.read()
        except (aiohttp.ClientError, OSError) as e:
            raise IdpFailed(f"the IdP's back channel failed: {e}") from None
        if status != 200:
            raise IdpFailed(f"the ArtifactResolve was answered {status}")
        keys = list(self.idp.keys)
        try:
            message = protocol.read_artifact_response(answer, self.idp.entity_id, resolve_id, keys)
            if message is None:
                raise IdpFailed("the IdP had nothing for the artifact")
            login = assertion.validate(message, self.idp.entity_id, sp.entity_id, sp.acs_url, request_id, keys)
        except XmlError as e:
            raise IdpFailed(f"the IdP's answer was refused: {e}") from None
        if not await self.first_use(login.assertion_id, REPLAY_WINDOW_S):
            raise IdpFailed("a replayed assertion")
        return login

    def logout(self, sp: Relying, user: str) -> tuple[str, str]:
        """The IdP's SLO URL with a signed LogoutRequest from `sp` for `user`'s
        session, and the request's ID (the LogoutResponse must answer it)."""
        element, request_id = protocol.logout_request(sp.entity_id, self.idp.slo_url, user)
        return protocol.redirect_url(self.idp.slo_url, element, None, self.key), request_id

    def logged_out(self, query: str, slo_url: str, request_id: str) -> None:
        """Check the IdP's LogoutResponse in `query` (Redirect, as sent to
        `slo_url`); IdpFailed unless the IdP signed it and ended the session."""
        def keys_of(issuer: str) -> list[xmldsig.PublicKey]:
            return list(self.idp.keys) if issuer == self.idp.entity_id else []
        try:
            element, _, signed = protocol.read_redirect(query, keys_of, "SAMLResponse")
            if not signed:
                raise XmlError("an unsigned LogoutResponse")
            status = protocol.read_logout_response(element, self.idp.entity_id, slo_url, request_id)
        except XmlError as e:
            raise IdpFailed(f"the IdP's LogoutResponse was refused: {e}") from None
        if status[0] != protocol.SUCCESS:
            raise IdpFailed(f"the IdP answered {' / '.join(status)[:300]!r} to the LogoutRequest")
