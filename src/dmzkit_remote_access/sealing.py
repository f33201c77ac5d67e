"""Values only the key's holder can read or make (AES-256-GCM, a random
nonce each time, a purpose bound in as associated data so a value sealed
for one use is refused for another)."""
from __future__ import annotations

import base64
import binascii
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .config import ConfigError, read_secret

NONCE_BYTES = 12


def load_key(path: str) -> bytes:
    """A sealing key from its file: 32 bytes written as hex."""
    try:
        key = bytes.fromhex(read_secret(path))
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{path} must hold 32 bytes as 64 hex digits")
    return key


class Sealer:
    def __init__(self, key: bytes) -> None:
        self.aead = AESGCM(key)

    def seal_bytes(self, value: bytes, purpose: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self.aead.encrypt(nonce, value, purpose)

    def unseal_bytes(self, sealed: bytes, purpose: bytes) -> bytes | None:
        """The value, or None when `sealed` is not ours, for another purpose, or garbled."""
        try:
            return self.aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], purpose)
        except (ValueError, InvalidTag):
            return None

    def seal(self, value: bytes, purpose: bytes) -> str:
        """seal_bytes, as URL-safe base64 (a cookie's value, say)."""
        return base64.urlsafe_b64encode(self.seal_bytes(value, purpose)).decode()

    def unseal(self, sealed: str, purpose: bytes) -> bytes | None:
        try:
            raw = base64.urlsafe_b64decode(sealed.encode())
        except (binascii.Error, ValueError):
            return None
        return self.unseal_bytes(raw, purpose)
