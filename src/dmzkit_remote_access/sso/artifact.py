"""SAML 2.0 type 0x0004 artifacts (SAMLBind §3.6.4).

    artifact = base64(0x0004 ‖ EndpointIndex (2 bytes, big-endian)
                      ‖ SourceID = SHA-1(issuer entityID) ‖ MessageHandle (20 random bytes))

44 bytes, 60 base64 characters. The decoder is strict and total: anything
but exactly that shape raises ArtifactError, whatever the input.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass

TYPE_CODE = b"\x00\x04"
LENGTH = 44
HANDLE_LENGTH = 20


class ArtifactError(ValueError):
    """Not a type 0x0004 artifact."""


def source_id(entity_id: str) -> bytes:
    return hashlib.sha1(entity_id.encode()).digest()  # noqa: S324 - SHA-1 is what SAMLBind prescribes for SourceID


@dataclass(frozen=True)
class Artifact:
    index: int
    source_id: bytes
    handle: bytes

    @classmethod
    def new(cls, issuer: str, index: int) -> Artifact:
        if not 0 <= index <= 0xFFFF:
            raise ArtifactError("the endpoint index must fit in two bytes")
        return cls(index, source_id(issuer), secrets.token_bytes(HANDLE_LENGTH))

    @property
    def raw(self) -> bytes:
        return TYPE_CODE + self.index.to_bytes(2, "big") + self.source_id + self.handle

    def encode(self) -> str:
        return base64.b64encode(self.raw).decode()

    @property
    def key(self) -> str:
        """What the artifact is stored and logged under: never the artifact itself."""
        return hashlib.sha256(self.raw).hexdigest()


def decode(value: str) -> Artifact:
    if len(value) > 2 * LENGTH:
        raise ArtifactError("too long for an artifact")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise ArtifactError("not base64") from e
    if len(raw) != LENGTH:
        raise ArtifactError(f"an artifact is {LENGTH} bytes, not {len(raw)}")
    if raw[:2] != TYPE_CODE:
        raise ArtifactError("not a type 0x0004 artifact")
    return Artifact(int.from_bytes(raw[2:4], "big"), raw[4:24], raw[24:])
