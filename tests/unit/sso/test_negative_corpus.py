"""The negative corpus (saml.md §8 goal 5), against the IdP running on
loopback and against the SP's checks of a Response the IdP really issued.
Every item is refused: a 4xx, a SOAP fault blaming the client or an empty
ArtifactResponse from the IdP, an XmlError from the SP's checks (never
another exception)."""
from __future__ import annotations

import base64
import datetime as dt
import zlib
from copy import deepcopy

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dmzkit_remote_access.sso import assertion, protocol, xmldsig
from dmzkit_remote_access.sso.idp import IdentityProvider
from dmzkit_remote_access.sso.xml import NS, SOAP_LIMIT, XmlError, parse, serialize
from test_idp import ACS, SP, Browser, ServiceProvider, artifact_of, fault_of, sign_in
from conftest import IDP, PASSWORD

ENVELOPE = ('<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>{}</soap:Body>'
            '</soap:Envelope>')
ATTACKER = ec.generate_private_key(ec.SECP256R1())


def _resolve_body(sp: ServiceProvider, idp: IdentityProvider, artifact: str, how: str) -> bytes:
    """An ArtifactResolve from the registered SP (its TLS certificate), spoiled as `how` says."""
    element, _ = protocol.new_message("ArtifactResolve", SP, Destination=idp.settings.ars_url)
    protocol.node("samlp", "Artifact", element).text = artifact
    if how == "unsigned":
        return protocol.soap(element)
    if how == "keyinfo":  # signed by the attacker, who offers its own certificate in KeyInfo
        xmldsig.sign(element, ATTACKER, b"not even a certificate")
        return protocol.soap(element)
    xmldsig.sign(element, sp.pki.sp_key)
    if how == "sha1":
        element.find("ds:Signature/ds:SignedInfo/ds:SignatureMethod", NS).set(
            "Algorithm", "http://www.w3.org/2000/09/xmldsig#rsa-sha1")
    elif how == "comment":
        return protocol.soap(element).replace(artifact.encode(), artifact[:8].encode() + b"<!--x-->" +
                                              artifact[8:].encode())
    elif how == "wrapped":  # XSW: the signed request moves into an Extensions, a forged one takes its place
        forged = deepcopy(element)
        forged.find("samlp:Artifact", NS).text = "AAQAAA" + artifact[6:]
        forged.remove(forged.find("ds:Signature", NS))
        extensions = protocol.node("samlp", "Extensions", forged)
        extensions.append(element)
        return protocol.soap(forged)
    return protocol.soap(element)


BACK_CHANNEL = [
    ("doctype-entities", lambda _sp, _idp, _a: (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        + ENVELOPE.format("<x>&b;</x>").encode())),
    ("xxe", lambda _sp, _idp, _a: (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        + ENVELOPE.format("<x>&e;</x>").encode())),
    ("not-xml", lambda _sp, _idp, _a: b"\x00\xff not xml at all"),
    ("two-bodies", lambda _sp, _idp, _a: ENVELOPE.format("<a/><b/>").encode()),
    ("unsigned", lambda sp, idp, a: _resolve_body(sp, idp, a, "unsigned")),
    ("sha1", lambda sp, idp, a: _resolve_body(sp, idp, a, "sha1")),
    ("keyinfo-key", lambda sp, idp, a: _resolve_body(sp, idp, a, "keyinfo")),
    ("comment-in-artifact", lambda sp, idp, a: _resolve_body(sp, idp, a, "comment")),
    ("xsw-wrapped", lambda sp, idp, a: _resolve_body(sp, idp, a, "wrapped")),
]


@pytest.mark.parametrize("name, build", BACK_CHANNEL, ids=[n for n, _ in BACK_CHANNEL])
def test_the_back_channel_refuses_and_burns_nothing(idp_run, pki, name: str, build) -> None:
    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            _, _, headers = await sign_in(browser, sp, "alice", PASSWORD)
            artifact = artifact_of(headers)[0]
            refused = await sp.post_ars(build(sp, idp, artifact))
            return refused, await sp.resolve(artifact)
        finally:
            await browser.session.close()
    (status, answer, _), afterwards = idp_run(body)
    # A SOAP fault (SOAP 1.1 §6.2: HTTP 500) that blames the request.
    assert status == 500 and fault_of(answer)[0] == "Client", (status, answer[:200])
    assert b"Traceback" not in answer
    # A refused request spends nothing: the artifact still resolves for its SP.
    assert afterwards is not None and afterwards.user == "alice"


def test_an_oversized_body_gets_413(idp_run, pki) -> None:
    async def body(idp: IdentityProvider):
        return await ServiceProvider(idp, pki).post_ars(b"<x>" + b"a" * (SOAP_LIMIT * 2) + b"</x>")
    status, _, _ = idp_run(body)
    assert status == 413


def test_a_garbled_artifact_gets_an_empty_answer(idp_run, pki) -> None:
    async def body(idp: IdentityProvider):
        sp = ServiceProvider(idp, pki)
        sp.request_id = "_none"
        return await sp.resolve("AAQAAA" + "A" * 54)
    assert idp_run(body) is None


