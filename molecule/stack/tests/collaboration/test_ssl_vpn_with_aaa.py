"""The SSL VPN asks AAA: ocserv on gw1 lets a user in with the client
certificate AND the password AAA accepts for that certificate's user, into
the group AAA's answer names, and records the session in AAA's accounting.
ocserv's RADIUS client cannot sign, so it asks the relay on gw1, which
signs for it and passes back only authentic answers: an answer forged at
AAA's own address with the wrong secret lets nobody in."""
from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from lab_aaa import AAA, CLIENT, GW, psql, secret

VPN = "https://vpn.lab.dmzkit.test/"
# Run on aaa1 with FreeRADIUS stopped: answers the relay's first request with
# an Access-Accept signed with a wrong secret, as an attacker who can send
# from AAA's address but does not know the secret would.
FORGER = """
import json, socket, sys
from dmzkit_remote_access import radius
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], 1812))
sock.settimeout(30)
print("listening", flush=True)
data, source = sock.recvfrom(4096)
request = radius.decode(data)
forged = radius.reply(radius.ACCESS_ACCEPT, request, ((25, b"OU=staff"),), b"not the secret of gw1 at all")
sock.sendto(radius.encode(forged), source)
print(json.dumps({"forged_for": source[0]}), flush=True)
"""


def openconnect(lab, interface: str, user: str, password: str, certificate: str) -> subprocess.CompletedProcess[str]:
    return lab[CLIENT].run_with_input(
        ["timeout", "40", "openconnect", "--background", f"--pid-file=/run/{interface}.pid", f"--interface={interface}",
         "--non-inter", f"--user={user}", "--passwd-on-stdin", "-c", f"/root/dmzkit/{certificate}.pem", VPN],
        password + "\n")


@contextmanager
def tunnel(lab, user: str, password: str, certificate: str | None = None) -> Iterator[subprocess.CompletedProcess[str]]:
    interface = f"tun-{user}"
    try:
        yield openconnect(lab, interface, user, password, certificate or user)
    finally:
        lab[CLIENT].host.run(f"test -f /run/{interface}.pid && kill $(cat /run/{interface}.pid); rm -f /run/{interface}.pid")


def routes(lab, interface: str) -> list[str]:
    run = lab[CLIENT].host.run(f"timeout 10 sh -c 'until ip -4 route show dev {interface} | grep -q .; do sleep 0.2; done';"
                               f" ip -4 route show dev {interface}")
    return sorted(line.split()[0] for line in run.stdout.splitlines() if "/" in line.split()[0])


def session_of(lab, user: str) -> dict:
    shown = json.loads(lab[GW].host.check_output("occtl -j show users"))
    return next(s for s in shown if s["Username"] == user)


def test_a_wrong_password_or_another_users_name_gets_no_tunnel(lab) -> None:
    with tunnel(lab, "alice", "not her password") as run:
        assert run.returncode != 0
    assert psql(lab, "SELECT detail->>'nas' || ':' || outcome FROM dmzkit.audit_log WHERE event = 'aaa.access' "
                     "AND subject = 'alice' ORDER BY id DESC LIMIT 1") == "ocserv:failure"
    # bob's name and password with alice's certificate: AAA accepts bob, ocserv refuses the mismatch.
    with tunnel(lab, "bob", secret("sso_bob"), certificate="alice") as run:
        assert run.returncode != 0
    assert "tun-bob" not in lab[CLIENT].host.check_output("ip -o link show")


@pytest.mark.parametrize(("user", "group", "expected"), [
    ("alice", "staff", ["198.18.2.0/24"]), ("bob", "contractors", ["198.18.2.70/32"])])
def test_certificate_and_password_open_the_tunnel_of_the_group_aaa_names(lab, user: str, group: str,
                                                                         expected: list[str]) -> None:
    with tunnel(lab, user, secret(f"sso_{user}")) as run:
        assert run.returncode == 0, run.stderr[-800:]
        assert routes(lab, f"tun-{user}") == expected
        session = session_of(lab, user)
        assert session["Groupname"] == group
        # AAA's audit names the NAS and the profile; the session is in AAA's accounting.
        audited = psql(lab, "SELECT detail->>'nas' || ':' || (detail->>'profile') || ':' || outcome "
                            "FROM dmzkit.audit_log WHERE event = 'aaa.access' "
                            f"AND subject = '{user}' ORDER BY id DESC LIMIT 1")
        assert audited == f"ocserv:{group}:success"
        started = psql(lab, "SELECT count(*) FROM dmzkit.radius_accounting WHERE nas = 'ocserv' AND status = 'start' "
                            f"AND username = '{user}' AND host(framed_address) = '{session['IPv4']}'")
        assert int(started) >= 1


def test_an_answer_forged_at_aaas_address_with_a_wrong_secret_lets_nobody_in(lab) -> None:
    aaa = lab[AAA].host
    assert aaa.run("systemctl stop freeradius").rc == 0
    try:
        forger = subprocess.Popen(["podman", "exec", "-i", AAA, "/opt/dmzkit/venv/bin/python", "-c", FORGER,
                                   lab[AAA].address("internal")], stdout=subprocess.PIPE, text=True)
        assert forger.stdout is not None and forger.stdout.readline().strip() == "listening"
        result: dict = {}
        login = threading.Thread(target=lambda: result.update(
            run=openconnect(lab, "tun-forged", "alice", secret("sso_alice"), "alice")))
        login.start()
        forged = json.loads(forger.stdout.readline())
        login.join(60)
        assert forged["forged_for"] == lab[GW].address("dmz")  # the relay asked, the forgery reached it
        assert result["run"].returncode != 0
        assert "tun-forged" not in lab[CLIENT].host.check_output("ip -o link show")
        forger.wait(10)
    finally:
        lab[CLIENT].host.run("test -f /run/tun-forged.pid && kill $(cat /run/tun-forged.pid); rm -f /run/tun-forged.pid")
        assert aaa.run("systemctl start freeradius").rc == 0
