"""TLS contexts of the collection's services: certificates of the
collection's CA, its CRL checked on every client certificate, TLS 1.2 at
least, and the peer's key as the fingerprint that names it."""
from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Collection

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def server_context(certificate: str, private_key: str, ca_chain: str, crl: str | None,
                   client_certificates: ssl.VerifyMode) -> ssl.SSLContext:
    """`client_certificates`: CERT_REQUIRED (mutual TLS), CERT_OPTIONAL (the
    browser may offer one) or CERT_NONE."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, private_key)
    if client_certificates != ssl.CERT_NONE:
        context.load_verify_locations(ca_chain)
        if crl:
            context.load_verify_locations(crl)
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        context.verify_mode = client_certificates
    return context


def client_context(ca_chain: str, certificate: str | None = None, private_key: str | None = None, *,
                   crl: str) -> ssl.SSLContext:
    """A client of the collection's servers (the IdP's channels, its
    PostgreSQL): the server's certificate must chain to `ca_chain` and not
    be on `crl`, the issuing CA's CRL (crl.pem of the ca role's `trust`).

    Only the leaf is checked, as server_context checks client certificates:
    the services are not given the root's CRL (root-crl.pem), which could
    revoke only the issuing CA itself. Without a current CRL of the issuing
    CA no server is trusted: a missing file stops the service at start, one
    past its next update fails every handshake (the CRL job keeps it fresh).

    The CRL is read here, once, when the service starts. The CRL job of the
    `trust` entry point (dmzkit-crl fetch, and the role's handler when
    Ansible installs one) restarts every unit registered in reload.d when a
    new CRL arrives (systemctl try-reload-or-restart; the services' units
    have no ExecReload), and the clients are made again with the servers."""
    context = ssl.create_default_context(cafile=ca_chain)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(crl)
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    if certificate:
        context.load_cert_chain(certificate, private_key)
    return context


def peer_certificate(transport: asyncio.BaseTransport | None) -> x509.Certificate | None:
    """The verified client certificate of a connection, if it sent one."""
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return x509.load_der_x509_certificate(der) if der else None


def spki_sha256(key: PublicKey) -> str:
    """The SHA-256 of a public key's SubjectPublicKeyInfo, hex: what binds a
    ticket to a device and a back-channel client to its SP."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def host_name(certificate: x509.Certificate) -> str | None:
    """The CN of a host's own certificate (the ca role gives hosts no OU);
    None for a person's or a desktop's, which carry one."""
    subject = certificate.subject
    if subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME):
        return None
    return common_name(certificate) or None


def person_of(certificate: x509.Certificate, units: Collection[str]) -> str | None:
    """The user a verified certificate names if it is a person's: one CN, one
    OU among `units` (the ca role gives people their group as OU, and only
    the CA decides a subject), and client authentication among its purposes.
    None for any other certificate of the CA, such as a desktop's or a
    device's with the same CN."""
    subject = certificate.subject
    names = subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    unit = subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)
    if len(names) != 1 or len(unit) != 1 or unit[0].value not in units:
        return None
    try:
        purposes = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    return str(names[0].value) if x509.ExtendedKeyUsageOID.CLIENT_AUTH in purposes else None
