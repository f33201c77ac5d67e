"""RegProto/1's frames: each message in its one encoding, and every other
frame refused with Malformed (never another exception), the reader
stopping at the first bad frame."""
from __future__ import annotations

import asyncio
import json
import random
import ssl
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmzkit_remote_access.registration import protocol
from dmzkit_remote_access.registration.protocol import (
    MAX_FRAME, Ack, Done, Err, Grant, Malformed, Reg, Server, decode, encode, read, split)

NONCE = "0123456789abcdef" * 2
SERVERS = (Server("biz1.lab.dmzkit.test", 443, "hq"), Server("198.18.3.10", 8443, "branch-1"))
MESSAGES = [
    Reg(serial="DEV-0001", nonce=NONCE, ts=1_796_000_000_000, epoch=0, cache_logins=()),
    Reg(serial="dev.2_b-3", nonce=NONCE, ts=0, epoch=7, cache_logins=(1, 2, 3), ip_hint="2001:db8::1"),
    Grant(nonce=NONCE, snonce="f" * 32, epoch=8, committed=7, account="dev-0001", password="Aa0!" * 8, servers=SERVERS,
          commit_by=60),
    Ack(epoch=8, snonce="f" * 32),
    Done(epoch=8),
    Err(code="replay", retry_after=0),
]


def payload(value: dict) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def fields(message: protocol.Message) -> dict:
    return json.loads(encode(message)[2:])


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.TYPE)
def test_each_message_reads_back_as_it_was_written(message: protocol.Message) -> None:
    frame = encode(message)
    assert int.from_bytes(frame[:2], "big") == len(frame) - 2
    assert decode(frame[2:], type(message)) == message


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.TYPE)
def test_a_message_is_refused_where_another_is_expected(message: protocol.Message) -> None:
    others = [m for m in (Reg, Grant, Ack, Done, Err) if m is not type(message)]
    with pytest.raises(Malformed):
        decode(encode(message)[2:], *others)


def test_a_grants_password_is_not_in_its_repr() -> None:
    assert "Aa0!" not in repr(MESSAGES[2]) and "Aa0!" not in str(MESSAGES[2])


@pytest.mark.parametrize("change", [
    pytest.param(lambda f: {**f, "extra": 1}, id="unknown field"),
    pytest.param(lambda f: {k: v for k, v in f.items() if k != "ts"}, id="missing field"),
    pytest.param(lambda f: {k: v for k, v in f.items() if k != "t"}, id="no type"),
    pytest.param(lambda f: {**f, "v": 2}, id="another version"),
    pytest.param(lambda f: {**f, "v": True}, id="version true"),
    pytest.param(lambda f: {**f, "t": "grant"}, id="another type"),
    pytest.param(lambda f: {**f, "t": 1}, id="type not text"),
    pytest.param(lambda f: {**f, "epoch": True}, id="bool for an integer"),
    pytest.param(lambda f: {**f, "epoch": -1}, id="negative epoch"),
    pytest.param(lambda f: {**f, "epoch": 2**53}, id="epoch too large"),
    pytest.param(lambda f: {**f, "epoch": "1"}, id="text for an integer"),
    pytest.param(lambda f: {**f, "nonce": "0123456789ABCDEF" * 2}, id="nonce in capitals"),
    pytest.param(lambda f: {**f, "nonce": "00"}, id="short nonce"),
    pytest.param(lambda f: {**f, "serial": ""}, id="empty serial"),
    pytest.param(lambda f: {**f, "serial": "a/b"}, id="serial with a slash"),
    pytest.param(lambda f: {**f, "serial": "x" * 65}, id="serial too long"),
    pytest.param(lambda f: {**f, "ip_hint": None}, id="null optional"),
    pytest.param(lambda f: {**f, "ip_hint": "198.018.0.1"}, id="address in another form"),
    pytest.param(lambda f: {**f, "ip_hint": "2001:DB8::1"}, id="address in capitals"),
    pytest.param(lambda f: {**f, "ip_hint": "fe80::1%eth0"}, id="address with a scope"),
    pytest.param(lambda f: {**f, "ip_hint": "::1%\n"}, id="address with a line break in its scope"),
    pytest.param(lambda f: {**f, "cache_logins": list(range(17))}, id="too many reports"),
    pytest.param(lambda f: {**f, "cache_logins": [1.5]}, id="a fraction"),
    pytest.param(lambda f: {**f, "cache_logins": {}}, id="object for a list"),
])
def test_a_reg_that_is_not_exactly_a_reg_is_refused(change) -> None:
    with pytest.raises(Malformed):
        decode(payload(change(fields(MESSAGES[0]))), Reg)


