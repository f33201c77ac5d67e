"""The sso journey, C/S part, from the external user's machine in the VPN
tunnel: one password at the SAML proxy, then the mail application accepts
its one-time token; a second mail client gets in with the kept ticket only;
a spent token, and the ticket on another device, get nobody in."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

CLIENT = "client1"
CREDENTIALS = "/root/dmzkit"
PROXY = "https://198.18.2.40:9443"
MAIL = "imaps://app1.lab.dmzkit.test/"
SECRETS = Path("/var/lib/dmzkit-lab/secrets")
TICKET_FILE = "/root/.config/dmzkit-sso/credentials.json"
# The second client: Python's imaplib signing in with XOAUTH2.
IMAPLIB_XOAUTH2 = (
    "import imaplib, ssl, sys\n"
    "token = sys.stdin.read().strip()\n"
    "imap = imaplib.IMAP4_SSL('app1.lab.dmzkit.test', ssl_context=ssl.create_default_context())\n"
    "imap.authenticate('XOAUTH2', lambda _: f'user=alice\\x01auth=Bearer {token}\\x01\\x01'.encode())\n"
    "print(imap.select('INBOX')[0])\n"
)


@pytest.fixture(scope="module")
def tunnel(lab) -> Iterator[None]:
    """alice's VPN tunnel on client1, for the whole module: her certificate
    and, AAA being in this lab, her password."""
    client = lab[CLIENT].host
    started = lab[CLIENT].run_with_input(
        ["timeout", "30", "openconnect", "--background", "--pid-file=/run/openconnect-sso.pid", "--interface=tun-sso",
         "--non-inter", "--user=alice", "--passwd-on-stdin", "-c", f"{CREDENTIALS}/alice.pem",
         "https://vpn.lab.dmzkit.test/"], (SECRETS / "sso_alice").read_text().split()[0] + "\n")
    assert started.returncode == 0, started.stderr
    try:
        client.run_test("timeout 10 sh -c 'until ip link show tun-sso >/dev/null 2>&1; do sleep 0.2; done'")
        yield
    finally:
        client.run("kill $(cat /run/openconnect-sso.pid)")


def sso_client(lab, *args: str, stdin: str = ""):
    return lab[CLIENT].run_with_input(["dmzkit-sso-client", *args], stdin)


def curl_mail(lab, token: str):
    """The first mail client: curl, OAUTHBEARER with the token (from stdin)."""
    return lab[CLIENT].run_with_input(
        ["sh", "-c", 'read -r token; exec curl -sS --max-time 10 --user alice --oauth2-bearer "$token" ' + MAIL],
        token + "\n")


def test_one_password_then_the_mail_clients_sign_in_with_the_ticket_only(lab, tunnel) -> None:
    password = (SECRETS / "sso_alice").read_text().split()[0]
    login = sso_client(lab, "login", "--proxy", PROXY, "--app", "mail", "--user", "alice",
                       "--cert", f"{CREDENTIALS}/alice.pem", stdin=password + "\n")
    assert login.returncode == 0, login.stderr
    first = login.stdout.strip()
    listed = curl_mail(lab, first)
    assert listed.returncode == 0 and "INBOX" in listed.stdout, listed.stderr

    # The kept ticket is all the second client needs; the file is the user's alone.
    assert lab[CLIENT].host.file(TICKET_FILE).mode == 0o600
    assert password not in lab[CLIENT].host.file(TICKET_FILE).content_string
    again = sso_client(lab, "token", "--app", "mail")
    assert again.returncode == 0, again.stderr
    selected = lab[CLIENT].run_with_input(["python3", "-c", IMAPLIB_XOAUTH2], again.stdout)
    assert selected.returncode == 0 and selected.stdout.strip() == "OK", selected.stderr[-500:]

    # A token is good once.
    assert curl_mail(lab, first).returncode != 0


def test_the_ticket_is_useless_on_another_device(lab, tunnel) -> None:
    record = json.loads(lab[CLIENT].host.file(TICKET_FILE).content_string)
    stolen = {**record, "cert": f"{CREDENTIALS}/bob.pem"}
    thief = lab[CLIENT].run_with_input(
        ["sh", "-c", "umask 077; mkdir -p /tmp/thief/dmzkit-sso; cat > /tmp/thief/dmzkit-sso/credentials.json; "
                     "XDG_CONFIG_HOME=/tmp/thief dmzkit-sso-client token --app mail"],
        json.dumps(stolen))
    lab[CLIENT].host.run("rm -rf /tmp/thief")
    assert thief.returncode == 1 and "no valid ticket for this device" in thief.stderr


def test_after_logout_the_ticket_gets_nothing(lab, tunnel) -> None:
    record = lab[CLIENT].host.file(TICKET_FILE).content_string
    assert sso_client(lab, "logout").returncode == 0
    replayed = lab[CLIENT].run_with_input(
        ["sh", "-c", "umask 077; mkdir -p /tmp/replay/dmzkit-sso; cat > /tmp/replay/dmzkit-sso/credentials.json; "
                     "XDG_CONFIG_HOME=/tmp/replay dmzkit-sso-client token --app mail"], record)
    lab[CLIENT].host.run("rm -rf /tmp/replay")
    assert replayed.returncode == 1 and "no valid ticket" in replayed.stderr
