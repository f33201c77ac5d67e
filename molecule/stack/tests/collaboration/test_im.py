"""IM logins through the tunnels, decided by AAA: Prosody on im1 asks AAA
(as NAS "im", through pam_radius_auth and the relay on im1) for every login.
alice's profile allows IM, bob's does not; both reach the IM server in their
SSL VPN and IPsec tunnels, and only alice gets in."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from lab_aaa import APP, CLIENT, IM, IM_DOMAIN, SYSTEM_CA, audited, ipsec_tunnel, psql, secret, tunnel

# What a user's machine runs, shared with `make demo`'s journeys.
XMPP_LOGIN = (Path(__file__).resolve().parents[4] / "lab/journeys/xmpp_login.py").read_text()


def xmpp_login(lab, host: str, user: str, password: str) -> dict:
    run = lab[host].run_with_input(["timeout", "30", "python3", "-c", XMPP_LOGIN, SYSTEM_CA], json.dumps(
        {"jid": f"{user}@{IM_DOMAIN}", "password": password, "address": lab[IM].address("internal")}))
    assert run.returncode == 0, run.stderr[-800:]
    return json.loads(run.stdout)


def last_im_answer(lab, user: str) -> str:
    return audited(lab, "SELECT outcome || ':' || (detail->>'reason') FROM dmzkit.audit_log WHERE event = 'aaa.access' "
                   f"AND subject = '{user}' AND detail->>'nas' = 'im1' ORDER BY id DESC LIMIT 1")


def test_a_user_whose_profile_allows_im_logs_in_through_the_tunnel(lab) -> None:
    with tunnel(lab, "alice", secret("sso_alice")) as run:
        assert run.returncode == 0, run.stderr[-800:]
        assert xmpp_login(lab, CLIENT, "alice", secret("sso_alice")) == {"logged_in": True, "why": "session started"}
        assert last_im_answer(lab, "alice").startswith("success:")
        assert xmpp_login(lab, CLIENT, "alice", "not her password") == {
            "logged_in": False, "why": "authentication failed"}
        assert last_im_answer(lab, "alice") == "failure:password refused"


def test_a_lock_at_the_user_database_stops_the_next_im_login(lab) -> None:
    """Nothing between Prosody and AAA remembers a password (saslauthd's
    credential cache, on in Debian, would let her in for hours)."""
    with tunnel(lab, "alice", secret("sso_alice")) as run:
        assert run.returncode == 0, run.stderr[-800:]
        assert xmpp_login(lab, CLIENT, "alice", secret("sso_alice"))["logged_in"]
        psql(lab, "UPDATE dmzkit.credentials SET locked_until = now() + interval '1 hour' "
                  "WHERE user_id = (SELECT id FROM dmzkit.users WHERE username = 'alice')")
        try:
            assert xmpp_login(lab, CLIENT, "alice", secret("sso_alice")) == {
                "logged_in": False, "why": "authentication failed"}
        finally:
            psql(lab, "UPDATE dmzkit.credentials SET locked_until = NULL, failed_attempts = 0 "
                      "WHERE user_id = (SELECT id FROM dmzkit.users WHERE username = 'alice')")


@pytest.mark.parametrize("vpn", [tunnel, ipsec_tunnel], ids=["ssl_vpn", "ipsec"])
def test_a_user_whose_profile_forbids_im_gets_the_tunnel_but_not_im(lab, vpn) -> None:
    with vpn(lab, "bob", secret("sso_bob")) as run:
        assert run.returncode == 0, (run.stdout + run.stderr)[-800:]
        assert xmpp_login(lab, CLIENT, "bob", secret("sso_bob")) == {"logged_in": False, "why": "authentication failed"}
        assert last_im_answer(lab, "bob") == "failure:IM not allowed"


def test_only_the_tunnels_side_reaches_the_im_server(lab) -> None:
    # app1 is on the IM server's own network, but no tunnel comes from it.
    assert not lab[APP].connects(lab[IM].address("internal"), 5222)
    # Without a tunnel, the edge firewall keeps the internet out.
    assert not lab[CLIENT].connects(lab[IM].address("internal"), 5222)
