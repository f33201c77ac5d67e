"""The state single sign-on stands on: the audited user database on db1 and
the session store on idp1, each reached only the way it should be, by
whom it should be, for what it should be."""
from __future__ import annotations

import json
from pathlib import Path

DB = "db1"
IDP = "idp1"
CA = "ca1"
SECRETS = Path("/var/lib/dmzkit-lab/secrets")
CA_CHAIN = "/etc/dmzkit-pki/ca-chain.pem"
STORE_SOCKET = "/run/redis/redis-server.sock"
STORE_TLS_PORT = 6380
PROBE_EVENT = "test.probe"
MIGRATIONS = Path(__file__).resolve().parents[4] / "roles/userdb/files/migrations"

# Runs on a lab host: signs in to the user database as the IdP's role (the
# password on stdin) and tries what the IdP may and may not do.
AS_IDP_ROLE = """
import asyncio, json, ssl, sys
import asyncpg

async def main(host, mode):
    # "verify": TLS checking the server's certificate; "any": TLS taking any
    # certificate (from a host without the CA chain); "plain": no TLS.
    context = False
    if mode == "verify":
        context = ssl.create_default_context(cafile=%(ca)r)
    elif mode == "any":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        conn = await asyncpg.connect(host=host, user="sso_idp", database="dmzkit",
                                     password=sys.stdin.read().strip(), ssl=context, timeout=10)
    except (OSError, asyncpg.PostgresError, ssl.SSLError) as exc:
        print(json.dumps({"connected": False, "error": type(exc).__name__}))
        return
    outcome = {"connected": True}
    outcome["users"] = sorted(r["username"] for r in await conn.fetch("SELECT username FROM users"))
    outcome["hash_kinds"] = sorted({r["h"].split("$")[1] for r in await conn.fetch("SELECT password_hash h FROM credentials")})
    await conn.execute("INSERT INTO audit_log (actor, subject, event, outcome) VALUES ('admin', 'alice', %(event)r, 'success')")
    for name, statement in [
        ("update_users", "UPDATE users SET enabled = false"),
        ("read_audit", "SELECT count(*) FROM audit_log"),
        ("delete_audit", "DELETE FROM audit_log"),
        ("enrol_device", "INSERT INTO devices (user_id, name, spki_sha256) SELECT id, 'x', repeat('a', 64) FROM users LIMIT 1"),
        ("create_table", "CREATE TABLE intruder (x int)"),
        ("count_failures", "UPDATE credentials SET failed_attempts = failed_attempts WHERE false"),
    ]:
        try:
            await conn.execute(statement)
            outcome[name] = "allowed"
        except asyncpg.InsufficientPrivilegeError:
            outcome[name] = "denied"
    await conn.close()
    print(json.dumps(outcome))

asyncio.run(main(sys.argv[1], sys.argv[2]))
""" % {"ca": CA_CHAIN, "event": PROBE_EVENT}

# Runs on idp1: signs in to the session store as the IdP's user (the
# password on stdin) and tries commands in and out of its rights.
AS_STORE_USER = """
import json, sys
import redis

password = sys.stdin.read().strip()
outcome = {}
anonymous = redis.Redis(unix_socket_path=%(socket)r)
try:
    anonymous.get("dmzkit:sso:x")
    outcome["anonymous"] = "allowed"
except redis.exceptions.AuthenticationError:
    outcome["anonymous"] = "denied"
except redis.exceptions.ResponseError as exc:
    outcome["anonymous"] = "denied" if "NOAUTH" in str(exc) or "NOPERM" in str(exc) else str(exc)
store = redis.Redis(unix_socket_path=%(socket)r, username="sso-idp", password=password)
outcome["set_nx"] = bool(store.set("dmzkit:sso:probe", "1", nx=True, ex=30))
outcome["set_nx_again"] = bool(store.set("dmzkit:sso:probe", "2", nx=True, ex=30))
outcome["getdel"] = store.execute_command("GETDEL", "dmzkit:sso:probe")
outcome["getdel_again"] = store.execute_command("GETDEL", "dmzkit:sso:probe")
for name, command in [
    ("other_prefix", ("SET", "other:key", "1")),
    ("flushall", ("FLUSHALL",)),
    ("keys", ("KEYS", "*")),
    ("config", ("CONFIG", "GET", "save")),
    ("client_list", ("CLIENT", "LIST")),
    ("eval", ("EVAL", "return 1", "0")),
]:
    try:
        store.execute_command(*command)
        outcome[name] = "allowed"
    except redis.exceptions.NoPermissionError:
        outcome[name] = "denied"
    except redis.exceptions.ResponseError as exc:
        outcome[name] = "denied" if "NOPERM" in str(exc) else str(exc)
print(json.dumps({k: v.decode() if isinstance(v, bytes) else v for k, v in outcome.items()}))
""" % {"socket": STORE_SOCKET}


