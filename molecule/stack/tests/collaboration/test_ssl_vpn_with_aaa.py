"""The SSL VPN asks AAA: ocserv on gw1 lets a user in with the client
certificate AND the password AAA accepts for that certificate's user, into
the group AAA's answer names, and records the session in AAA's accounting.
ocserv's RADIUS client cannot sign, so it asks the relay on gw1, which
signs for it and passes back only authentic answers: an answer forged at
AAA's own address, with the wrong secret or a wrong Message-Authenticator,
lets nobody in."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from lab_aaa import CLIENT, FORGERIES, GW, IM, audited, forged_answers, openconnect, psql, secret, tunnel

POOL = "198.18.8.0/24"


@pytest.fixture(autouse=True)
def unbanned(lab) -> Iterator[None]:
    """ocserv scores every failed login against its source and bans it past
    max-ban-score: the refusals here would ban the client's address for the
    tests after them, so each test forgives what it scored."""
    yield
    for entry in json.loads(lab[GW].host.check_output("occtl -j show ip ban points") or "[]"):
        lab[GW].host.run_test("occtl unban ip %s", entry["IP"])


def routes(lab, interface: str) -> list[str]:
    """The routes the gateway pushed, less the tunnel's own link to the pool."""
    run = lab[CLIENT].host.run(
        f"timeout 10 sh -c 'until ip -4 route show dev {interface} | grep -v ^{POOL} | grep -q .; do sleep 0.2; done';"
        f" ip -4 route show dev {interface}")
    found = (line.split()[0] for line in run.stdout.splitlines())
    return sorted(route if "/" in route else f"{route}/32" for route in found if route != POOL)


def session_of(lab, user: str) -> dict:
    shown = json.loads(lab[GW].host.check_output("occtl -j show users"))
    return next(s for s in shown if s["Username"] == user)


def accounted(lab, user: str, session: str) -> list[str]:
    """AAA's accounting records of one ocserv session (occtl shows the start of its id)."""
    return psql(lab, "SELECT string_agg(status || ':' || coalesce(host(framed_address), ''), ',' ORDER BY id) "
                     f"FROM dmzkit.radius_accounting WHERE nas = 'gw1' AND username = '{user}' "
                     f"AND session_id LIKE '{session}%'").split(",")


def test_a_wrong_password_or_another_users_name_gets_no_tunnel(lab) -> None:
    with tunnel(lab, "alice", "not her password") as run:
        assert run.returncode != 0
    assert audited(lab, "SELECT detail->>'nas' || ':' || outcome FROM dmzkit.audit_log WHERE event = 'aaa.access' "
                   "AND subject = 'alice' ORDER BY id DESC LIMIT 1") == "gw1:failure"
    # bob's name and password with alice's certificate: AAA accepts bob, ocserv refuses the mismatch.
    with tunnel(lab, "bob", secret("sso_bob"), certificate="alice") as run:
        assert run.returncode != 0
    assert "tun-bob" not in lab[CLIENT].host.check_output("ip -o link show")
    # ocserv counted the failures against the client's address.
    scores = {e["IP"]: e["Score"] for e in json.loads(lab[GW].host.check_output("occtl -j show ip ban points"))}
    assert scores.get(lab[CLIENT].address("internet"), 0) > 0


@pytest.mark.parametrize(("user", "group", "expected"), [
    ("alice", "staff", ["198.18.2.0/24"]), ("bob", "contractors", ["198.18.2.30/32", "198.18.2.70/32"])])
def test_certificate_and_password_open_the_tunnel_of_the_group_aaa_names(lab, user: str, group: str,
                                                                         expected: list[str]) -> None:
    with tunnel(lab, user, secret(f"sso_{user}")) as run:
        assert run.returncode == 0, run.stderr[-800:]
        assert routes(lab, f"tun-{user}") == expected
        session = session_of(lab, user)
        assert session["Groupname"] == group
        # AAA's audit names the client and the profile; the session is in AAA's accounting.
        answer = audited(lab, "SELECT detail->>'nas' || ':' || (detail->>'profile') || ':' || outcome "
                         "FROM dmzkit.audit_log WHERE event = 'aaa.access' "
                         f"AND subject = '{user}' ORDER BY id DESC LIMIT 1")
        assert answer == f"gw1:{group}:success"
        assert accounted(lab, user, session["Session"]) == ["start:"]
    # When the client leaves, ocserv reports the session with its address
    # (it ends it, with a stop, when the session's cookie expires).
    deadline = time.monotonic() + 10
    while len(recorded := accounted(lab, user, session["Session"])) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert recorded == ["start:", f"interim-update:{session['IPv4']}"]


@pytest.mark.parametrize("wrong", FORGERIES)
def test_an_answer_forged_at_aaas_address_lets_nobody_in(lab, wrong: str) -> None:
    """The relay checks each answer as strongSwan does: a wrong secret, or
    gw1's secret with a wrong Message-Authenticator, opens no tunnel.
    Dropped by the relay itself: ocserv would refuse a session it accepted
    anyway, for want of an accounting answer with FreeRADIUS stopped."""
    since = lab[GW].host.check_output("date +%s")
    try:
        with forged_answers(lab, wrong) as forged:
            result: dict = {}
            login = threading.Thread(target=lambda: result.update(
                run=openconnect(lab, "tun-forged", "alice", secret("sso_alice"), "alice")))
            login.start()
            answered = forged()
            login.join(60)
        assert answered == lab[GW].address("dmz")  # the relay asked, the forgery reached it
        assert result["run"].returncode != 0
        assert "tun-forged" not in lab[CLIENT].host.check_output("ip -o link show")
        relay_log = lab[GW].host.check_output(f"journalctl -u dmzkit-radius-relay --since @{since} -o cat --no-pager")
        assert "dropped an answer (code 2) whose authenticators are wrong" in relay_log, relay_log
    finally:
        lab[CLIENT].host.run("test -f /run/tun-forged.pid && kill $(cat /run/tun-forged.pid); rm -f /run/tun-forged.pid")


# Sends one datagram to the relay's loopback port; prints how the kernel took it.
SEND = """
import socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(bytes(20), ("127.0.0.1", 1812))
    print("sent")
except PermissionError:
    print("refused")
"""


@pytest.mark.parametrize("host", [GW, IM])
def test_only_the_nas_user_may_send_to_the_relay(lab, host: str) -> None:
    """Another user's process on the NAS's host, knowing no secret, could
    still spend the relay's request identifiers and score failed logins at
    AAA (five lock an account): its datagrams are refused as they leave."""
    run = lab[host].host.run
    python = "/opt/dmzkit/venv/bin/python"
    assert run("runuser -u nobody -- %s -c %s", python, SEND).stdout.strip() == "refused"
    assert run("%s -c %s", python, SEND).stdout.strip() == "sent"
