"""The file service: SFTP on files1 (role file_server) for users in the
tunnels. The access group decides twice: the gateway routes only staff to
the server (contractors' packets never reach it, as its own log shows), and
AAA, asked for every login (as NAS "files", through PAM and the relay on
files1), lets in only a profile that allows the service."""
from __future__ import annotations

import json
import secrets as random
from pathlib import Path

import pytest
from lab_aaa import APP, CLIENT, GW, audited, ipsec_sa, ipsec_tunnel, psql, secret, tunnel

FILES = "files1"
# What a user's machine runs, shared with `make demo`'s journeys.
SFTP_SESSION = (Path(__file__).resolve().parents[4] / "lab/journeys/sftp_session.py").read_text()


def host_key(lab) -> str:
    return " ".join(lab[FILES].host.file("/etc/dmzkit-sftpd/ssh_host_ed25519_key.pub").content_string.split()[:2])


def sftp(lab, host: str, user: str, password: str, content: str, name: str) -> dict:
    run = lab[host].run_with_input(["python3", "-c", SFTP_SESSION], json.dumps(
        {"user": user, "password": password, "address": lab[FILES].address("internal"), "host_key": host_key(lab),
         "content": content, "name": name}))
    assert run.returncode == 0, run.stderr[-800:]
    return json.loads(run.stdout)


def log_cursor(lab) -> str:
    return lab[FILES].host.run("journalctl -u dmzkit-sftpd -n 0 --show-cursor --no-pager").stdout.split("cursor: ")[-1].strip()


def service_log(lab, cursor: str) -> str:
    """What the service's sshd logged after the cursor (LogLevel VERBOSE: every connection)."""
    return lab[FILES].host.run("journalctl -u dmzkit-sftpd --after-cursor %s -o cat --no-pager", cursor).stdout


def last_files_answer(lab, user: str) -> str:
    return audited(lab, "SELECT outcome || ':' || (detail->>'reason') FROM dmzkit.audit_log WHERE event = 'aaa.access' "
                   f"AND subject = '{user}' AND detail->>'nas' = '{FILES}' ORDER BY id DESC LIMIT 1")


def tunnel_address(lab, vpn, user: str) -> str:
    """The address the servers inside see: the gateway's for the SSL VPN
    (masqueraded), the user's own pool address for IPsec (routed)."""
    return ipsec_sa(lab, user)["vip"] if vpn is ipsec_tunnel else lab[GW].address("dmz")


@pytest.mark.parametrize("vpn", [tunnel, ipsec_tunnel], ids=["ssl_vpn", "ipsec"])
def test_staff_share_files_through_the_tunnel(lab, vpn) -> None:
    name, content = f"report-{random.token_hex(4)}.txt", f"quarterly figures {random.token_hex(8)}\n"
    cursor = log_cursor(lab)
    with vpn(lab, "alice", secret("sso_alice")) as run:
        assert run.returncode == 0, (run.stdout + run.stderr)[-800:]
        session = sftp(lab, CLIENT, "alice", secret("sso_alice"), content, name)
        source = tunnel_address(lab, vpn, "alice")
    assert session == {"outcome": "logged in", "start": "/home/alice", "root": ["home", "shared"], "read_back": True}
    assert last_files_answer(lab, "alice").startswith("success:")
    log = service_log(lab, cursor)
    # "Connection from" is logged at VERBOSE only: the contractors' test
    # below proves nothing without it.
    assert f"Connection from {source} port " in log and f"Accepted password for alice from {source} port " in log, log
    # On the server: alice's, the group's, readable and writable by the group only.
    stored = lab[FILES].host.file(f"/srv/dmzkit-files/shared/{name}")
    assert (stored.content_string, stored.user, stored.group, stored.mode) == (content, "alice", "dmzkit-files", 0o660)


@pytest.mark.parametrize("vpn", [tunnel, ipsec_tunnel], ids=["ssl_vpn", "ipsec"])
def test_contractors_packets_never_reach_the_file_service(lab, vpn) -> None:
    cursor = log_cursor(lab)
    with vpn(lab, "bob", secret("sso_bob")) as run:
        assert run.returncode == 0, (run.stdout + run.stderr)[-800:]
        # His tunnel works (the application answers him); the file server does not.
        assert lab[CLIENT].connects(lab[APP].address("internal"), 8443)
        session = sftp(lab, CLIENT, "bob", secret("sso_bob"), "his notes\n", "bob.txt")
    assert session["outcome"] == "unreachable", session
    # Dropped at the gateway: the server saw no connection at all.
    assert "Connection from" not in service_log(lab, cursor)


def test_aaa_refuses_a_profile_without_the_file_service_at_the_server(lab) -> None:
    """Were a contractor's packets to reach the server (here from files1
    itself), AAA's answer still keeps him out, with a reason in its audit."""
    session = sftp(lab, FILES, "bob", secret("sso_bob"), "his notes\n", "bob.txt")
    assert session == {"outcome": "refused"}
    assert last_files_answer(lab, "bob") == "failure:file service not allowed"
    assert not lab[FILES].host.file("/srv/dmzkit-files/shared/bob.txt").exists
    # A wrong password is AAA's refusal too (and counted there).
    assert sftp(lab, FILES, "alice", "not her password", "x\n", "x.txt") == {"outcome": "refused"}
    assert last_files_answer(lab, "alice") == "failure:password refused"
    psql(lab, "UPDATE dmzkit.credentials SET failed_attempts = 0 WHERE user_id = "
              "(SELECT id FROM dmzkit.users WHERE username = 'alice')")
