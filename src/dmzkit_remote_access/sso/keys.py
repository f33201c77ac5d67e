"""The fingerprints that name keys."""
from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization

from .xmldsig import PublicKey


def spki_sha256(key: PublicKey) -> str:
    """The SHA-256 of a public key's SubjectPublicKeyInfo, hex: what binds a
    ticket to a device and a back-channel client to its SP."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()
