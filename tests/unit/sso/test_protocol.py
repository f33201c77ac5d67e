"""A whole artifact exchange in process (AuthnRequest by Redirect, Response,
ArtifactResolve, ArtifactResponse), and the SP's refusals of saml.md §4."""
from __future__ import annotations

import base64
import datetime as dt
import urllib.parse
import zlib
from copy import deepcopy

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from dmzkit_remote_access.sso import assertion, protocol, xmldsig
from dmzkit_remote_access.sso.artifact import Artifact
from dmzkit_remote_access.sso.xml import NS, XmlError, parse, serialize

IDP, SP, OTHER_SP = "https://idp.test/saml2", "https://sp.test/saml2", "https://other.test/saml2"
SSO_URL, ARS_URL, ACS = "https://idp.test/saml2/sso", "https://idp.test:8443/saml2/ars", "https://sp.test/saml2/acs"
IDP_KEY = rsa.generate_private_key(65537, 2048)
SP_KEY = ec.generate_private_key(ec.SECP256R1())
LOGIN = assertion.Login(user="alice", session_index="_s1", session_not_on_or_after=None,
                        authn_context=assertion.PASSWORD, attributes={"groups": ["staff", "vpn"]})


def sp_request() -> tuple[str, str]:
    request, request_id = protocol.authn_request(SP, SSO_URL, ACS)
    return protocol.redirect_url(SSO_URL, request, "app/inbox", SP_KEY), request_id


def idp_response(request_id: str, sp: str = SP, acs: str = ACS, key: xmldsig.PrivateKey = IDP_KEY) -> bytes:
    return assertion.response(IDP, sp, acs, request_id, LOGIN, key, dt.timedelta(hours=8))


def resolved(message: bytes, resolve_id: str) -> bytes:
    return protocol.artifact_response(IDP, resolve_id, message, IDP_KEY)


def test_the_whole_exchange() -> None:
    url, request_id = sp_request()
    element, relay, signed = protocol.read_redirect(urllib.parse.urlsplit(url).query,
                                                    lambda issuer: [SP_KEY.public_key()])
    request = protocol.read_authn_request(element, {SSO_URL})
    assert (request.id, request.issuer, request.acs_url, relay, signed) == (request_id, SP, ACS, "app/inbox", True)

    artifact = Artifact.new(IDP, 0).encode()
    soap, resolve_id = protocol.artifact_resolve(SP, ARS_URL, artifact, SP_KEY)
    resolve = protocol.read_artifact_resolve(soap)
    assert (resolve.issuer, resolve.artifact, resolve.destination) == (SP, artifact, ARS_URL)
    assert xmldsig.verify(resolve.element, [SP_KEY.public_key()]) is not None

    answer = resolved(idp_response(request.id), resolve.id)
    message = protocol.read_artifact_response(answer, IDP, resolve_id, [IDP_KEY.public_key()])
    login = assertion.validate(message, IDP, SP, ACS, request_id, [IDP_KEY.public_key()])
    assert (login.user, login.attributes, login.authn_context) == ("alice", {"groups": ["staff", "vpn"]},
                                                                   assertion.PASSWORD)
    assert login.session_not_on_or_after is not None and login.assertion_id


def test_an_authn_request_for_another_destination_is_refused() -> None:
    url, _ = sp_request()
    element, _, _ = protocol.read_redirect(urllib.parse.urlsplit(url).query, lambda issuer: [SP_KEY.public_key()])
    alias = "https://portal.example.org/saml2/sso"
    assert protocol.read_authn_request(element, {alias, SSO_URL}).issuer == SP
    with pytest.raises(XmlError, match="another destination"):
        protocol.read_authn_request(element, {alias})
    # A Destination is compared whole, never as a part of an allowed URL.
    with pytest.raises(XmlError, match="another destination"):
        protocol.read_authn_request(element, {SSO_URL + "/more"})


def test_an_empty_artifact_response_is_no_message() -> None:
    answer = protocol.artifact_response(IDP, "_r", None, IDP_KEY)
    assert protocol.read_artifact_response(answer, IDP, "_r", [IDP_KEY.public_key()]) is None


