"""The audit shipper against a real user database: the spool lines FreeRADIUS
writes (its linelog format) become audit records, a database that is away
loses none of them, a long spool goes in batches and a failed one resumes
where it stopped, a line FreeRADIUS is still writing is waited for, and a
line cut short is kept aside without taking the next record with it."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

import local_servers
from test_password import settings

from dmzkit_remote_access.aaa import audit
from dmzkit_remote_access.aaa.audit import EVENT, BadLine, Shipper, parse, take
from dmzkit_remote_access.config import ConfigError

WHEN = 1796636063.123456


def line(user: str, outcome: str = "success", reason: str = "password remembered", profile: str = "staff",
         at: float = WHEN) -> bytes:
    """A record as FreeRADIUS's dmzkit_audit writes it (values escaped as rlm_expr's escape does)."""
    def escape(value: str) -> str:
        safe = set("@abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_: /")
        return "".join(c if c in safe else "".join(f"={b:02X}" for b in c.encode()) for c in value)
    return "\t".join(["1", f"{at:.6f}", outcome, escape(user), "gw1", escape(reason), escape(profile)]).encode() + b"\n"


def records(userdb: dict[str, str], subject: str) -> list[tuple[str, str, dict]]:
    rows = local_servers.superuser_rows(
        userdb, "SELECT actor, outcome, detail::text FROM dmzkit.audit_log WHERE subject = $1 AND event = $2 "
                "ORDER BY id", subject, EVENT)
    return [(actor, outcome, json.loads(detail)) for actor, outcome, detail in rows]


def ship_once(shipper: Shipper) -> int:
    work = take(shipper.settings.audit_spool)
    assert work is not None
    return asyncio.run(shipper.ship(work))


def test_the_answers_become_audit_records_and_the_spool_goes(userdb, tmp_path) -> None:
    spool = tmp_path / "answers"
    spool.write_bytes(line("o'brien\tx") + line("o'brien\tx", "failure", "no profile", ""))
    shipper = Shipper(settings(userdb, tmp_path, audit_spool=str(spool)))
    assert ship_once(shipper) == 2
    received = datetime.fromtimestamp(WHEN, timezone.utc).isoformat()
    assert records(userdb, "o'brien\tx") == [
        (userdb["user"], "success", {"nas": "gw1", "reason": "password remembered", "profile": "staff",
                                     "received_at": received}),
        (userdb["user"], "failure", {"nas": "gw1", "reason": "no profile", "received_at": received})]
    assert not spool.exists() and not Path(f"{spool}.work").exists()
    assert take(str(spool)) is None


def test_a_database_that_is_away_keeps_the_records_for_the_next_round(userdb, tmp_path) -> None:
    spool = tmp_path / "answers"
    spool.write_bytes(line("kept-user"))
    away = Shipper(settings(userdb, tmp_path, audit_spool=str(spool), db_host=str(tmp_path), timeout=2))
    work = take(str(spool))
    with pytest.raises(OSError):
        asyncio.run(away.ship(work))
    # FreeRADIUS has begun a new spool meanwhile; the file left over goes first.
    spool.write_bytes(line("kept-user", reason="password checked"))
    assert take(str(spool)) == work
    assert ship_once(Shipper(settings(userdb, tmp_path, audit_spool=str(spool)))) == 1
    assert ship_once(Shipper(settings(userdb, tmp_path, audit_spool=str(spool)))) == 1
    assert [detail["reason"] for _, _, detail in records(userdb, "kept-user")] == [
        "password remembered", "password checked"]


@pytest.mark.parametrize("bad", [b"2\t1.000000\tsuccess\ta\tgw1\tr\tp\n", b"1\t1.000000\tsuccess\ta\tgw1\tr\n",
                                 b"1\t1.000000\tmaybe\ta\tgw1\tr\tp\n", b"1\tnow\tsuccess\ta\tgw1\tr\tp\n",
                                 b"1\t1796636063.100000\tsuccess\ta\tgw1\tr\tp"])
def test_a_line_that_is_not_a_record_is_kept_aside_and_the_others_shipped(userdb, tmp_path, bad: bytes) -> None:
    with pytest.raises(BadLine):
        parse(bad)
    spool, subject = tmp_path / "answers", f"after-{tmp_path.name}"
    spool.write_bytes(bad + line(subject) if bad.endswith(b"\n") else line(subject) + bad)
    shipper = Shipper(settings(userdb, tmp_path, audit_spool=str(spool)))
    assert ship_once(shipper) == 1
    assert len(records(userdb, subject)) == 1
    assert (tmp_path / "answers.bad").read_bytes() == (bad if bad.endswith(b"\n") else bad + b"\n")


def test_a_line_cut_short_does_not_take_the_next_record_with_it(userdb, tmp_path) -> None:
    """linelog takes a short write (a full disk) for a whole one: the next
    record then follows the cut one on the same line. One record that
    still has seven fields when cut is no record either."""
    spool, subject = tmp_path / "answers", f"cut-{tmp_path.name}"
    cut = line(subject, profile="staff")[:-4]
    spool.write_bytes(cut + line(subject, reason="password checked") + line(subject)[:-1])
    shipper = Shipper(settings(userdb, tmp_path, audit_spool=str(spool)))
    assert ship_once(shipper) == 1
    assert [detail["reason"] for _, _, detail in records(userdb, subject)] == ["password checked"]
    assert (tmp_path / "answers.bad").read_bytes() == cut + b"\n" + line(subject)


def test_a_long_spool_goes_in_batches_and_a_failed_one_resumes_where_it_stopped(userdb, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(audit, "BATCH", 4)
    spool, subject = tmp_path / "answers", f"long-{tmp_path.name}"
    spool.write_bytes(b"".join(line(subject, reason=f"answer {i}") for i in range(10)))
    shipper = Shipper(settings(userdb, tmp_path, audit_spool=str(spool)))
    copy, copies = shipper._copy, []

    async def copy_twice_then_fail(answers: list) -> None:
        if len(copies) == 2:
            raise OSError("the database went away")
        copies.append(len(answers))
        await copy(answers)
    monkeypatch.setattr(shipper, "_copy", copy_twice_then_fail)
    work = take(str(spool))
    with pytest.raises(OSError):
        asyncio.run(shipper.ship(work))
    assert copies == [4, 4] and len(records(userdb, subject)) == 8
    monkeypatch.setattr(shipper, "_copy", copy)
    shipper.connection = None  # its loop is gone
    assert asyncio.run(shipper.ship(take(str(spool)))) == 2
    assert [detail["reason"] for _, _, detail in records(userdb, subject)] == [f"answer {i}" for i in range(10)]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("answers")) == []


def test_an_old_note_does_not_skip_a_new_spool(userdb, tmp_path) -> None:
    """A note left without its file (the shipper stopped between removing
    the two) must not make the next file start past its beginning."""
    spool, subject = tmp_path / "answers", f"note-{tmp_path.name}"
    (tmp_path / "answers.work.shipped").write_text("100000")
    spool.write_bytes(line(subject))
    assert ship_once(Shipper(settings(userdb, tmp_path, audit_spool=str(spool)))) == 1
    assert len(records(userdb, subject)) == 1


def test_something_that_is_not_a_file_at_the_spool_is_left_alone(tmp_path, caplog) -> None:
    (tmp_path / "answers").mkdir()
    assert take(str(tmp_path / "answers")) is None
    assert (tmp_path / "answers").is_dir() and "not a regular file" in caplog.text


WRITER = """
import fcntl, sys, time
with open(sys.argv[1], "ab") as spool:
    fcntl.lockf(spool, fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(0.5)
    spool.write(sys.stdin.buffer.read())
"""


def test_a_line_being_written_when_the_spool_is_taken_is_shipped_whole(userdb, tmp_path) -> None:
    """FreeRADIUS holds the file's lock while it writes a line: the shipper
    takes the file, then waits for the lock, so the line arrives whole."""
    spool = tmp_path / "answers"
    spool.write_bytes(line("writer-first"))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(spool)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    writer.stdin.write(line("writer-late"))
    writer.stdin.close()
    assert writer.stdout.readline() == b"locked\n"
    shipper = Shipper(settings(userdb, tmp_path, audit_spool=str(spool)))
    assert ship_once(shipper) == 2
    assert writer.wait(5) == 0
    assert len(records(userdb, "writer-late")) == 1


def test_the_service_ships_what_appears_while_it_runs(userdb, tmp_path) -> None:
    spool = tmp_path / "answers"
    shipper = Shipper(settings(userdb, tmp_path, audit_spool=str(spool), audit_interval=0.05))

    async def run() -> None:
        service = asyncio.ensure_future(shipper.run())
        try:
            await asyncio.sleep(0.2)
            spool.write_bytes(line("while-running"))
            for _ in range(100):
                await asyncio.sleep(0.05)
                if not spool.exists() and not Path(f"{spool}.work").exists():
                    break
        finally:
            service.cancel()
    asyncio.run(run())
    assert len(records(userdb, "while-running")) == 1


@pytest.mark.parametrize(("changes", "message"), [
    ({"audit_spool": "answers"}, "absolute"),
    ({"audit_spool": "/var/lib/x/answers", "audit_interval": 0}, "audit_interval"),
    ({}, "audit_spool is needed"),
])
def test_settings_the_shipper_cannot_use_are_refused(changes: dict, message: str) -> None:
    from dmzkit_remote_access.aaa.settings import Settings

    raw = {"db_host": "/run/postgresql", "db_name": "dmzkit", "db_user": "aaa", "db_passfile": "/x"} | changes
    with pytest.raises(ConfigError, match=message):
        Shipper(Settings.from_dict(raw))