@pytest.mark.parametrize("change", [
    pytest.param(lambda f: {**f, "servers": []}, id="no server"),
    pytest.param(lambda f: {**f, "servers": f["servers"] * 2}, id="four servers"),
    pytest.param(lambda f: {**f, "servers": [{**f["servers"][0], "port": 0}]}, id="port 0"),
    pytest.param(lambda f: {**f, "servers": [{**f["servers"][0], "weight": 1}]}, id="unknown server field"),
    pytest.param(lambda f: {**f, "servers": [{**f["servers"][0], "host": "-x.test"}]}, id="bad host"),
    pytest.param(lambda f: {**f, "servers": ["biz1"]}, id="text for a server"),
    pytest.param(lambda f: {**f, "servers": [{**f["servers"][0], "host": "198.018.3.10"}]}, id="address as a name"),
    pytest.param(lambda f: {**f, "servers": [{**f["servers"][0], "host": "fe80::1%\u0000"}]}, id="host with a scope"),
    pytest.param(lambda f: {**f, "servers": [{**f["servers"][0], "host": "biz1.test\n"}]}, id="name and a line break"),
    pytest.param(lambda f: {**f, "password": "short"}, id="short password"),
    pytest.param(lambda f: {**f, "password": "a b" * 8}, id="password with a space"),
    pytest.param(lambda f: {**f, "account": "Root"}, id="account in capitals"),
    pytest.param(lambda f: {**f, "commit_by": 0}, id="commit_by 0"),
])
def test_a_grant_that_is_not_exactly_a_grant_is_refused(change) -> None:
    with pytest.raises(Malformed):
        decode(payload(change(fields(MESSAGES[2]))), Grant)


def test_an_err_with_an_unknown_code_is_refused() -> None:
    with pytest.raises(Malformed):
        decode(payload({"t": "err", "v": 1, "code": "teapot", "retry_after": 0}), Err)


@pytest.mark.parametrize("other", [
    pytest.param(lambda p: p.replace(b',"epoch"', b', "epoch"'), id="a space"),
    pytest.param(lambda p: b'{"v":1,' + p[1:].replace(b',"v":1', b""), id="keys out of order"),
    pytest.param(lambda p: p.replace(b'"DEV-0001"', b'"\\u0044EV-0001"'), id="an escape not needed"),
    pytest.param(lambda p: p.replace(b'"epoch":0', b'"epoch":0,"epoch":0'), id="a key twice"),
    pytest.param(lambda p: p.replace(b'"epoch":0', b'"epoch":0.0'), id="a fraction"),
    pytest.param(lambda p: p.replace(b'"epoch":0', b'"epoch":0e0'), id="an exponent"),
    pytest.param(lambda p: p.replace(b'"epoch":0', b'"epoch":NaN'), id="NaN"),
    pytest.param(lambda p: p.replace(b'"epoch":0', b'"epoch":' + b"9" * 5000), id="5000 digits"),
    pytest.param(lambda p: p + b"\n", id="a line break after"),
    pytest.param(lambda p: b"\xef\xbb\xbf" + p, id="a byte order mark"),
    pytest.param(lambda p: p.replace(b"DEV", b"D\xc3\x89V"), id="UTF-8"),
    pytest.param(lambda p: b"[" * 2000 + b"]" * 2000, id="nested 2000 deep"),
    pytest.param(lambda p: b"[]", id="a list"),
    pytest.param(lambda p: b"", id="empty"),
])
def test_a_message_in_another_encoding_is_refused(other) -> None:
    reg = encode(MESSAGES[0])[2:]
    assert decode(reg, Reg) == MESSAGES[0]
    with pytest.raises(Malformed):
        decode(other(reg), Reg)


def test_the_largest_message_fits_a_frame() -> None:
    name = ".".join(["h" * 63] * 3) + "." + "h" * 61
    # A password of quotes: each is written escaped, in two bytes.
    grant = Grant(nonce=NONCE, snonce=NONCE, epoch=2**53 - 1, committed=2**53 - 1, account="a" * 64,
                  password='"' * 128, servers=(Server(name, 65535, "s" * 63),) * 3, commit_by=3600)
    assert len(encode(grant)) - 2 == 1_589 <= MAX_FRAME
    assert decode(encode(grant)[2:], Grant) == grant


def test_a_payload_larger_than_a_frame_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(Malformed, match="payload of"):
        decode(b" " * (MAX_FRAME + 1), Reg)


def test_a_message_the_peer_would_refuse_is_not_sent() -> None:
    with pytest.raises(Malformed):
        encode(Reg(serial="no spaces", nonce=NONCE, ts=0, epoch=0, cache_logins=()))


@pytest.mark.parametrize("header", [b"\x00\x00", (MAX_FRAME + 1).to_bytes(2, "big"), b"\xff\xff"])
def test_a_frame_of_no_length_or_too_long_is_refused_from_its_header(header: bytes) -> None:
    with pytest.raises(Malformed):
        split(header)


def test_split_waits_for_the_whole_frame_and_keeps_what_follows() -> None:
    frame = encode(MESSAGES[3])
    assert split(frame[:1]) is None
    assert split(frame[:-1]) is None
    assert split(frame + b"rest") == (frame[2:], b"rest")


