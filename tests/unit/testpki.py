"""A throw-away PKI for unit tests: a CA, leaf certificates and CRLs made
with cryptography, shaped like the ones the ca role issues."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC).replace(microsecond=0)


def make_ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_leaf(ca_key, ca_cert: x509.Certificate, name: str, *, server: bool = False,
              serial: int | None = None, not_after: dt.datetime | None = None,
              organization: str | None = None, unit: str | None = None, common_name: str | None = None
              ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf named `name` (or `common_name`), under `unit` as its OU if given."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = ([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)] if organization else []) + (
        [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit)] if unit else []) + [
        x509.NameAttribute(NameOID.COMMON_NAME, common_name or name)]
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(serial or x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(not_after or NOW + dt.timedelta(days=7))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def make_crl(key, cert, last: dt.datetime, nxt: dt.datetime, serials=(1234,), number: int | None = 7):
    builder = x509.CertificateRevocationListBuilder().issuer_name(cert.subject).last_update(last).next_update(nxt)
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last - dt.timedelta(hours=1)).build()
        )
    if number is not None:
        builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    return builder.sign(key, hashes.SHA256())


def pem(obj) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)


def write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
