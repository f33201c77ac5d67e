"""The ArtifactResolve responder against a real Redis: saml.md §8's table."""
from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from dmzkit_remote_access.sso import protocol
from dmzkit_remote_access.sso.artifact import Artifact
from dmzkit_remote_access.tls import spki_sha256
from dmzkit_remote_access.sso.resolver import RequesterRefused, Resolver, ServiceProvider
from dmzkit_remote_access.sso.xml import XmlError

IDP, ARS = "https://idp.test/saml2", "https://idp.test:8443/saml2/ars"
IDP_KEY = rsa.generate_private_key(65537, 2048)
KEYS = {name: (ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1()))
        for name in ("https://a.test/sp", "https://b.test/sp")}  # (signing key, TLS client key)
A, B = KEYS
MESSAGE = b'<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_m" Version="2.0"/>'


def provider(name: str) -> ServiceProvider:
    signing, tls = KEYS[name]
    return ServiceProvider(name, f"{name}/acs", [signing.public_key()], frozenset({spki_sha256(tls.public_key())}))


def ask(resolver: Resolver, requester: str, artifact: str, *, tls: str | None = None, signer=None):
    """Resolve as `requester` (its own TLS key and signing key unless told otherwise)."""
    signing, tls_key = KEYS[requester]
    body, request_id = protocol.artifact_resolve(requester, ARS, artifact, signer or signing)
    peer = tls if tls is not None else spki_sha256(tls_key.public_key())

    async def go():
        answer, outcome = await resolver.resolve(body, peer)
        return protocol.read_artifact_response(answer, IDP, request_id, [IDP_KEY.public_key()]), outcome
    return go()


@pytest.fixture
def run(with_store):
    """Run a coroutine against a Resolver for A and B on the test Redis."""
    def runner(body, ttl: float = 60.0):
        providers = {n: provider(n) for n in KEYS}
        return with_store(lambda store: body(Resolver(IDP, ARS, 0, IDP_KEY, store, providers, ttl)))
    return runner


def test_first_resolve_gives_the_message_and_a_replay_gives_nothing(run) -> None:
    async def body(resolver: Resolver):
        artifact = await resolver.issue(provider(A), MESSAGE)
        return [await ask(resolver, A, artifact), await ask(resolver, A, artifact)]
    (first, outcome), (second, again) = run(body)
    assert first is not None and first.get("ID") == "_m" and outcome.endswith("resolved")
    assert second is None and "used, expired or unknown" in again


def test_another_sp_gets_nothing_and_burns_the_artifact(run) -> None:
    async def body(resolver: Resolver):
        artifact = await resolver.issue(provider(A), MESSAGE)
        return [await ask(resolver, B, artifact), await ask(resolver, A, artifact)]
    (stolen, outcome), (late, _) = run(body)
    assert stolen is None and "another SP" in outcome
    assert late is None


def test_an_expired_artifact_gives_nothing(run) -> None:
    async def body(resolver: Resolver):
        artifact = await resolver.issue(provider(A), MESSAGE)
        await asyncio.sleep(1.2)
        return await ask(resolver, A, artifact)
    message, _ = run(body, ttl=1.0)
    assert message is None


@pytest.mark.parametrize(("artifact", "outcome"), [
    (Artifact.new("https://other-idp.test/", 0).encode(), "another issuer"),
    (Artifact.new(IDP, 7).encode(), "another issuer or endpoint"),
    ("AAQAAA==", "malformed"),
])
def test_artifacts_not_ours_give_nothing(run, artifact: str, outcome: str) -> None:
    message, said = run(lambda resolver: ask(resolver, A, artifact))
    assert message is None and outcome in said


@pytest.mark.parametrize(("how", "why"), [
    ({"tls": spki_sha256(ec.generate_private_key(ec.SECP256R1()).public_key())}, "TLS client certificate"),
    ({"tls": ""}, "TLS client certificate"),
    ({"signer": ec.generate_private_key(ec.SECP256R1())}, "signature"),
])
def test_a_requester_that_cannot_prove_itself_is_refused(run, how: dict, why: str) -> None:
    async def body(resolver: Resolver):
        artifact = await resolver.issue(provider(A), MESSAGE)
        with pytest.raises(RequesterRefused, match=why):
            await ask(resolver, A, artifact, **how)
        return await ask(resolver, A, artifact)  # a refused request did not burn it
    message, _ = run(body)
    assert message is not None


def denied(answer: bytes, request_id: str) -> str:
    """The status codes of a signed answer that denies the request, outermost first."""
    with pytest.raises(XmlError, match="RequestDenied") as refusal:
        protocol.read_artifact_response(answer, IDP, request_id, [IDP_KEY.public_key()])
    return str(refusal.value)


def test_a_replayed_artifact_resolve_is_denied_in_saml(run) -> None:
    signing, tls_key = KEYS[A]

    async def body(resolver: Resolver):
        artifact = await resolver.issue(provider(A), MESSAGE)
        request, request_id = protocol.artifact_resolve(A, ARS, artifact, signing)
        await resolver.resolve(request, spki_sha256(tls_key.public_key()))
        return await resolver.resolve(request, spki_sha256(tls_key.public_key())), request_id
    (answer, outcome), request_id = run(body)
    assert "Requester / urn:oasis:names:tc:SAML:2.0:status:RequestDenied" in denied(answer, request_id)
    assert outcome == "denied: a replayed ArtifactResolve"


@pytest.mark.parametrize(("destination", "issued", "why"), [
    ("https://elsewhere.test/saml2/ars", dt.timedelta(0), "another responder"),
    (ARS, -dt.timedelta(minutes=10), "time window"),
    (ARS, dt.timedelta(minutes=5), "time window"),
])
def test_an_authenticated_request_sent_elsewhere_or_stale_is_denied_and_spends_nothing(
        run, monkeypatch: pytest.MonkeyPatch, destination: str, issued: dt.timedelta, why: str) -> None:
    signing, tls_key = KEYS[A]

    async def body(resolver: Resolver):
        artifact = await resolver.issue(provider(A), MESSAGE)
        with monkeypatch.context() as m:
            sent = protocol.now() + issued
            m.setattr(protocol, "now", lambda: sent)
            request, request_id = protocol.artifact_resolve(A, destination, artifact, signing)
        answer, outcome = await resolver.resolve(request, spki_sha256(tls_key.public_key()))
        return answer, request_id, outcome, await ask(resolver, A, artifact)
    answer, request_id, outcome, (later, _) = run(body)
    denied(answer, request_id)
    assert outcome.startswith("denied: ") and why in outcome
    assert later is not None  # the denied request did not spend the artifact


def test_the_answer_names_the_request_and_is_signed(run) -> None:
    async def body(resolver: Resolver):
        return await ask(resolver, A, await resolver.issue(provider(A), MESSAGE))
    message, _ = run(body)  # read_artifact_response checked InResponseTo and the IdP's signature
    assert message is not None