def reader_of(*chunks: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    if eof:
        reader.feed_eof()
    return reader


def test_read_takes_one_frame_and_leaves_the_next() -> None:
    async def run() -> None:
        reader = reader_of(encode(MESSAGES[3]), encode(MESSAGES[4]))
        assert await read(reader, 1, Ack) == MESSAGES[3]
        assert await read(reader, 1, Done, Err) == MESSAGES[4]
    asyncio.run(run())


@pytest.mark.parametrize("bad", [
    pytest.param(lambda f: f[:1], id="half a header"),
    pytest.param(lambda f: f[:-1], id="a payload cut short"),
    pytest.param(lambda f: b"\x20\x00" + f[2:], id="a header too long"),
    pytest.param(lambda f: b"\x00\x00", id="a header of 0"),
])
@pytest.mark.parametrize("then_eof", [True, False])
def test_read_refuses_a_bad_frame_whatever_follows(bad, then_eof: bool) -> None:
    async def run() -> None:
        good = encode(MESSAGES[3])
        reader = reader_of(bad(good), *([] if then_eof else [good]), eof=then_eof)
        with pytest.raises(Malformed):
            await read(reader, 1, Ack)
    asyncio.run(run())


@pytest.mark.parametrize("failure", [ConnectionResetError(), ssl.SSLError("bad record mac")])
def test_a_connection_that_fails_mid_frame_gave_a_malformed_frame(failure: Exception) -> None:
    async def run() -> None:
        reader = reader_of(encode(MESSAGES[4])[:3], eof=False)
        reader.set_exception(failure)
        with pytest.raises(Malformed):
            await read(reader, 1, Done)
    asyncio.run(run())


def test_read_gives_up_on_a_frame_that_trickles_past_its_deadline() -> None:
    async def run() -> None:
        reader = reader_of(encode(MESSAGES[4])[:3], eof=False)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            await read(reader, 0.2, Done)
        assert time.monotonic() - start < 1
    asyncio.run(run())


addresses = st.one_of(st.ip_addresses().map(str), st.none())
regs = st.builds(Reg, serial=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z"),
                 nonce=st.from_regex(r"\A[0-9a-f]{32}\Z"), ts=st.integers(0, 2**53 - 1),
                 epoch=st.integers(0, 2**53 - 1), cache_logins=st.lists(st.integers(0, 2**53 - 1), max_size=16)
                 .map(tuple), ip_hint=addresses)


@given(regs)
def test_any_reg_reads_back_as_it_was_written(reg: Reg) -> None:
    assert decode(encode(reg)[2:], Reg) == reg


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_are_refused_cleanly(data: bytes) -> None:
    try:
        message = decode(data, Reg, Grant, Ack, Done, Err)
    except Malformed:
        return
    assert encode(message)[2:] == data


FUZZ_FRAMES = 100_000


def mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(6)
        at = rng.randrange(len(data) + 1)
        if kind == 0 and data:  # a bit flipped
            at = min(at, len(data) - 1)
            data[at] ^= 1 << rng.randrange(8)
        elif kind == 1:  # cut short
            del data[at:]
        elif kind == 2:  # bytes inserted
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        elif kind == 3:  # JSON punctuation inserted
            data[at:at] = rng.choice([b"{", b"}", b"[", b"]", b",", b":", b'"', b"\\", b"0", b"-", b"e"])
        elif kind == 4:  # a field of another message spliced in
            other = encode(rng.choice(MESSAGES))
            start = rng.randrange(2, len(other))
            data[at:at] = other[start:start + rng.randint(1, 40)]
        else:  # a byte set to any value
            if data:
                data[min(at, len(data) - 1)] = rng.randrange(256)
    return bytes(data)


def test_fuzz_every_mutated_frame_is_a_message_in_its_one_form_or_refused(capsys) -> None:
    """Frames made from real ones by flips, cuts, insertions and splices (in
    the payload under a header that fits it, or anywhere): each is refused
    with Malformed, waits for more bytes, or is a message that encodes back
    to exactly those bytes."""
    rng = random.Random(20261207)
    frames = [encode(m) for m in MESSAGES]
    counts = {"refused": 0, "incomplete": 0, "accepted": 0}
    for i in range(FUZZ_FRAMES):
        frame = rng.choice(frames)
        if i % 4:  # the payload changed, under a header that fits it
            changed = mutate(rng, frame[2:])[:MAX_FRAME + 1]
            data = len(changed).to_bytes(2, "big") + changed
        else:  # the frame changed, header and all
            data = mutate(rng, frame)
        try:
            parts = split(data)
            if parts is None:
                counts["incomplete"] += 1
                continue
            message = decode(parts[0], Reg, Grant, Ack, Done, Err)
        except Malformed:
            counts["refused"] += 1
            continue
        assert encode(message)[2:] == parts[0]
        counts["accepted"] += 1
    assert sum(counts.values()) == FUZZ_FRAMES
    assert counts["refused"] > FUZZ_FRAMES // 2
    with capsys.disabled():
        print(f"\nRegProto/1 fuzz: {FUZZ_FRAMES:,} mutated frames: {counts['refused']:,} refused,"
              f" {counts['incomplete']:,} incomplete, {counts['accepted']:,} well-formed messages")
