"""AAA as the gateway meets it: FreeRADIUS on aaa1 answers the gateway's
host (its ocserv and its strongSwan) with each user's profile in that NAS's
own form, refuses who the user database refuses, drops what is not signed
by a known client, and records accounting into the user database. Every
request here is a raw packet built on gw1 (radius_probe.py), so nothing
between the test and FreeRADIUS could add or fix what the test sends."""
from __future__ import annotations

import json
import secrets as random
import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from lab_aaa import AAA, ANSWERS, DB, GW, Secret, answer_detail, audited, psql, secret

# The account listener and its lease (the aaa role's internals, as deployed).
ACCOUNTS_UNIT, ACCOUNTS_SECRET, LEASE_PORT, LEASE_SECONDS = (
    "dmzkit-aaa-accounts", "/etc/dmzkit-aaa/accounts.secret", 18121, 2)

PROBE = (Path(__file__).parent / "radius_probe.py").read_text()
AUTH, ACCT = 1812, 1813
ACCEPT, REJECT, ACCOUNTING_RESPONSE = 2, 3, 5


def ask(lab, host: str, kind: str, options: dict, client_secret: str, password: str = "",
        again_password: str = "", to: tuple[str, int] | None = None) -> dict:
    """One request from `host` to AAA (or `to`), as radius_probe.py sends it."""
    server, port = to or (lab[AAA].address("internal"), AUTH if kind == "access" else ACCT)
    run = lab[host].run_with_input(
        ["python3", "-c", PROBE, kind, server, str(port), json.dumps(options)],
        json.dumps({"secret": client_secret, "password": password, "again_password": again_password}))
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def access(lab, user: str, password: str, nas: str = "ocserv", host: str = GW, client_secret: str | None = None,
           message_authenticator: str = "right", again: list | None = None, again_password: str = "") -> dict:
    return ask(lab, host, "access", {"strings": {"User-Name": user, "NAS-Identifier": nas,
                                                 "Calling-Station-Id": "198.18.0.10[4500]"},
                                     "message_authenticator": message_authenticator, "again": again or []},
               client_secret if client_secret is not None else secret("aaa_gw1"), password, again_password)


def last_reason(lab, user: str, event: str = "aaa.access") -> str:
    return audited(lab, f"SELECT detail->>'reason' FROM dmzkit.audit_log WHERE event = '{event}' "
                   f"AND subject = '{user}' ORDER BY id DESC LIMIT 1")


@pytest.mark.parametrize(("user", "answer"), [("alice", "OU=staff"), ("bob", "OU=contractors")])
def test_the_gateway_gets_the_users_profile_in_its_nas_form(lab, user: str, answer: str) -> None:
    reply = access(lab, user, secret(f"sso_{user}"))
    assert reply == {"answered": True, "code": ACCEPT, "authentic": True, "classes": [answer],
                     "message_authenticator": True}


def test_strongswan_with_a_password_alone_is_refused(lab) -> None:
    """An IPsec user shows the device's certificate to AAA (EAP-TTLS,
    test_aaa_eap.py): the gateway's host asking as strongSwan with a
    password alone is refused."""
    assert access(lab, "alice", secret("sso_alice"), nas="strongswan")["code"] == REJECT
    assert last_reason(lab, "alice") == "strongswan asks with EAP"


def test_who_the_user_database_refuses_is_rejected(lab) -> None:
    # dave's groups give no profile; alice with a wrong password.
    for user, password in (("dave", secret("sso_dave")), ("alice", "not her password"),
                           ("nobody", "any password")):
        reply = access(lab, user, password)
        assert reply["answered"] and reply["authentic"] and reply["code"] == REJECT, user
        assert reply["message_authenticator"], user  # signed, or a NAS that checks could not trust it
        assert reply["classes"] == []
    # The refusals are audited, with why (the answer, and the password
    # check's own reason); the user is not told.
    answers = audited(lab, "SELECT subject || ':' || (detail->>'reason') FROM dmzkit.audit_log "
                      "WHERE event = 'aaa.access' AND outcome = 'failure' ORDER BY id DESC LIMIT 3")
    assert answers.splitlines() == ["nobody:password refused", "alice:password refused", "dave:no profile"]
    checks = psql(lab, "SELECT subject || ':' || (detail->>'reason') FROM dmzkit.audit_log "
                       "WHERE event = 'aaa.password' AND outcome = 'failure' ORDER BY id DESC LIMIT 2")
    assert checks.splitlines() == ["nobody:unknown or disabled user", "alice:wrong password"]
    # alice's one failure is forgotten at her next success (the IdP's lockout counter).
    assert access(lab, "alice", secret("sso_alice"))["code"] == ACCEPT
    assert psql(lab, "SELECT failed_attempts FROM dmzkit.credentials c JOIN dmzkit.users u ON u.id = c.user_id "
                     "WHERE username = 'alice'") == "0"