@pytest.mark.parametrize(("issuer", "in_response_to", "key", "why"), [
    ("https://evil.test/", "_r", IDP_KEY, "another issuer"),
    (IDP, "_other", IDP_KEY, "another request"),
    (IDP, "_r", rsa.generate_private_key(65537, 2048), "any trusted key"),
])
def test_artifact_responses_the_sp_refuses(issuer: str, in_response_to: str, key, why: str) -> None:
    answer = protocol.artifact_response(issuer, in_response_to, idp_response("_q"), key)
    with pytest.raises(XmlError, match=why):
        protocol.read_artifact_response(answer, IDP, "_r", [IDP_KEY.public_key()])


def check(message: bytes, request_id: str = "_q", **overrides: str) -> assertion.Login:
    arguments = {"idp": IDP, "sp": SP, "acs_url": ACS, "request_id": request_id} | overrides
    return assertion.validate(parse(message, 65536), keys=[IDP_KEY.public_key()], **arguments)


@pytest.mark.parametrize(("message", "overrides", "why"), [
    (lambda: idp_response("_q", sp=OTHER_SP), {}, "another audience"),
    (lambda: idp_response("_q", acs="https://sp.test/elsewhere"), {}, "another endpoint"),
    (lambda: idp_response("_other"), {}, "does not answer our request"),
    (lambda: idp_response("_q"), {"idp": "https://other-idp.test/"}, "another IdP"),
    (lambda: idp_response("_q", key=ec.generate_private_key(ec.SECP256R1())), {}, "any trusted key"),
])
def test_responses_the_sp_refuses(message, overrides: dict[str, str], why: str) -> None:
    with pytest.raises(XmlError, match=why):
        check(message(), **overrides)


def test_an_expired_assertion_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = idp_response("_q")
    later = protocol.now() + dt.timedelta(minutes=9)
    monkeypatch.setattr(assertion, "now", lambda: later)
    monkeypatch.setattr(protocol, "now", lambda: later)
    with pytest.raises(XmlError, match="expired|time window"):
        check(message)


@pytest.mark.parametrize("lifetime", [protocol.CLOCK_SKEW, dt.timedelta(minutes=5)])
def test_a_replay_cache_outlives_every_moment_a_message_is_accepted(monkeypatch: pytest.MonkeyPatch,
                                                                    lifetime: dt.timedelta) -> None:
    start = protocol.now()
    issued = start + protocol.CLOCK_SKEW  # from a clock running ahead: accepted at once
    protocol.check_fresh(issued, "message", lifetime)
    last = start + dt.timedelta(seconds=protocol.accepted_for(lifetime)) - dt.timedelta(milliseconds=1)
    monkeypatch.setattr(protocol, "now", lambda: last)
    protocol.check_fresh(issued, "message", lifetime)  # still accepted: its ID must still be remembered
    monkeypatch.setattr(protocol, "now", lambda: last + dt.timedelta(milliseconds=2))
    with pytest.raises(XmlError, match="time window"):
        protocol.check_fresh(issued, "message", lifetime)


def test_a_second_assertion_is_refused() -> None:
    element = parse(idp_response("_q"), 65536)
    element.append(deepcopy(element.find("saml:Assertion", NS)))
    with pytest.raises(XmlError, match="exactly one Assertion"):
        check(serialize(element))


def test_a_name_injected_with_a_comment_is_refused_before_anything_is_read() -> None:
    message = idp_response("_q").replace(b">alice<", b">alice<!---->.evil.test<")
    with pytest.raises(XmlError, match="comments"):
        check(message)


def test_a_changed_assertion_is_refused() -> None:
    message = idp_response("_q").replace(b">alice<", b">admin<")
    with pytest.raises(XmlError, match="digest"):
        check(message)


def _query(xml: bytes, **extra: str) -> str:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = base64.b64encode(compressor.compress(xml) + compressor.flush()).decode()
    return urllib.parse.urlencode({"SAMLRequest": data, **extra})


