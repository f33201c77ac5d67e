"""Keys and certificates, loaded once at start (loading an RSA key per
signature costs 45-137 ms: saml.md §6), and the fingerprints that name them."""
from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .xmldsig import PrivateKey, PublicKey, SignatureError


def spki_sha256(key: PublicKey) -> str:
    """The SHA-256 of a public key's SubjectPublicKeyInfo, hex: what binds a
    ticket to a device and a back-channel client to its SP."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def certificate_key(der: bytes) -> PublicKey:
    key = x509.load_der_x509_certificate(der).public_key()
    if not isinstance(key, PublicKey):
        raise SignatureError("only RSA and ECDSA certificates are supported")
    return key


def load_private_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, PrivateKey):
        raise SignatureError(f"{path}: only RSA and ECDSA keys are supported")
    return key


def load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())
