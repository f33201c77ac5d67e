from __future__ import annotations

import ipaddress

import pytest
from ansible.errors import AnsibleFilterError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ansible_collections.dmzkit.remote_access.plugins.filter.certificate_request import csr_deviations

SUBJECT = [{"organizationName": "dmzkit"}, {"commonName": "gw1.lab.example"}]
NAMES = ["DNS:gw1.lab.example", "IP:198.18.1.11"]
POLICY = {"subject": SUBJECT, "subject_alt_names": NAMES, "key_usage": ["digitalSignature", "keyEncipherment"],
          "extended_key_usage": ["serverAuth", "1.3.6.1.5.5.7.3.17"], "key_type": "ECC", "key_curve": "secp256r1"}
SERVER_USAGE = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                             data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                             encipher_only=False, decipher_only=False)
SERVER_PURPOSE = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, x509.ObjectIdentifier("1.3.6.1.5.5.7.3.17")])


def request(subject: x509.Name | None = None, names: list[x509.GeneralName] | None = None, usage=SERVER_USAGE,
            purpose=SERVER_PURPOSE, ca: bool = False, extra: x509.ExtensionType | None = None, key=None,
            drop: type | None = None) -> str:
    """The request openssl_csr_pipe makes from POLICY, with one thing changed."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = subject or x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dmzkit"),
                                    x509.NameAttribute(NameOID.COMMON_NAME, "gw1.lab.example")])
    names = names if names is not None else [x509.DNSName("gw1.lab.example"),
                                             x509.IPAddress(ipaddress.ip_address("198.18.1.11"))]
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    for value, critical in ((x509.SubjectAlternativeName(names), False),
                            (x509.BasicConstraints(ca=ca, path_length=None), True),
                            (usage, True), (purpose, False), (extra, False)):
        if value is not None and not (drop and isinstance(value, drop)):
            builder = builder.add_extension(value, critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def test_the_request_the_ca_decided_passes():
    assert csr_deviations(request(), **POLICY) == []


def test_names_in_another_order_pass():
    ip = x509.IPAddress(ipaddress.ip_address("198.18.1.11"))
    assert csr_deviations(request(names=[ip, x509.DNSName("gw1.lab.example")]), **POLICY) == []


@pytest.mark.parametrize(("changed", "says"), [
    ({"subject": x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dmzkit"),
                            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "staff"),
                            x509.NameAttribute(NameOID.COMMON_NAME, "alice")])}, "subject CN=alice,OU=staff,O=dmzkit"),
    ({"names": [x509.DNSName("gw1.lab.example"), x509.DNSName("idp1.lab.example"),
                x509.IPAddress(ipaddress.ip_address("198.18.1.11"))]}, "idp1.lab.example"),
    ({"names": [x509.DNSName("gw1.lab.example")]}, "asks for the names [gw1.lab.example]"),
    ({"purpose": x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])},
     "extendedKeyUsage"),
    ({"usage": x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                             data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                             encipher_only=False, decipher_only=False)}, "keyUsage"),
    ({"ca": True}, "basicConstraints"),
    ({"extra": x509.NameConstraints(permitted_subtrees=[x509.DNSName("lab.example")], excluded_subtrees=None)},
     "2.5.29.30 (nameConstraints)"),
    ({"drop": x509.ExtendedKeyUsage}, "lacks the extendedKeyUsage"),
    ({"drop": x509.SubjectAlternativeName}, "lacks the subject alternative names"),
    ({"key": ec.generate_private_key(ec.SECP384R1())}, "ECC secp384r1; the CA accepts ECC secp256r1 only"),
    ({"key": rsa.generate_private_key(65537, 2048)}, "RSA 2048 bits; the CA accepts ECC"),
], ids=["subject", "extra-name", "missing-name", "client-purpose", "cert-sign", "ca", "extra-extension",
        "no-purpose-means-any", "no-names", "other-curve", "other-type"])
def test_anything_else_is_a_deviation(changed, says):
    deviations = csr_deviations(request(**changed), **POLICY)
    assert len(deviations) == 1 and says in deviations[0], deviations


def test_rsa_policy_is_a_minimum_size():
    policy = {**POLICY, "key_type": "RSA", "key_curve": None, "key_size": 3072}
    assert csr_deviations(request(key=rsa.generate_private_key(65537, 3072)), **policy) == []
    assert "RSA 2048 bits" in csr_deviations(request(key=rsa.generate_private_key(65537, 2048)), **policy)[0]


def test_a_forged_signature_is_a_deviation():
    pem = request()
    der = x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER)
    forged = x509.load_der_x509_csr(der[:-2] + bytes([der[-2] ^ 1, der[-1]]))
    assert "its signature does not verify" in csr_deviations(forged.public_bytes(serialization.Encoding.PEM).decode(),
                                                             **POLICY)


def test_garbage_is_a_deviation_not_a_traceback():
    assert "not a readable PEM certificate request" in csr_deviations("nonsense", **POLICY)[0]


@pytest.mark.parametrize(("policy", "message"), [
    ({"key_usage": ["everything"]}, "key usage 'everything'"),
    ({"extended_key_usage": ["anyPurpose!"]}, "extended key usage 'anyPurpose!'"),
    ({"subject": [{"CN": "x"}]}, "subject attribute 'CN'"),
    ({"subject_alt_names": ["RID:1.2.3"]}, "type must be DNS, IP, email or URI"),
])
def test_a_bad_profile_is_an_error(policy, message):
    with pytest.raises(AnsibleFilterError, match=message):
        csr_deviations(request(), **{**POLICY, **policy})
