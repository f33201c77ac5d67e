"""The IdP's artifact issuer and ArtifactResolve responder (saml.md §8, in order).

A requester proves who it is twice (policy `both`): the client certificate
of its mutual-TLS connection must be one its registration lists, and its
ArtifactResolve must be signed with one of its registered signing keys.
A requester that fails is refused at the SOAP level. An authenticated
requester always gets a signed ArtifactResponse (Errata E19: SAML-level
refusals are SAML answers): RequestDenied for a request sent elsewhere,
stale or replayed; else Success, with the message only if the artifact was
issued here, for it, and is live, and empty otherwise. The artifact is
deleted by the first resolution, whoever sent it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from . import protocol, xmldsig
from .artifact import Artifact, ArtifactError, decode, source_id
from .store import ArtifactRecord, Store
from .xml import XmlError

log = logging.getLogger("dmzkit.sso.resolver")
ARTIFACT_TTL = 60.0


class RequesterRefused(XmlError):
    """The back-channel requester could not be authenticated."""


@dataclass(frozen=True)
class ServiceProvider:
    entity_id: str
    acs_url: str
    signing_keys: list[xmldsig.PublicKey]
    # SHA-256 of the SPKI of each client certificate it may use on the back channel.
    tls_keys: frozenset[str] = field(default_factory=frozenset)
    # Where its LogoutResponses go (HTTP-Redirect); None: the IdP says "signed out" itself.
    slo_url: str | None = None


@dataclass
class Resolver:
    entity_id: str
    ars_url: str
    index: int
    key: xmldsig.PrivateKey
    store: Store
    providers: dict[str, ServiceProvider]
    artifact_ttl: float = ARTIFACT_TTL

    async def issue(self, provider: ServiceProvider, message: bytes) -> str:
        """Keep `message` for `provider` and return the artifact that names it."""
        artifact = Artifact.new(self.entity_id, self.index)
        record = ArtifactRecord(self.entity_id, provider.entity_id, message, time.time() + self.artifact_ttl)
        await self.store.put_artifact(artifact, record)
        log.info("artifact %s issued for %s", artifact.key[:12], provider.entity_id)
        return artifact.encode()

    def authenticate(self, request: protocol.ArtifactResolve, peer_key: str | None) -> ServiceProvider:
        provider = self.providers.get(request.issuer)
        if provider is None:
            raise RequesterRefused("unknown requester")
        if peer_key is None or peer_key not in provider.tls_keys:
            raise RequesterRefused("the TLS client certificate is not the requester's")
        try:
            xmldsig.verify(request.element, provider.signing_keys)
        except xmldsig.SignatureError as e:
            raise RequesterRefused(f"ArtifactResolve signature: {e}") from e
        return provider

    async def deny(self, request: protocol.ArtifactResolve, provider: ServiceProvider) -> str | None:
        """Why an authenticated request is denied, if it is (saml.md §8, steps 6-7)."""
        if request.destination not in (None, self.ars_url):
            return "the ArtifactResolve is for another responder"
        try:
            protocol.check_fresh(request.issued, "ArtifactResolve")
        except XmlError as e:
            return str(e)
        if not await self.store.first_use("artifact-resolve", f"{provider.entity_id} {request.id}",
                                          protocol.accepted_for()):
            return "a replayed ArtifactResolve"
        return None

    async def resolve(self, body: bytes, peer_key: str | None) -> tuple[bytes, str]:
        """The SOAP answer to an ArtifactResolve, and what happened (for the audit log).
        Raises XmlError (RequesterRefused included) for a request that gets no answer."""
        request = protocol.read_artifact_resolve(body)
        provider = self.authenticate(request, peer_key)
        denied = await self.deny(request, provider)
        if denied is None:
            message, outcome = await self._take(request.artifact, provider)
            answer = protocol.artifact_response(self.entity_id, request.id, message, self.key)
        else:
            outcome = f"denied: {denied}"
            answer = protocol.artifact_response(self.entity_id, request.id, None, self.key,
                                                (protocol.REQUESTER, protocol.REQUEST_DENIED))
        log.info("ArtifactResolve %s from %s: %s", request.id, provider.entity_id, outcome)
        return answer, outcome

    async def _take(self, text: str, provider: ServiceProvider) -> tuple[bytes | None, str]:
        try:
            artifact = decode(text)
        except ArtifactError:
            return None, "malformed artifact"
        if artifact.source_id != source_id(self.entity_id) or artifact.index != self.index:
            return None, "artifact of another issuer or endpoint"
        record = await self.store.take_artifact(artifact)  # deleted here, before any other check
        if record is None:
            return None, f"artifact {artifact.key[:12]} used, expired or unknown"
        if record.issuer != self.entity_id:  # a store shared by mistake with another IdP
            return None, f"artifact {artifact.key[:12]} was issued by {record.issuer}"
        if record.recipient != provider.entity_id:
            return None, f"artifact {artifact.key[:12]} was issued for another SP"
        return record.message, f"artifact {artifact.key[:12]} resolved"
