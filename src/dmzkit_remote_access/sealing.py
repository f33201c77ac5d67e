"""Values only the key's holder can read or make (AES-256-GCM, a random
nonce each time, a purpose bound in as associated data so a value sealed
for one use is refused for another)."""
from __future__ import annotations

import base64
import binascii
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class Sealer:
    def __init__(self, key: bytes) -> None:
        self.aead = AESGCM(key)

    def seal(self, value: bytes, purpose: bytes) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return base64.urlsafe_b64encode(nonce + self.aead.encrypt(nonce, value, purpose)).decode()

    def unseal(self, sealed: str, purpose: bytes) -> bytes | None:
        """The value, or None when `sealed` is not ours, for another purpose, or garbled."""
        try:
            raw = base64.urlsafe_b64decode(sealed.encode())
            return self.aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], purpose)
        except (binascii.Error, ValueError, InvalidTag):
            return None
