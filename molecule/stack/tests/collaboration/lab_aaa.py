"""What the collaboration journey's tests share: the hosts, the lab's
secrets, the user database's audit (AAA's answers once shipped) and
accounting, a user's SSL VPN and IPsec tunnels from client1 (device and
password), and a forger of AAA's answers."""
from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

CLIENT, GW, AAA, DB, APP, IM = "client1", "gw1", "aaa1", "db1", "app1", "im1"
SECRETS = Path("/var/lib/dmzkit-lab/secrets")
VPN = "https://vpn.lab.dmzkit.test/"
# The IM server's XMPP domain, and the CA bundle its clients check it with
# (the lab's root is in the users' machines' system store).
IM_DOMAIN = "im.lab.dmzkit.test"
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"


# Run on aaa1 with FreeRADIUS stopped: answers the first request (the
# relay's, or strongSwan's) with a forged Access-Accept, as an attacker who
# can send from AAA's address would. "secret": signed with a wrong secret (an
# attacker without it). "message-authenticator": the NAS's own secret (read
# from standard input) for the Response Authenticator, but a
# Message-Authenticator that is not (BlastRADIUS forges the one, not the other).
FORGER = """
import hashlib, json, socket, sys
from dataclasses import replace
from dmzkit_remote_access import radius
wrong, secret = sys.argv[2], sys.stdin.read().strip().encode()
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], 1812))
sock.settimeout(30)
print("listening", flush=True)
data, source = sock.recvfrom(4096)
request = radius.decode(data)
if wrong == "secret":
    forged = radius.reply(radius.ACCESS_ACCEPT, request, ((25, b"OU=staff"),), b"not the secret of gw1 at all")
else:
    signed = radius.reply(radius.ACCESS_ACCEPT, request, ((25, b"OU=staff"),), secret)
    unsigned = replace(signed, authenticator=request.authenticator, attributes=tuple(
        (kind, bytes(16) if kind == radius.MESSAGE_AUTHENTICATOR else value) for kind, value in signed.attributes))
    forged = replace(unsigned, authenticator=hashlib.md5(radius.encode(unsigned) + secret).digest())
sock.sendto(radius.encode(forged), source)
print(json.dumps({"forged_for": source[0]}), flush=True)
"""
# What each forgery gets wrong.
FORGERIES = ("secret", "message-authenticator")


@contextmanager
def forged_answers(lab, wrong: str) -> Iterator[Callable[[], str]]:
    """FreeRADIUS stopped on aaa1 and FORGER in its place, its answer wrong
    in `wrong` (one of FORGERIES); yields a function that waits for the
    forged answer and returns the address it went to."""
    aaa = lab[AAA].host
    assert aaa.run("systemctl stop freeradius").rc == 0
    try:
        forger = subprocess.Popen(["podman", "exec", "-i", AAA, "/opt/dmzkit/venv/bin/python", "-c", FORGER,
                                   lab[AAA].address("internal"), wrong], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
        assert forger.stdin is not None and forger.stdout is not None
        forger.stdin.write(secret("aaa_gw1"))
        forger.stdin.close()
        assert forger.stdout.readline().strip() == "listening"
        yield lambda: json.loads(forger.stdout.readline())["forged_for"]
        forger.wait(10)
    finally:
        assert aaa.run("systemctl start freeradius").rc == 0


class Secret(str):
    """A secret of the lab: itself wherever a string goes, masked wherever
    it is shown (pytest's account of a failed assertion prints arguments)."""

    def __repr__(self) -> str:
        return "'***'"


def secret(name: str) -> Secret:
    return Secret((SECRETS / name).read_text().strip())


def psql(lab, statement: str) -> str:
    run = lab[DB].host.run("runuser -u postgres -- psql -d dmzkit -AtX -c %s", statement)
    assert run.rc == 0, run.stderr
    return run.stdout.strip()


# FreeRADIUS's spool of its answers, which the audit shipper takes away.
ANSWERS = "/var/lib/dmzkit-aaa-audit/answers"


def audited(lab, statement: str) -> str:
    """psql once AAA's answers so far are in the audit log: the spool is
    empty and no file taken from it is left (the shipper looks every 0.5 s)."""
    run = lab[AAA].host.run(f"for i in $(seq 50); do if ! test -s {ANSWERS} && ! test -e {ANSWERS}.work; "
                            "then exit 0; fi; sleep 0.1; done; exit 1")
    assert run.rc == 0, "AAA's answers were not shipped into the audit log within 5 s"
    return psql(lab, statement)


def answer_detail(detail: str) -> dict:
    """An aaa.access record's detail, without the time its request came,
    which must be a moment ago."""
    record = json.loads(detail)
    received = datetime.fromisoformat(record.pop("received_at"))
    assert abs((datetime.now(timezone.utc) - received).total_seconds()) < 60, received
    return record


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


@contextmanager
def ipsec_tunnel(lab, user: str, password: str, host: str = CLIENT) -> Iterator[subprocess.CompletedProcess[str]]:
    """The user's IPsec tunnel from their machine (client1, or a branch
    office's; swanctl connection `user`): the password is loaded as the
    user's EAP secret for this tunnel only, from a file in swanctl's
    configuration removed at once, and dropped again after."""
    client = lab[host]
    email = f"{user}@lab.dmzkit.test"
    secrets = f"/etc/swanctl/conf.d/zz-test-secret-{user}.conf"
    conf = f'secrets {{\n\teap-{user} {{\n\t\tid = {email}\n\t\tsecret = "{password}"\n\t}}\n}}\n'
    assert client.run_with_input(["sh", "-c", f"umask 077; cat > {secrets}"], conf).returncode == 0
    try:
        client.host.run_test("swanctl --load-creds --noprompt")
    finally:
        client.host.run(f"rm -f {secrets}")
    try:
        yield client.run_with_input(["timeout", "60", "swanctl", "--initiate", "--child", user, "--timeout", "45"], "")
    finally:
        client.host.run(f"swanctl --terminate --ike {user} --timeout 10")
        client.host.run_test("swanctl --load-creds --clear --noprompt")


def ipsec_sa(lab, user: str, host: str = CLIENT) -> dict:
    """The user's IKE_SA on their machine as swanctl shows it: its state,
    the virtual address the gateway gave, and the child SA's remote traffic
    selectors (the networks the gateway lets the user reach)."""
    shown = lab[host].host.run(f"swanctl --list-sas --ike {user}").stdout
    state = re.search(rf"^{user}: #\d+, (\w+),", shown, re.M)
    vip = re.search(r"^\s+local\s+'[^']*' @ \S+ \[([\d.]+)\]", shown, re.M)
    return {"state": state.group(1) if state else None, "vip": vip.group(1) if vip else None,
            "remote_ts": sorted(re.findall(r"^\s+remote ([\d./]+)$", shown, re.M))}