def secret(name: str) -> str:
    return (SECRETS / name).read_text().split()[0]


def psql(lab, sql: str):
    """As postgres on db1, through the socket (root is mapped to postgres)."""
    return lab[DB].host.run("psql -U postgres -d dmzkit -v ON_ERROR_STOP=1 -Atc %s", sql)


def as_idp_role(lab, host: str, target: str, mode: str, password: str | None = None) -> dict:
    run = lab[host].run_with_input(
        ["python3", "-c", AS_IDP_ROLE, target, mode],
        password if password is not None else secret("userdb_sso_idp"),
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_the_schema_is_at_its_latest_migration(lab):
    applied = psql(lab, "SELECT version, name FROM dmzkit.schema_migrations ORDER BY version")
    assert applied.rc == 0, applied.stderr
    shipped = sorted(p.stem for p in MIGRATIONS.glob("*.sql"))
    assert [line.split("|")[1] for line in applied.stdout.split()] == shipped


def test_the_idp_reads_users_over_tls_and_may_do_nothing_else(lab):
    outcome = as_idp_role(lab, IDP, lab[DB].address("internal"), "verify")
    assert outcome["connected"], outcome
    # The people, and the accounts of the lab's two devices (device auto-login).
    assert outcome["users"] == ["alice", "bob", "carol", "dave", "dev-branch1", "dev-client1"]
    # People's hashes are Argon2id; the devices' passwords, random, $sha256$.
    assert outcome["hash_kinds"] == ["argon2id", "sha256"]
    assert outcome["count_failures"] == "allowed"
    for forbidden in ("update_users", "read_audit", "delete_audit", "enrol_device", "create_table"):
        assert outcome[forbidden] == "denied", forbidden


def test_the_database_says_who_wrote_an_audit_record(lab):
    actor = psql(lab, f"SELECT actor FROM dmzkit.audit_log WHERE event = '{PROBE_EVENT}' ORDER BY id DESC LIMIT 1")
    assert actor.stdout.strip() == "sso_idp"


def test_nobody_changes_the_audit_log(lab):
    for statement in ("DELETE FROM dmzkit.audit_log", "UPDATE dmzkit.audit_log SET outcome = 'failure'",
                      "TRUNCATE dmzkit.audit_log"):
        refused = psql(lab, statement)
        assert refused.rc != 0 and "append-only" in refused.stderr, statement
    assert int(psql(lab, "SELECT count(*) FROM dmzkit.audit_log").stdout) > 0


def test_the_database_refuses_plain_text_other_hosts_and_wrong_passwords(lab):
    db = lab[DB].address("internal")
    no_entry = "InvalidAuthorizationSpecificationError"  # no pg_hba.conf line lets it in
    assert as_idp_role(lab, IDP, db, "plain") == {"connected": False, "error": no_entry}
    assert as_idp_role(lab, CA, db, "any") == {"connected": False, "error": no_entry}
    wrong = as_idp_role(lab, IDP, db, "verify", password="not-the-password-at-all-0123456789")
    assert wrong == {"connected": False, "error": "InvalidPasswordError"}


def test_stored_hashes_verify_the_users_passwords_only(lab):
    check = (
        "import sys, subprocess\n"
        "from argon2 import PasswordHasher\n"
        "from argon2.exceptions import VerificationError\n"
        "stored = subprocess.run(['psql', '-U', 'postgres', '-d', 'dmzkit', '-Atc',"
        " \"SELECT password_hash FROM dmzkit.credentials JOIN dmzkit.users u ON u.id = user_id"
        " WHERE username = 'alice'\"], capture_output=True, text=True, check=True).stdout.strip()\n"
        "right, wrong = sys.stdin.read().split()\n"
        "ph = PasswordHasher()\n"
        "ph.verify(stored, right)\n"
        "try:\n"
        "    ph.verify(stored, wrong)\n"
        "    sys.exit(3)\n"
        "except VerificationError:\n"
        "    pass\n"
        "print(stored.split('$')[3])\n"
    )
    run = lab[DB].run_with_input(["python3", "-c", check], f"{secret('sso_alice')} {secret('sso_bob')}\n")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "m=65536,t=3,p=4"


def test_an_edited_migration_stops_the_run_before_anything_changes(lab, converge):
    applied = psql(lab, "SELECT sha256 FROM dmzkit.schema_migrations WHERE version = 1").stdout.strip()
    psql(lab, "UPDATE dmzkit.schema_migrations SET sha256 = repeat('0', 64) WHERE version = 1")
    try:
        run = converge(limit=DB)
    finally:
        psql(lab, f"UPDATE dmzkit.schema_migrations SET sha256 = '{applied}' WHERE version = 1")
    assert run.rc != 0
    assert "differ from the role's files" in run.output
    assert run.total_changed == 0


def test_the_store_confines_the_idp_to_its_keys_and_commands(lab):
    run = lab[IDP].run_with_input(["python3", "-c", AS_STORE_USER], secret("session_store_sso_idp"))
    assert run.returncode == 0, run.stderr
    outcome = json.loads(run.stdout)
    assert outcome["anonymous"] == "denied"
    assert outcome["set_nx"] is True and outcome["set_nx_again"] is False
    assert outcome["getdel"] == "1" and outcome["getdel_again"] is None
    for forbidden in ("other_prefix", "flushall", "keys", "config", "client_list", "eval"):
        assert outcome[forbidden] == "denied", forbidden


def test_the_store_keeps_nothing_across_a_restart(lab):
    keep = (
        "import sys, redis\n"
        f"store = redis.Redis(unix_socket_path={STORE_SOCKET!r}, username='sso-idp', password=sys.stdin.read().strip())\n"
        "if sys.argv[1] == 'set':\n"
        "    store.set('dmzkit:sso:survivor', '1', ex=600)\n"
        "print(store.exists('dmzkit:sso:survivor'))\n"
    )
    password = secret("session_store_sso_idp")
    assert lab[IDP].run_with_input(["python3", "-c", keep, "set"], password).stdout.strip() == "1"
    lab[IDP].host.run_test("systemctl restart redis-server.service")
    assert lab[IDP].run_with_input(["python3", "-c", keep, "get"], password).stdout.strip() == "0"
    assert not lab[IDP].host.file("/var/lib/redis/dump.rdb").exists


def test_the_store_speaks_tls_with_client_certificates_only_beyond_loopback(lab):
    idp = lab[IDP].address("internal")
    # No plain TCP beyond loopback (nor on it, in the lab: local users take the socket).
    assert not lab[DB].connects(idp, 6379)
    handshake = lab[DB].host.run(
        f"openssl s_client -connect {idp}:{STORE_TLS_PORT} -CAfile {CA_CHAIN} -verify_return_error"
        " -servername idp1.lab.dmzkit.test </dev/null; echo PING | timeout 5 openssl s_client -quiet"
        f" -connect {idp}:{STORE_TLS_PORT} -CAfile {CA_CHAIN} 2>&1"
    )
    # The server's certificate chains to the CA ...
    assert "Verify return code: 0 (ok)" in handshake.stdout
    # ... and without a client certificate the store answers nothing.
    assert "NOAUTH" not in handshake.stdout and "PONG" not in handshake.stdout


def test_bad_store_settings_are_refused_before_anything_changes(lab, converge):
    run = converge(extra_vars={"session_store_port": 6379}, limit=IDP)
    assert run.rc != 0
    assert "plain port only on loopback" in run.output
    assert run.total_changed == 0
