"""The audit log's hash chains (migration 0006) on real PostgreSQL: the
registration service's records chain and verify; a record edited, removed
or reordered, or the newest cut off, is found by dmzkit-audit-verify;
writers can neither place a record in a chain nor write another's chain."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from reglab import SERIALS, Lab, client_tls, exchange, reg, run, sql, state

from dmzkit_remote_access import audit_chain
from dmzkit_remote_access.registration import protocol

SRC = Path(__file__).resolve().parents[3] / "src"
AUDITOR = "auditor_unit"
WRITER = "registration_server_unit"  # a member of dmzkit_registration (reglab)


@pytest.fixture(scope="module")
def auditor(lab: Lab) -> str:
    sql(lab.userdb, f"DO $$ BEGIN CREATE ROLE {AUDITOR} LOGIN IN ROLE dmzkit_auditor; "
                    "EXCEPTION WHEN duplicate_object THEN NULL; END $$;")
    return AUDITOR


def verify(lab: Lab, chain: str) -> audit_chain.Verdict:
    async def main() -> audit_chain.Verdict:
        conn = await asyncpg.connect(host=lab.userdb["host"], database="dmzkit", user=AUDITOR)
        try:
            return await audit_chain.verify(conn, chain)
        finally:
            await conn.close()
    return asyncio.run(main())


def write(lab: Lab, user: str, event: str, count: int = 1, **columns: str) -> None:
    names = ", ".join(["subject", "event", "outcome", *columns])
    values = ", ".join(["$1", "$2", "'success'", *(f"'{v}'" for v in columns.values())])

    async def main() -> None:
        conn = await asyncpg.connect(host=lab.userdb["host"], database="dmzkit", user=user)
        try:
            for n in range(count):
                await conn.execute(f"INSERT INTO audit_log ({names}) VALUES ({values})", f"unit-{n}", event)
        finally:
            await conn.close()
    asyncio.run(main())


def new_chain(lab: Lab, name: str, records: int = 3) -> None:
    """A chain of its own for event unit.<name>, written by the service's
    role, with `records` records."""
    sql(lab.userdb, f"INSERT INTO dmzkit.audit_chains (name, writer) VALUES ('{name}', 'dmzkit_registration');"
                    f"CREATE TRIGGER audit_log_chain_{name} BEFORE INSERT ON dmzkit.audit_log FOR EACH ROW "
                    f"WHEN (NEW.event = 'unit.{name}') EXECUTE FUNCTION dmzkit.audit_log_chain('{name}');")
    write(lab, WRITER, f"unit.{name}", records)


def tamper(lab: Lab, statement: str) -> None:
    """As the database's superuser, past the append-only triggers."""
    sql(lab.userdb, f"SET session_replication_role = replica; {statement}")


def test_the_services_records_chain_and_verify(lab: Lab, auditor: str) -> None:
    before = verify(lab, "registration")
    for serial in SERIALS:
        first = protocol.encode(reg(serial, epoch=state(lab, serial)[0]))
        run(lab, lambda port: exchange(port, client_tls(lab, serial), first))
    after = verify(lab, "registration")
    assert before.verified and after.verified, after
    assert after.records == before.records + 2 and after.head != before.head


@pytest.mark.parametrize(("name", "statement", "why"), [
    ("edited", "UPDATE dmzkit.audit_log SET detail = '{\"reason\": \"nothing\"}' WHERE chain = 'edited' AND chain_seq = 2",
     "record 2 is not as it was written"),
    ("subject", "UPDATE dmzkit.audit_log SET subject = 'unit-9' WHERE chain = 'subject' AND chain_seq = 3",
     "record 3 is not as it was written"),
    ("removed", "DELETE FROM dmzkit.audit_log WHERE chain = 'removed' AND chain_seq = 2", "record 2 is missing"),
    ("cut", "DELETE FROM dmzkit.audit_log WHERE chain = 'cut' AND chain_seq = 3", "the records end at 2, the head at 3"),
    ("swapped", "UPDATE dmzkit.audit_log SET chain_seq = 0 WHERE chain = 'swapped' AND chain_seq = 1;"
                "UPDATE dmzkit.audit_log SET chain_seq = 1 WHERE chain = 'swapped' AND chain_seq = 2;"
                "UPDATE dmzkit.audit_log SET chain_seq = 2 WHERE chain = 'swapped' AND chain_seq = 0;",
     "record 1 does not follow record 0"),
])
def test_a_changed_chain_is_found_where_it_changed(lab: Lab, auditor: str, name: str, statement: str, why: str) -> None:
    new_chain(lab, name)
    assert verify(lab, name).verified
    tamper(lab, statement)
    verdict = verify(lab, name)
    assert not verdict.verified and verdict.why == why, verdict


def test_the_command_says_whether_a_chain_verifies(lab: Lab, auditor: str) -> None:
    new_chain(lab, "told")
    env = {**os.environ, "PYTHONPATH": str(SRC), "PGHOST": lab.userdb["host"], "PGDATABASE": "dmzkit", "PGUSER": auditor}
    command = [sys.executable, "-m", "dmzkit_remote_access.audit_chain", "--chain", "told"]
    good = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert good.returncode == 0 and good.stdout.startswith("chain told: 3 records verify; head "), good
    tamper(lab, "DELETE FROM dmzkit.audit_log WHERE chain = 'told' AND chain_seq = 1")
    bad = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "record 1 is missing" in bad.stdout, bad
    unknown = subprocess.run([*command[:-1], "nowhere"], env=env, capture_output=True, text=True, check=False)
    assert unknown.returncode == 1 and "there is no chain 'nowhere'" in unknown.stdout, unknown
    cannot = subprocess.run(command, env={**env, "PGUSER": "nobody_here"}, capture_output=True, text=True, check=False)
    assert cannot.returncode == 2 and "Traceback" not in cannot.stderr, cannot


def test_a_writer_cannot_place_a_record_in_a_chain(lab: Lab, auditor: str) -> None:
    before = verify(lab, "registration")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        write(lab, WRITER, "unit.placed", chain="registration", chain_seq="99")
    assert verify(lab, "registration") == before


def test_only_the_chains_writer_writes_its_records(lab: Lab, auditor: str) -> None:
    """The IdP's role (authn) may write audit records, not registration's."""
    before = verify(lab, "registration")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="only members of dmzkit_registration"):
        write(lab, "sso_idp", "registration")
    assert verify(lab, "registration") == before
