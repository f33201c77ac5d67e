"""Our signature profile, against xmlsec1 (an independent implementation)
and against the wrapping, algorithm and key-substitution attacks of saml.md §5."""
from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
import subprocess
from copy import deepcopy
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree

from dmzkit_remote_access.config import ConfigError
from dmzkit_remote_access.sso import xmldsig
from dmzkit_remote_access.sso.settings import load_providers, load_signing_key, read_providers
from dmzkit_remote_access.sso.xml import NS, parse, qname
from testpki import NOW, make_ca, make_leaf

ASSERTION = (
    '<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_a1" Version="2.0"'
    ' IssueInstant="2026-11-24T10:00:00Z"><saml:Issuer>https://idp.test/</saml:Issuer>'
    '<saml:Subject><saml:NameID>alice</saml:NameID></saml:Subject></saml:Assertion>'
)
RESPONSE = (
    '<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_r1" Version="2.0"'
    ' IssueInstant="2026-11-24T10:00:00Z"><saml:Issuer xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">'
    'https://idp.test/</saml:Issuer>' + ASSERTION + '</samlp:Response>'
)
XMLSEC1 = shutil.which("xmlsec1")
needs_xmlsec1 = pytest.mark.skipif(XMLSEC1 is None, reason="xmlsec1 (Debian package) is not installed")


@pytest.fixture(scope="module", params=["rsa", "ecdsa"])
def signer(request: pytest.FixtureRequest) -> tuple[xmldsig.PrivateKey, x509.Certificate]:
    """A signing key and its certificate, as metadata would publish them."""
    ca_key, ca_cert = make_ca("test ca")
    if request.param == "ecdsa":
        return make_leaf(ca_key, ca_cert, "idp.test")
    key = rsa.generate_private_key(65537, 2048)
    return key, certificate_of(key, ca_key, ca_cert)


def certificate_of(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, ca_key: ec.EllipticCurvePrivateKey,
                   ca_cert: x509.Certificate) -> x509.Certificate:
    return (x509.CertificateBuilder().subject_name(ca_cert.subject).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))


def signed_assertion(signer) -> etree._Element:
    key, cert = signer
    return xmldsig.sign(parse(ASSERTION.encode(), 4096), key, cert.public_bytes(serialization.Encoding.DER))


def test_round_trip_returns_what_was_signed(signer) -> None:
    key, _ = signer
    verified = xmldsig.verify(signed_assertion(signer), [key.public_key()])
    assert verified.findtext(".//saml:NameID", namespaces=NS) == "alice"
    assert verified.find("ds:Signature", NS) is None


def test_the_signature_follows_the_issuer(signer) -> None:
    element = signed_assertion(signer)
    assert [etree.QName(c).localname for c in element][:2] == ["Issuer", "Signature"]