def test_the_gateways_host_cannot_ask_as_the_im_server(lab) -> None:
    """IM is refused to bob by the IM server's NAS type; the gateway may not
    take that type to get him in."""
    assert access(lab, "bob", secret("sso_bob"), nas="im")["code"] == REJECT
    # alice may use IM: only the NAS type check refuses her here.
    assert access(lab, "alice", secret("sso_alice"), nas="im")["code"] == REJECT
    assert last_reason(lab, "alice") == "NAS type not allowed"
    assert access(lab, "alice", secret("sso_alice"), nas="something-else")["code"] == REJECT
    assert last_reason(lab, "alice") == "NAS type not allowed"


@pytest.mark.parametrize("again", [["User-Name", "bob"], ["User-Password", ""], ["NAS-Identifier", "strongswan"]])
def test_a_request_with_an_attribute_twice_is_rejected(lab, again: list) -> None:
    """A NAS (taken over, say) sends alice's name, then bob's, with bob's
    password: were the site to read one name and the password check the
    other, bob's password would let him in as alice, and be remembered as
    hers. A second password or NAS type is refused the same way."""
    reply = access(lab, "alice", secret("sso_bob"), again=[again], again_password=secret("sso_alice"))
    assert reply["code"] == REJECT and reply["classes"] == []
    assert last_reason(lab, "alice") == "repeated attribute"
    # Nothing was remembered for alice from it: bob's password does not open her account.
    assert access(lab, "alice", secret("sso_bob"))["code"] == REJECT
    assert access(lab, "alice", secret("sso_alice"))["code"] == ACCEPT


def test_a_password_found_right_is_remembered_and_audited(lab) -> None:
    password = secret("sso_carol")
    for _ in range(2):
        assert access(lab, "carol", password)["code"] == ACCEPT
    last = audited(lab, "SELECT outcome, detail FROM dmzkit.audit_log WHERE event = 'aaa.access' AND subject = 'carol' "
                   "ORDER BY id DESC LIMIT 1")
    outcome, detail = last.split("|", 1)
    assert outcome == "success"
    assert answer_detail(detail) == {"nas": "gw1", "profile": "staff", "reason": "password remembered"}


def test_an_answer_whose_record_cannot_be_spooled_is_refused(lab) -> None:
    """No answer goes out without its record: with the spool unwritable (a
    directory where the file goes), FreeRADIUS refuses even a remembered
    password, and answers again once it can write."""
    aaa = lab[AAA].host
    assert access(lab, "alice", secret("sso_alice"))["code"] == ACCEPT
    assert aaa.run(f"systemctl stop dmzkit-aaa-audit && rm -f {ANSWERS} && mkdir {ANSWERS}").rc == 0
    try:
        assert access(lab, "alice", secret("sso_alice"))["code"] == REJECT
    finally:
        assert aaa.run(f"rmdir {ANSWERS} && systemctl start dmzkit-aaa-audit").rc == 0
    assert access(lab, "alice", secret("sso_alice"))["code"] == ACCEPT
    assert last_reason(lab, "alice") == "password remembered"


@pytest.mark.parametrize("change", [
    "UPDATE dmzkit.credentials SET password_hash = %(other)s WHERE user_id = %(id)s",
    "UPDATE dmzkit.credentials SET locked_until = now() + interval '1 hour' WHERE user_id = %(id)s",
    "UPDATE dmzkit.users SET enabled = false WHERE id = %(id)s",
])
def test_a_remembered_password_stops_at_a_new_hash_a_lock_or_a_disabled_account(lab, change: str) -> None:
    """FreeRADIUS answers a password it remembers without the password
    check, but never past what the user database says now."""
    password = secret("sso_carol")
    assert access(lab, "carol", password)["code"] == ACCEPT
    assert access(lab, "carol", password)["code"] == ACCEPT
    assert last_reason(lab, "carol") == "password remembered"
    saved = psql(lab, "SELECT u.id || '|' || c.password_hash || '|' || u.enabled FROM dmzkit.users u "
                      "JOIN dmzkit.credentials c ON c.user_id = u.id WHERE username = 'carol'")
    user_id, stored, enabled = saved.split("|")
    other = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("another password")
    psql(lab, change % {"other": f"'{other}'", "id": user_id})
    try:
        assert access(lab, "carol", password)["code"] == REJECT
    finally:
        psql(lab, f"UPDATE dmzkit.credentials SET password_hash = '{stored}', locked_until = NULL, "
                  f"failed_attempts = 0 WHERE user_id = {user_id}")
        psql(lab, f"UPDATE dmzkit.users SET enabled = {enabled} WHERE id = {user_id}")
    assert access(lab, "carol", password)["code"] == ACCEPT


