"""The artifact codec: the SAMLBind shape, and a decoder that refuses
everything else with ArtifactError, never another exception."""
from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmzkit_remote_access.sso.artifact import LENGTH, Artifact, ArtifactError, decode

IDP = "https://idp.example.test/saml2/metadata"


def test_a_new_artifact_has_the_samlbind_shape() -> None:
    raw = base64.b64decode(Artifact.new(IDP, 1).encode())
    assert len(raw) == 44
    assert raw[:2] == b"\x00\x04"
    assert raw[2:4] == b"\x00\x01"  # big-endian, not the ASCII "01" pysaml2 writes
    assert raw[4:24] == hashlib.sha1(IDP.encode()).digest()


def test_message_handles_do_not_repeat() -> None:
    handles = {Artifact.new(IDP, 0).handle for _ in range(100_000)}
    assert len(handles) == 100_000


@given(st.integers(0, 0xFFFF), st.binary(min_size=20, max_size=20), st.binary(min_size=20, max_size=20))
def test_decode_inverts_encode(index: int, source: bytes, handle: bytes) -> None:
    artifact = Artifact(index, source, handle)
    assert decode(artifact.encode()) == artifact


@given(st.text(max_size=200))
def test_any_text_decodes_or_is_refused_cleanly(value: str) -> None:
    try:
        artifact = decode(value)
    except ArtifactError:
        return
    assert len(artifact.raw) == LENGTH and artifact.raw[:2] == b"\x00\x04"


@given(st.binary(max_size=100).filter(lambda b: len(b) != LENGTH or b[:2] != b"\x00\x04"))
def test_other_lengths_and_type_codes_are_refused(raw: bytes) -> None:
    with pytest.raises(ArtifactError):
        decode(base64.b64encode(raw).decode())


@pytest.mark.parametrize("value", [
    Artifact.new(IDP, 0).encode() + "\n",                 # trailing junk
    Artifact.new(IDP, 0).encode().replace("A", "-", 1),  # not the base64 alphabet
    "é" * 60,
    "",
])
def test_malformed_text_is_refused(value: str) -> None:
    with pytest.raises(ArtifactError):
        decode(value)


def test_the_storage_key_is_not_the_artifact() -> None:
    artifact = Artifact.new(IDP, 0)
    assert artifact.key == hashlib.sha256(artifact.raw).hexdigest()
    assert artifact.encode() not in artifact.key
