"""The device's cache: sealed to the device's key and serial, every edit
and truncation detected, never older than the one on disk, 0600, synced."""
from __future__ import annotations

import os
import stat
from dataclasses import replace
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dmzkit_remote_access.registration import cache as cache_module
from dmzkit_remote_access.registration.cache import Cache, CacheError, cache_key, load, save
from dmzkit_remote_access.registration.protocol import Server
from dmzkit_remote_access.registration.rotation import Kept
from dmzkit_remote_access.sealing import Sealer

SERIAL = "DEV-0001"


def device_key() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


KEY = cache_key(device_key())
CACHE = Cache(serial=SERIAL, account="dev-0001", kept=Kept(current=(4, "c" * 32), candidate=(5, "n" * 32)),
              servers=(Server("biz1.lab.dmzkit.test", 443, "hq"),), cache_logins=(1_796_000_000_000,))


def keeping(kept: Kept) -> Cache:
    """The test cache with other passwords, and no cache logins."""
    return replace(CACHE, kept=kept, cache_logins=())


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


def test_a_cache_reads_back_as_it_was_written(path: str) -> None:
    save(path, CACHE, KEY)
    assert load(path, SERIAL, KEY) == CACHE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(os.listdir(os.path.dirname(path))) == ["cache", "cache.lock"]


def test_a_cache_holds_no_password_in_the_clear_and_none_in_its_repr(path: str) -> None:
    save(path, CACHE, KEY)
    data = Path(path).read_bytes()
    assert b"c" * 16 not in data and b"dev-0001" not in data
    assert "c" * 16 not in repr(CACHE)


def test_a_cache_before_the_first_grant_and_before_the_first_commit_reads_back(path: str) -> None:
    empty = Cache(serial=SERIAL, account=None, kept=Kept(), servers=())
    save(path, empty, KEY)
    assert load(path, SERIAL, KEY) == empty
    first = keeping(Kept(candidate=(1, "f" * 32)))
    save(path, first, KEY)
    assert load(path, SERIAL, KEY) == first


def test_every_bit_flipped_and_every_truncation_is_detected(path: str) -> None:
    save(path, CACHE, KEY)
    data = Path(path).read_bytes()
    for bit in range(len(data) * 8):
        edited = bytearray(data)
        edited[bit // 8] ^= 1 << (bit % 8)
        Path(path).write_bytes(edited)
        with pytest.raises(CacheError):
            load(path, SERIAL, KEY)
    for length in range(len(data)):
        Path(path).write_bytes(data[:length])
        with pytest.raises(CacheError):
            load(path, SERIAL, KEY)
    Path(path).write_bytes(data + b"\0")
    with pytest.raises(CacheError):
        load(path, SERIAL, KEY)


def test_a_cache_does_not_open_on_another_device_or_for_another_serial(path: str) -> None:
    save(path, CACHE, KEY)
    with pytest.raises(CacheError):
        load(path, SERIAL, cache_key(device_key()))
    with pytest.raises(CacheError):
        load(path, "DEV-0002", KEY)


def test_no_cache_is_an_error(path: str) -> None:
    with pytest.raises(CacheError):
        load(path, SERIAL, KEY)


def test_an_older_cache_is_not_written_over_a_newer_one(path: str) -> None:
    save(path, CACHE, KEY)
    older = keeping(Kept(current=(4, "c" * 32)))
    with pytest.raises(CacheError):
        save(path, older, KEY)
    assert load(path, SERIAL, KEY) == CACHE
    newer = keeping(Kept(current=(5, "n" * 32)))
    save(path, newer, KEY)
    assert load(path, SERIAL, KEY) == newer


def test_a_garbled_cache_is_replaced(path: str) -> None:
    Path(path).write_bytes(b"garbage")
    save(path, CACHE, KEY)
    assert load(path, SERIAL, KEY) == CACHE


def test_only_the_last_cache_logins_are_kept(path: str) -> None:
    many = replace(CACHE, cache_logins=tuple(range(40)))
    save(path, many, KEY)
    assert load(path, SERIAL, KEY).cache_logins == tuple(range(24, 40))


def test_a_failed_write_leaves_the_old_cache_and_no_temporary(path: str, monkeypatch) -> None:
    save(path, CACHE, KEY)

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full_disk)
    newer = keeping(Kept(current=(5, "n" * 32)))
    with pytest.raises(OSError):
        save(path, newer, KEY)
    monkeypatch.undo()
    assert load(path, SERIAL, KEY) == CACHE
    assert sorted(os.listdir(os.path.dirname(path))) == ["cache", "cache.lock"]


def test_the_serial_is_sealed_in_so_a_cache_names_no_other(path: str) -> None:
    """A cache sealed for one serial that says it is another's: refused by
    the seal itself, before its content is read."""
    other = Cache(serial="DEV-0002", account="dev-0002", kept=CACHE.kept, servers=CACHE.servers)
    Path(path).write_bytes(Sealer(KEY).seal_bytes(other._json(), cache_module._purpose(SERIAL)))
    with pytest.raises(CacheError, match="not this device's cache"):
        load(path, "DEV-0002", KEY)


@pytest.mark.parametrize("kind", ["fifo", "directory", "link"])
def test_a_cache_path_that_is_not_a_file_is_refused_at_once(path: str, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        os.mkdir(path)
    else:
        save(path + ".real", CACHE, KEY)
        os.symlink(path + ".real", path)
    with pytest.raises(CacheError):
        load(path, SERIAL, KEY)


def test_saves_at_once_never_leave_the_older(path: str) -> None:
    caches = [keeping(Kept(current=(e, "c" * 32))) for e in range(1, 41)]
    with ThreadPoolExecutor(8) as pool:
        for outcome in pool.map(lambda c: _try_save(path, c), reversed(caches)):
            assert outcome in ("saved", "older")
    assert load(path, SERIAL, KEY).kept.stored == 40


def _try_save(path: str, cache: Cache) -> str:
    try:
        save(path, cache, KEY)
        return "saved"
    except CacheError:
        return "older"


def test_the_file_and_then_its_directory_are_synced(path: str, monkeypatch) -> None:
    synced: list[bool] = []
    fsync = os.fsync

    def recorded(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        fsync(fd)
    monkeypatch.setattr(os, "fsync", recorded)
    save(path, CACHE, KEY)
    assert synced == [False, True]