@needs_xmlsec1
def test_xmlsec1_verifies_our_signature(signer, tmp_path: Path) -> None:
    key, cert = signer
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "a.xml").write_bytes(etree.tostring(signed_assertion(signer)))
    done = subprocess.run([XMLSEC1, "--verify", "--pubkey-cert-pem", str(tmp_path / "cert.pem"),
                           "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
                           str(tmp_path / "a.xml")], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def xmlsec1_signed(signer, tmp_path: Path, template: etree._Element) -> etree._Element:
    """`template` (with our Signature in it, values blanked) signed by xmlsec1, as written."""
    key, _ = signer
    for tag in ("DigestValue", "SignatureValue"):
        template.find(f".//ds:{tag}", NS).text = ""
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    (tmp_path / "t.xml").write_bytes(etree.tostring(template))
    subprocess.run([XMLSEC1, "--sign", "--privkey-pem", str(tmp_path / "key.pem"),
                    "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
                    "--output", str(tmp_path / "s.xml"), str(tmp_path / "t.xml")], check=True, capture_output=True)
    return parse((tmp_path / "s.xml").read_bytes(), 65536)


@needs_xmlsec1
def test_we_verify_a_signature_made_by_xmlsec1(signer, tmp_path: Path) -> None:
    signed = xmlsec1_signed(signer, tmp_path, signed_assertion(signer))
    assert xmldsig.verify(signed, [signer[0].public_key()]).findtext(".//saml:NameID", namespaces=NS) == "alice"


def pretty(element: etree._Element) -> etree._Element:
    """As another SP writes it: indented, text between every element."""
    etree.indent(element)
    return element


@needs_xmlsec1
def test_a_pretty_printed_document_signed_by_xmlsec1_verifies(signer, tmp_path: Path) -> None:
    signed = xmlsec1_signed(signer, tmp_path, pretty(signed_assertion(signer)))
    assert signed.find("ds:Signature", NS).tail == "\n  "
    verified = xmldsig.verify(signed, [signer[0].public_key()])
    # The enveloped-signature transform takes the Signature element, not the text after it.
    assert b"</saml:Issuer>\n  \n  <saml:Subject>" in etree.tostring(verified)


def text_around_the_signature(signer, first: bool = False) -> etree._Element:
    """Signed by us over an indented document, whose text before the Signature
    is then shared with the Signature's tail: the enveloped transform gives
    the same text. With `first`, no Issuer: the Signature is the first child."""
    key, _ = signer
    xml = ASSERTION.replace("<saml:Issuer>https://idp.test/</saml:Issuer>", "") if first else ASSERTION
    element = xmldsig.sign(pretty(parse(xml.encode(), 4096)), key)
    signature = element.find("ds:Signature", NS)
    before = element if first else signature.getprevious()
    text = before.text if first else before.tail
    signature.tail = text[1:]
    if first:
        before.text = text[:1]
    else:
        before.tail = text[:1]
    return element


@pytest.mark.parametrize("first", [False, True], ids=["after-issuer", "first-child"])
def test_text_after_the_signature_is_part_of_what_was_signed(signer, first: bool) -> None:
    assert xmldsig.verify(text_around_the_signature(signer, first), [signer[0].public_key()]) is not None


@pytest.mark.parametrize("how", ["more-text", "moved-text", "moved-signature"])
def test_text_around_the_signature_cannot_change(signer, how: str) -> None:
    element = text_around_the_signature(signer)
    issuer, signature = element[0], element[1]
    if how == "more-text":
        signature.tail += " "
    elif how == "moved-text":  # the same characters, now inside the Issuer's text
        issuer.text, signature.tail = issuer.text + signature.tail, ""
    else:  # the Signature, with its tail, at the end
        element.append(signature)
    with pytest.raises(xmldsig.SignatureError, match="digest"):
        xmldsig.verify(element, [signer[0].public_key()])


def test_a_changed_name_is_refused(signer) -> None:
    key, _ = signer
    element = signed_assertion(signer)
    element.find(".//saml:NameID", NS).text = "admin"
    with pytest.raises(xmldsig.SignatureError, match="digest"):
        xmldsig.verify(element, [key.public_key()])


def test_another_key_is_refused(signer) -> None:
    other = ec.generate_private_key(ec.SECP256R1()) if isinstance(signer[0], ec.EllipticCurvePrivateKey) \
        else rsa.generate_private_key(65537, 2048)
    with pytest.raises(xmldsig.SignatureError, match="any trusted key"):
        xmldsig.verify(signed_assertion(signer), [other.public_key()])


def test_the_key_in_keyinfo_is_never_trusted(signer) -> None:
    """An attacker signs with their own key and puts their certificate in KeyInfo."""
    ca_key, ca_cert = make_ca("attacker")
    key, cert = make_leaf(ca_key, ca_cert, "idp.test")
    forged = xmldsig.sign(parse(ASSERTION.encode(), 4096), key, cert.public_bytes(serialization.Encoding.DER))
    with pytest.raises(xmldsig.SignatureError):
        xmldsig.verify(forged, [signer[0].public_key()])


def test_no_configured_key_fails_closed(signer) -> None:
    with pytest.raises(xmldsig.SignatureError, match="no trusted key"):
        xmldsig.verify(signed_assertion(signer), [])


def test_an_unsigned_element_is_refused(signer) -> None:
    with pytest.raises(xmldsig.SignatureError):
        xmldsig.verify(parse(ASSERTION.encode(), 4096), [signer[0].public_key()])


def _wrap(signer, how: str) -> etree._Element:
    """XSW: the signed assertion moves somewhere harmless, an evil one takes its place."""
    key, cert = signer
    response = parse(RESPONSE.encode(), 65536)
    original = response.find("saml:Assertion", NS)
    xmldsig.sign(original, key, cert.public_bytes(serialization.Encoding.DER))
    evil = deepcopy(original)
    evil.find(".//saml:NameID", NS).text = "admin"
    if how == "sibling":          # evil keeps the ID and the copied signature; the original follows it
        response.insert(response.index(original), evil)
    elif how == "inside-evil":    # the original hides inside the evil assertion
        evil.remove(evil.find("ds:Signature", NS))
        response.replace(original, evil)
        evil.append(original)
    elif how == "new-id":         # evil gets another ID, the signature still points at the original
        evil.set("ID", "_evil")
        response.insert(response.index(original), evil)
    return response


@pytest.mark.parametrize("how", ["sibling", "inside-evil", "new-id"])
def test_signature_wrapping_is_refused(signer, how: str) -> None:
    response = _wrap(signer, how)
    evil = response.find("saml:Assertion", NS)
    assert evil.findtext(".//saml:NameID", namespaces=NS) == "admin"
    with pytest.raises(xmldsig.SignatureError):
        xmldsig.verify(evil, [signer[0].public_key()])


@pytest.mark.parametrize(("path", "value", "why"), [
    ("ds:SignedInfo/ds:SignatureMethod", "http://www.w3.org/2000/09/xmldsig#rsa-sha1", "signature method"),
    ("ds:SignedInfo/ds:SignatureMethod", "http://www.w3.org/2000/09/xmldsig#hmac-sha1", "signature method"),
    ("ds:SignedInfo/ds:Reference/ds:DigestMethod", "http://www.w3.org/2000/09/xmldsig#sha1", "digest method"),
    ("ds:SignedInfo/ds:CanonicalizationMethod", "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments",
     "canonicalization"),
    ("ds:SignedInfo/ds:Reference/ds:Transforms/ds:Transform", "http://www.w3.org/TR/1999/REC-xpath-19991116",
     "transforms"),
])
def test_algorithms_outside_the_profile_are_refused(signer, path: str, value: str, why: str) -> None:
    element = signed_assertion(signer)
    element.find(f"ds:Signature/{path}", NS).set("Algorithm", value)
    with pytest.raises(xmldsig.SignatureError, match=why):
        xmldsig.verify(element, [signer[0].public_key()])


def test_a_second_reference_is_refused(signer) -> None:
    element = signed_assertion(signer)
    info = element.find("ds:Signature/ds:SignedInfo", NS)
    info.append(deepcopy(info.find("ds:Reference", NS)))
    with pytest.raises(xmldsig.SignatureError, match="expected one ds:Reference"):
        xmldsig.verify(element, [signer[0].public_key()])


def test_short_rsa_keys_are_refused() -> None:
    with pytest.raises(xmldsig.SignatureError, match="2048"):
        xmldsig.sign(parse(ASSERTION.encode(), 4096), rsa.generate_private_key(65537, 1024))


def test_an_element_without_id_cannot_be_signed() -> None:
    element = parse(ASSERTION.replace(' ID="_a1"', "").encode(), 4096)
    with pytest.raises(xmldsig.SignatureError, match="no ID"):
        xmldsig.sign(element, ec.generate_private_key(ec.SECP256R1()))


def test_the_signature_value_is_raw_r_and_s_for_ecdsa() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    element = xmldsig.sign(parse(ASSERTION.encode(), 4096), key)
    assert len(base64.b64decode(element.findtext("ds:Signature/ds:SignatureValue", namespaces=NS))) == 64
    assert qname("ds", "Signature") == element[1].tag


# -- the key policy: RSA of 2048 bits or more, or ECDSA on P-256 -----------------
# Defined once, in xmldsig.method_of; the IdP's settings (its own signing key,
# the SPs' registrations) and the saml_sp module (through the IdP's loader)
# apply it, so a key is refused everywhere the same way.

P384 = ec.generate_private_key(ec.SECP384R1())
RSA1024 = rsa.generate_private_key(65537, 1024)


def test_ecdsa_keys_on_other_curves_than_p256_neither_sign_nor_verify() -> None:
    with pytest.raises(xmldsig.SignatureError, match="P-256"):
        xmldsig.method_of(P384.public_key())
    with pytest.raises(xmldsig.SignatureError, match="P-256"):
        xmldsig.sign(parse(ASSERTION.encode(), 4096), P384)


def registration(tmp_path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Path:
    """A registration as the saml_sp module writes it, with `key` signing."""
    ca_key, ca_cert = make_ca("sp ca")
    pem = certificate_of(key, ca_key, ca_cert).public_bytes(serialization.Encoding.PEM).decode()
    client = make_leaf(ca_key, ca_cert, "sp client")[1].public_bytes(serialization.Encoding.PEM).decode()
    path = tmp_path / "portal.json"
    path.write_text(json.dumps({"entity_id": "https://portal.test/sp", "acs_url": "https://portal.test/acs",
                                "signing_certificates": [pem], "tls_certificates": [client]}))
    return path


@pytest.mark.parametrize("key", [P384, RSA1024], ids=["p384", "rsa1024"])
def test_the_registry_refuses_an_sp_key_outside_the_policy(tmp_path: Path, key) -> None:
    path = registration(tmp_path, key)
    with pytest.raises(xmldsig.SignatureError) as policy:
        xmldsig.method_of(key.public_key())
    providers, problems = read_providers(str(tmp_path))
    assert providers == {}
    assert [str(p) for p in problems] == [f"{path}: signing certificate: {policy.value}"]
    with pytest.raises(ConfigError, match="signing certificate"):
        load_providers(str(tmp_path))


@pytest.mark.parametrize("key", [P384, RSA1024], ids=["p384", "rsa1024"])
def test_a_signing_key_outside_the_policy_is_a_configuration_error(tmp_path: Path, key) -> None:
    """check-config tells it (a ConfigError), rather than failing with a traceback."""
    (tmp_path / "signing.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(ConfigError, match=f"{tmp_path / 'signing.key'}: .*(P-256|2048)"):
        load_signing_key(str(tmp_path / "signing.key"))