def test_with_the_account_listener_away_a_change_is_missed_for_one_lease_at_most(lab) -> None:
    """FreeRADIUS keeps the accounts it read while the account listener
    holds its lease; with the listener stopped, the lease runs out (within
    its time and 1 s: FreeRADIUS counts whole seconds) and every account is
    read from the user database again."""
    password = secret("sso_carol")
    assert access(lab, "carol", password)["code"] == ACCEPT
    assert access(lab, "carol", password)["code"] == ACCEPT
    user_id = psql(lab, "SELECT id FROM dmzkit.users WHERE username = 'carol'")
    aaa = lab[AAA].host
    assert aaa.run(f"systemctl stop {ACCOUNTS_UNIT}").rc == 0
    try:
        psql(lab, f"UPDATE dmzkit.credentials SET locked_until = now() + interval '1 hour' WHERE user_id = {user_id}")
        time.sleep(LEASE_SECONDS + 1.5)
        assert access(lab, "carol", password)["code"] == REJECT
    finally:
        psql(lab, f"UPDATE dmzkit.credentials SET locked_until = NULL, failed_attempts = 0 WHERE user_id = {user_id}")
        assert aaa.run(f"systemctl start {ACCOUNTS_UNIT}").rc == 0
    assert access(lab, "carol", password)["code"] == ACCEPT


def lease(lab, host: str, client_secret: str, server: str = "127.0.0.1", age: int = 0) -> dict:
    return ask(lab, host, "access", {"strings": {"User-Name": random.token_hex(8)},
                                     "integers": {"Event-Timestamp": int(time.time()) - age}, "timeout": 1.5},
               client_secret, to=(server, LEASE_PORT))


def test_the_lease_is_renewed_only_with_its_secret_on_aaa_itself_and_on_time(lab) -> None:
    """A renewal names the generation FreeRADIUS keeps accounts under: an
    old one sent again would bring back accounts as they were. Only the
    listener's secret renews it, only from AAA's own host, and not with a
    time 5 s off, late or ahead."""
    right = Secret(lab[AAA].host.run(f"cat {ACCOUNTS_SECRET}").stdout.split('"')[1])
    renewed = lease(lab, AAA, right)
    assert renewed["answered"] and renewed["code"] == ACCEPT and renewed["authentic"]
    for age in (5, -5):
        off = lease(lab, AAA, right, age=age)
        assert off["answered"] and off["code"] == REJECT and off["authentic"], age
    assert lease(lab, AAA, Secret(random.token_hex(32))) == {"answered": False}
    # gw1, a client of AAA's own server, with the right secret: nothing listens there for it.
    assert lease(lab, GW, right, server=lab[AAA].address("internal")) == {"answered": False}


@pytest.mark.parametrize("message_authenticator", ["none", "wrong"])
def test_a_request_without_a_valid_message_authenticator_is_dropped(lab, message_authenticator: str) -> None:
    """BlastRADIUS (CVE-2024-3596): a request that is not signed whole is not
    answered at all, even with the right secret and password."""
    assert access(lab, "alice", secret("sso_alice"))["code"] == ACCEPT
    assert access(lab, "alice", secret("sso_alice"), message_authenticator=message_authenticator) == {
        "answered": False}


def test_a_request_with_a_wrong_secret_or_from_another_host_is_dropped(lab) -> None:
    assert access(lab, "alice", secret("sso_alice"), client_secret="x" * 40) == {"answered": False}
    # im1's secret from gw1's address: each client's own secret only.
    assert access(lab, "alice", secret("sso_alice"), client_secret=secret("aaa_im1")) == {"answered": False}
    # db1 is on AAA's own network, but no client: the host's firewall and
    # FreeRADIUS both drop it.
    assert access(lab, "alice", secret("sso_alice"), host=DB) == {"answered": False}
    rules = lab[AAA].host.run("nft list table inet dmzkit_host").stdout
    assert f"ip saddr {{ {lab[GW].address('dmz')}" in rules


