"""The IdP with an RSA-2048 signing key, as role saml_idp makes it by default
for SPs whose XML-DSig stack speaks RSA only (issue 15): the Assertion, the
ArtifactResponse that carries the Response to the SP, and the metadata are
each signed rsa-sha256 (PKCS#1 v1.5 with SHA-256), and xmlsec1, an
independent implementation, verifies them as the IdP builds them."""
from __future__ import annotations

import base64
import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from dmzkit_remote_access.sso import assertion, protocol, xmldsig
from dmzkit_remote_access.sso.metadata import idp_metadata
from dmzkit_remote_access.sso.settings import Settings, load_signing_pair
from dmzkit_remote_access.sso.xml import NS, parse
from testpki import NOW

IDP = "https://idp.test/saml2"
SP = "https://sp.test/sp"
ACS = "https://sp.test/acs"
REQUEST = "_request-1"
RESOLVE = "_resolve-1"
XMLSEC1 = shutil.which("xmlsec1")
needs_xmlsec1 = pytest.mark.skipif(XMLSEC1 is None, reason="xmlsec1 (Debian package) is not installed")
# xmlsec1 finds a signature's Reference only by an attribute it is told is an ID.
ID_ATTRIBUTES = [option for name in ("urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
                                     "urn:oasis:names:tc:SAML:2.0:protocol:ArtifactResponse",
                                     "urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor")
                 for option in ("--id-attr:ID", name)]


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory
        ) -> tuple[Settings, xmldsig.PrivateKey, x509.Certificate, Path]:
    """The IdP's settings and signing pair, read back as the IdP reads them
    from files shaped like the role's: a PKCS#1 PEM RSA key, self-signed."""
    where = tmp_path_factory.mktemp("rsa-idp")
    key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.test SAML signing")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=3650)).sign(key, hashes.SHA256()))
    (where / "signing.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.TraditionalOpenSSL,
                                                          serialization.NoEncryption()))
    (where / "signing.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    settings = Settings.from_dict({
        "entity_id": IDP, "base_url": "https://idp.test", "back_url": "https://idp.test:8443",
        "front_listen": "127.0.0.1:443", "back_listen": "127.0.0.1:8443",
        "certificate": "unused", "private_key": "unused", "ca_chain": "unused", "crl": "unused",
        "signing_key": str(where / "signing.key"), "signing_certificate": str(where / "signing.crt"),
        "providers_dir": "unused", "store_socket": "unused", "store_user": "unused",
        "store_password_file": "unused", "db_host": "unused", "db_name": "unused", "db_user": "unused",
        "db_password_file": "unused"})
    loaded_key, loaded_cert = load_signing_pair(settings)
    return settings, loaded_key, loaded_cert, where / "signing.crt"


def response(key: xmldsig.PrivateKey) -> bytes:
    login = assertion.Login(user="alice", session_index="_s1", session_not_on_or_after=None,
                            authn_context=assertion.PASSWORD, attributes={"groups": ["staff"]})
    return assertion.response(IDP, SP, ACS, REQUEST, login, key, dt.timedelta(hours=8))


def signature_methods(document: bytes) -> list[str]:
    root = parse(document, 1 << 20)
    return [m.get("Algorithm") for m in root.iterfind(".//ds:SignedInfo/ds:SignatureMethod", NS)]


def xmlsec1(document: bytes, certificate: Path, tmp_path: Path, *select: str) -> subprocess.CompletedProcess:
    """xmlsec1 --verify with the IdP's certificate as the only key (as an SP
    pins it from the metadata); `select` picks another signature than the first."""
    (tmp_path / "signed.xml").write_bytes(document)
    return subprocess.run([XMLSEC1, "--verify", "--pubkey-cert-pem", str(certificate), *ID_ATTRIBUTES,
                           *select, str(tmp_path / "signed.xml")], capture_output=True, text=True, check=False)


def test_the_idp_loads_the_roles_rsa_2048_key(idp) -> None:
    _, key, cert, _ = idp
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert xmldsig.method_of(cert.public_key()) == xmldsig.RSA_SHA256


@needs_xmlsec1
def test_the_assertion_is_signed_rsa_sha256_and_xmlsec1_verifies_it(idp, tmp_path: Path) -> None:
    _, key, cert, cert_file = idp
    document = response(key)
    # The Response itself travels unsigned inside the signed ArtifactResponse.
    assert signature_methods(document) == [xmldsig.RSA_SHA256]
    value = parse(document, 1 << 20).findtext(".//saml:Assertion/ds:Signature/ds:SignatureValue",
                                              namespaces=NS)
    assert len(base64.b64decode(value)) == 256  # one RSA-2048 block, not ECDSA's r and s
    done = xmlsec1(document, cert_file, tmp_path)
    assert done.returncode == 0, done.stderr
    # And the SP side of this code accepts it.
    login = assertion.validate(parse(document, 1 << 20), IDP, SP, ACS, REQUEST, [cert.public_key()])
    assert login.user == "alice" and login.attributes == {"groups": ["staff"]}


@needs_xmlsec1
def test_the_artifact_response_and_the_assertion_in_it_verify_with_xmlsec1(idp, tmp_path: Path) -> None:
    """The SOAP message an SP's ArtifactResolve gets: both signatures in it."""
    _, key, cert, cert_file = idp
    message = protocol.artifact_response(IDP, RESOLVE, response(key), key)
    assert signature_methods(message) == [xmldsig.RSA_SHA256, xmldsig.RSA_SHA256]
    outer = xmlsec1(message, cert_file, tmp_path)  # the first signature: the ArtifactResponse's
    assert outer.returncode == 0, outer.stderr
    inner = ("--node-xpath", "//*[local-name()='Assertion']/*[local-name()='Signature']")
    done = xmlsec1(message, cert_file, tmp_path, *inner)
    assert done.returncode == 0, done.stderr
    # Each covers what it should: a changed ArtifactResponse leaves the Assertion's intact.
    changed = message.replace(f'InResponseTo="{RESOLVE}"'.encode(), b'InResponseTo="_other"')
    assert xmlsec1(changed, cert_file, tmp_path).returncode != 0
    assert xmlsec1(changed, cert_file, tmp_path, *inner).returncode == 0
    carried = protocol.read_artifact_response(message, IDP, RESOLVE, [cert.public_key()])
    assert carried is not None and carried.get("InResponseTo") == REQUEST


@needs_xmlsec1
def test_the_metadata_publishes_the_rsa_certificate_signed_rsa_sha256(idp, tmp_path: Path) -> None:
    settings, key, cert, cert_file = idp
    document = idp_metadata(settings, cert, key, protocol.now())
    assert signature_methods(document) == [xmldsig.RSA_SHA256]
    published = parse(document, 1 << 20).findtext(
        "md:IDPSSODescriptor/md:KeyDescriptor/ds:KeyInfo/ds:X509Data/ds:X509Certificate", namespaces=NS)
    assert base64.b64decode(published) == cert.public_bytes(serialization.Encoding.DER)
    done = xmlsec1(document, cert_file, tmp_path)
    assert done.returncode == 0, done.stderr


@needs_xmlsec1
def test_xmlsec1_tells_a_changed_assertion(idp, tmp_path: Path) -> None:
    """The checks above would catch a signature that covers nothing."""
    _, key, _, cert_file = idp
    document = response(key).replace(b">alice<", b">admin<")
    assert xmlsec1(document, cert_file, tmp_path).returncode != 0