# -- the SP's checks on a Response the IdP issued --------------------------------

def _issued(idp_run, pki) -> tuple[bytes, str, list]:
    """A Response as the IdP answered the SP's artifact: (bytes, request ID, IdP keys)."""
    async def body(idp: IdentityProvider):
        browser, sp = Browser(idp, pki), ServiceProvider(idp, pki)
        try:
            _, _, headers = await sign_in(browser, sp, "alice", PASSWORD)
            resolve, resolve_id = protocol.artifact_resolve(SP, idp.settings.ars_url, artifact_of(headers)[0],
                                                            pki.sp_key)
            _, answer, _ = await sp.post_ars(resolve)
            keys = [idp.certificate.public_key()]
            message = protocol.read_artifact_response(answer, IDP, resolve_id, keys)
            return serialize(message), sp.request_id, keys
        finally:
            await browser.session.close()
    return idp_run(body)


def _spoil(data: bytes, how: str) -> bytes:
    response = parse(data, SOAP_LIMIT)
    original = response.find("saml:Assertion", NS)
    if how == "comment-in-nameid":
        name = original.find("saml:Subject/saml:NameID", NS)
        return serialize(response).replace(f">{name.text}<".encode(), f">{name.text}<!--x-->.evil<".encode())
    if how == "xsw-evil-first":
        evil = deepcopy(original)
        evil.find("saml:Subject/saml:NameID", NS).text = "admin"
        response.insert(response.index(original), evil)
    elif how == "xsw-original-inside-evil":
        evil = deepcopy(original)
        evil.find("saml:Subject/saml:NameID", NS).text = "admin"
        evil.remove(evil.find("ds:Signature", NS))
        response.replace(original, evil)
        evil.append(original)
    elif how == "two-assertions":
        response.append(deepcopy(original))
    elif how == "edited-nameid":
        original.find("saml:Subject/saml:NameID", NS).text = "admin"
    elif how == "sha1":
        original.find("ds:Signature/ds:SignedInfo/ds:SignatureMethod", NS).set(
            "Algorithm", "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1")
    elif how == "keyinfo-key":  # re-signed by the attacker, its certificate offered in KeyInfo
        original.find("saml:Subject/saml:NameID", NS).text = "admin"
        original.remove(original.find("ds:Signature", NS))
        xmldsig.sign(original, ATTACKER, ATTACKER.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    elif how == "doctype":
        return b'<!DOCTYPE r [<!ENTITY e "x">]>' + serialize(response)
    return serialize(response)


@pytest.mark.parametrize("how", ["comment-in-nameid", "xsw-evil-first", "xsw-original-inside-evil",
                                 "two-assertions", "edited-nameid", "sha1", "keyinfo-key", "doctype"])
def test_a_tampered_response_is_refused(idp_run, pki, how: str) -> None:
    data, request_id, keys = _issued(idp_run, pki)
    assert assertion.validate(parse(data, SOAP_LIMIT), IDP, SP, ACS, request_id, keys).user == "alice"
    with pytest.raises(XmlError):
        assertion.validate(parse(_spoil(data, how), SOAP_LIMIT), IDP, SP, ACS, request_id, keys)


@pytest.mark.parametrize("what", ["audience", "recipient", "in-response-to", "expired", "no-keys"])
def test_a_response_for_someone_else_or_too_late_is_refused(idp_run, pki, monkeypatch, what: str) -> None:
    data, request_id, keys = _issued(idp_run, pki)
    arguments = {"idp": IDP, "sp": SP, "acs_url": ACS, "request_id": request_id, "keys": keys}
    if what == "audience":
        arguments["sp"] = "https://other.test/sp"
    elif what == "recipient":
        arguments["acs_url"] = "https://other.test/acs"
    elif what == "in-response-to":
        arguments["request_id"] = "_another_request"
    elif what == "no-keys":
        arguments["keys"] = []
    elif what == "expired":
        later = protocol.now() + assertion.ASSERTION_LIFETIME + protocol.CLOCK_SKEW + dt.timedelta(seconds=1)
        monkeypatch.setattr(assertion, "now", lambda: later)
        monkeypatch.setattr(protocol, "now", lambda: later)
    with pytest.raises(XmlError):
        assertion.validate(parse(data, SOAP_LIMIT), **arguments)


def test_the_front_channel_refuses_a_deflate_bomb(idp_run, pki) -> None:
    bomb = base64.b64encode(zlib.compress(b"<" + b"a" * (1 << 20), 9)[2:-4]).decode()

    async def body(idp: IdentityProvider):
        browser = Browser(idp, pki)
        try:
            return await browser.get("/saml2/sso?SAMLRequest=" + bomb.replace("+", "%2B").replace("/", "%2F")
                                     .replace("=", "%3D"))
        finally:
            await browser.session.close()
    status, page, _ = idp_run(body)
    assert status == 400 and "<h1>" in page and "Traceback" not in page