@pytest.mark.parametrize(("query", "why"), [
    (lambda: _query(b"<x>" + b" " * 1_000_000 + b"</x>"), "inflates past the limit"),
    (lambda: "SAMLRequest=!!!", "deflated base64"),
    (lambda: _query(b"<x/>", RelayState="\u00e9" * 512 + "r"), "1024 bytes"),
    (lambda: sp_request()[0].split("?", 1)[1].replace("SigAlg=", "SigAlg=x"), "not allowed"),
    (lambda: sp_request()[0].split("?", 1)[1].replace("RelayState=app", "RelayState=evil"), "does not verify"),
    (lambda: "SAMLRequest=a&SAMLRequest=b", "twice"),
])
def test_redirect_queries_the_idp_refuses(query, why: str) -> None:
    with pytest.raises(XmlError, match=why):
        protocol.read_redirect(query(), lambda issuer: [SP_KEY.public_key()])


# A full return URL, as an SP sent it (114 bytes), and the most we take.
@pytest.mark.parametrize("relay_state", [
    "https://intranet.example.org/projects/2026/budget/overview"
    "?tab=forecast&quarter=3&view=detailed&lang=de&x=1&ref=ab",
    "\u00e9" * 511 + "&=",
], ids=["return-url", "1024-bytes"])
def test_a_relay_state_past_80_bytes_is_taken_as_sent(relay_state: str) -> None:
    request, _ = protocol.authn_request(SP, SSO_URL, ACS)
    url = protocol.redirect_url(SSO_URL, request, relay_state, SP_KEY)
    _, relay, signed = protocol.read_redirect(urllib.parse.urlsplit(url).query, lambda issuer: [SP_KEY.public_key()])
    assert relay == relay_state and signed


def test_a_signed_request_from_an_sp_without_keys_fails_closed() -> None:
    with pytest.raises(xmldsig.SignatureError, match="no signing key"):
        protocol.read_redirect(sp_request()[0].split("?", 1)[1], lambda issuer: [])


def _with_header(*entries: dict[str, str]) -> bytes:
    """An ArtifactResolve whose envelope has a Header, with one entry per dict of attributes."""
    soap, _ = protocol.artifact_resolve(SP, ARS_URL, Artifact.new(IDP, 0).encode(), SP_KEY)
    envelope = parse(soap, 65536)
    header = envelope.makeelement(f"{{{NS['soap']}}}Header")
    for attributes in entries:
        header.append(header.makeelement("{urn:example:extension}Entry", attributes))
    envelope.insert(0, header)
    return serialize(envelope)


MUST_UNDERSTAND = f"{{{NS['soap']}}}mustUnderstand"


@pytest.mark.parametrize("entries", [(), ({},), ({MUST_UNDERSTAND: "0"}, {"mustUnderstand": "1"})],
                         ids=["empty", "optional-entry", "not-required"])
def test_a_soap_header_that_asks_nothing_is_accepted(entries) -> None:
    # SOAP 1.1 §4.2 allows a Header, SAMLBind §3.2.2.1 lets requesters add one;
    # an unqualified mustUnderstand is not SOAP's.
    assert protocol.read_artifact_resolve(_with_header(*entries)).issuer == SP


@pytest.mark.parametrize("value", ["1", "true"])
def test_a_header_entry_we_must_understand_is_a_must_understand_fault(value: str) -> None:
    with pytest.raises(protocol.SoapError, match="must understand") as refusal:
        protocol.read_artifact_resolve(_with_header({}, {MUST_UNDERSTAND: value}))
    assert refusal.value.code == "MustUnderstand"


def test_soap_with_a_misplaced_header_or_two_bodies_is_refused() -> None:
    envelope = parse(_with_header(), 65536)
    envelope.append(envelope[0])  # the Header after the Body (SOAP 1.1 §4.2: it comes first)
    with pytest.raises(XmlError, match="first"):
        protocol.read_artifact_resolve(serialize(envelope))
    envelope.remove(envelope[1])
    envelope[0].append(deepcopy(envelope[0][0]))
    with pytest.raises(XmlError, match="exactly one element"):
        protocol.read_artifact_resolve(serialize(envelope))


def test_a_soap_1_2_envelope_is_a_version_mismatch() -> None:
    soap, _ = protocol.artifact_resolve(SP, ARS_URL, Artifact.new(IDP, 0).encode(), SP_KEY)
    soap12 = soap.replace(NS["soap"].encode(), b"http://www.w3.org/2003/05/soap-envelope")
    with pytest.raises(protocol.SoapError, match="SOAP 1.1") as refusal:
        protocol.read_artifact_resolve(soap12)
    assert refusal.value.code == "VersionMismatch"