def test_accounting_is_recorded_in_the_user_database(lab) -> None:
    session = f"test-{random.token_hex(6)}"
    for status in (1, 2):  # Start, Stop
        reply = ask(lab, GW, "accounting", {
            "status": status, "framed_address": "198.18.3.7",
            "strings": {"User-Name": "alice", "NAS-Identifier": "strongswan", "Acct-Session-Id": session,
                        "Calling-Station-Id": "198.18.0.10[4500]"}}, secret("aaa_gw1"))
        assert reply["answered"] and reply["authentic"] and reply["code"] == ACCOUNTING_RESPONSE
    rows = psql(lab, f"SELECT nas, status, username, host(framed_address), calling_station FROM "
                     f"dmzkit.radius_accounting WHERE session_id = '{session}' ORDER BY id")
    assert rows.splitlines() == ["gw1|start|alice|198.18.3.7|198.18.0.10[4500]",
                                 "gw1|stop|alice|198.18.3.7|198.18.0.10[4500]"]
    # Records stay as they were received.
    changed = lab[DB].host.run("runuser -u postgres -- psql -d dmzkit -AtX -c %s",
                               f"DELETE FROM dmzkit.radius_accounting WHERE session_id = '{session}'")
    assert changed.rc != 0 and "append-only" in changed.stderr


# What a NAS passes on from a user (a name typed at a login prompt) reaches
# AAA's SQL inside quoted strings: quotes and backslashes must stay data.
AWKWARD = "o'hara\\'); DELETE FROM dmzkit.audit_log; --"


def test_quotes_and_backslashes_in_what_a_user_typed_stay_data(lab) -> None:
    before = psql(lab, "SELECT count(*) FROM dmzkit.audit_log")
    reply = access(lab, AWKWARD, "any password")
    assert reply["answered"] and reply["authentic"] and reply["code"] == REJECT
    assert audited(lab, "SELECT subject FROM dmzkit.audit_log WHERE event = 'aaa.access' ORDER BY id DESC LIMIT 1") \
        == AWKWARD
    assert int(psql(lab, "SELECT count(*) FROM dmzkit.audit_log")) > int(before)
    session = f"test-{random.token_hex(4)}-'\\"
    reply = ask(lab, GW, "accounting", {"status": 1, "strings": {
        "User-Name": AWKWARD, "NAS-Identifier": "strongswan", "Acct-Session-Id": session}}, secret("aaa_gw1"))
    assert reply["answered"] and reply["code"] == ACCOUNTING_RESPONSE
    escaped = session.replace("'", "''")
    assert psql(lab, f"SELECT username FROM dmzkit.radius_accounting WHERE session_id = '{escaped}'") == AWKWARD


def test_an_accounting_type_it_does_not_record_is_answered_and_audited(lab) -> None:
    """A NAS retransmits unanswered accounting for ever: a type the table
    does not take (Tunnel-Start, RFC 2867) is answered, and audited."""
    session = f"test-{random.token_hex(6)}"
    reply = ask(lab, GW, "accounting", {"status": 9, "strings": {
        "User-Name": "alice", "NAS-Identifier": "strongswan", "Acct-Session-Id": session}}, secret("aaa_gw1"))
    assert reply["answered"] and reply["authentic"] and reply["code"] == ACCOUNTING_RESPONSE
    assert psql(lab, f"SELECT count(*) FROM dmzkit.radius_accounting WHERE session_id = '{session}'") == "0"
    audited = psql(lab, "SELECT outcome || '|' || detail FROM dmzkit.audit_log WHERE event = 'aaa.accounting' "
                        "AND subject = 'alice' ORDER BY id DESC LIMIT 1")
    outcome, detail = audited.split("|", 1)
    assert outcome == "failure" and json.loads(detail) == {
        "nas": "gw1", "reason": "status type not recorded", "status": "Tunnel-Start", "session": session}


def test_freeradius_runs_only_the_collections_site_and_checks_its_configuration(lab, hostvar) -> None:
    host = lab[AAA].host
    assert host.run("ls /etc/freeradius/3.0/sites-enabled").stdout.split() == ["dmzkit"]
    assert host.run("freeradius -XC").rc == 0
    # Counted here, so that a failure shows the counts and not the secrets.
    clients = host.run("cat /etc/freeradius/3.0/clients.conf").stdout
    signed, entries = clients.count("require_message_authenticator = yes"), clients.count("client ")
    assert signed == entries == hostvar(AAA, "aaa_clients | length")
    assert host.file("/etc/freeradius/3.0/clients.conf").mode == 0o640
    assert host.file("/etc/dmzkit-aaa/userdb.pgpass").mode == 0o600
    assert host.file("/etc/dmzkit-aaa/userdb.pgpass").user == "freerad"
    secret_file = host.file(ACCOUNTS_SECRET)
    assert (secret_file.mode, secret_file.user, secret_file.group) == (0o640, "root", "freerad")
