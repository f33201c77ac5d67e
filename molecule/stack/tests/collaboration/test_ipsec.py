"""The IPsec gateway: strongSwan on gw1 lets a user in with the device's
certificate AND the password, both checked by AAA (EAP-TTLS relayed by
eap-radius), into the access group AAA names: that group's pool and that
group's networks only. From client1 with swanctl."""
from __future__ import annotations

import ipaddress
import time

import pytest
from lab_aaa import APP, CLIENT, GW, forged_answers, ipsec_sa, ipsec_tunnel, psql, secret

IDP = "idp1"
POOLS = {"staff": "198.18.9.0/25", "contractors": "198.18.9.128/25"}
CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("connected")
except OSError as e:
    print(type(e).__name__)
"""


def reaches(lab, address: str, port: int) -> bool:
    return lab[CLIENT].host.run("python3 -c %s %s %s", CONNECT, address, str(port)).stdout.strip() == "connected"


def last_answer(lab, subject: str) -> str:
    return psql(lab, "SELECT outcome || ':' || (detail->>'reason') FROM dmzkit.audit_log WHERE event = 'aaa.access' "
                     f"AND subject = '{subject}' ORDER BY id DESC LIMIT 1")


@pytest.mark.parametrize(("user", "group"), [("alice", "staff"), ("bob", "contractors")])
def test_device_and_password_open_the_tunnel_of_the_group_aaa_names(lab, user: str, group: str) -> None:
    internal = {name: lab[name].address("internal") for name in (APP, IDP)}
    with ipsec_tunnel(lab, user, secret(f"sso_{user}")) as run:
        assert run.returncode == 0, run.stdout[-2000:]
        sa = ipsec_sa(lab, user)
        assert sa["state"] == "ESTABLISHED"
        assert ipaddress.ip_address(sa["vip"]) in ipaddress.ip_network(POOLS[group])
        # libipsec in the lab's containers: the SA covers everything, and the
        # gateway's firewall lets each pool reach its group's routes only.
        assert sa["remote_ts"] == ["0.0.0.0/0"]
        assert last_answer(lab, user) == "success:password checked"
        # Both groups reach the application; only staff the IdP (the edge
        # firewall lets both through; the contractors' packets are dropped
        # at the gateway).
        assert reaches(lab, internal[APP], 8443)
        assert reaches(lab, internal[IDP], 443) == (group == "staff")


def test_a_wrong_password_gets_no_tunnel(lab) -> None:
    with ipsec_tunnel(lab, "alice", "not her password") as run:
        assert run.returncode != 0
        assert ipsec_sa(lab, "alice")["state"] is None
    assert last_answer(lab, "alice") == "failure:password refused"
    psql(lab, "UPDATE dmzkit.credentials SET failed_attempts = 0 WHERE user_id = "
              "(SELECT id FROM dmzkit.users WHERE username = 'alice')")


def test_the_tunnel_is_accounted_at_aaa(lab) -> None:
    with ipsec_tunnel(lab, "alice", secret("sso_alice")) as run:
        assert run.returncode == 0, run.stdout[-2000:]
        vip = ipsec_sa(lab, "alice")["vip"]
    deadline = time.monotonic() + 10
    query = ("SELECT string_agg(status, ',' ORDER BY id) FROM dmzkit.radius_accounting WHERE session_id = "
             "(SELECT session_id FROM dmzkit.radius_accounting WHERE nas = 'gw1' AND status = 'start' "
             f"AND username = 'alice@lab.dmzkit.test' AND framed_address = '{vip}' ORDER BY id DESC LIMIT 1)")
    while (recorded := psql(lab, query)) != "start,stop" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert recorded == "start,stop"


def test_an_answer_forged_at_aaas_address_with_a_wrong_secret_is_ignored(lab) -> None:
    """strongSwan asks AAA itself: an Access-Accept from AAA's own address
    but signed with a wrong secret is thrown away, and nobody gets in."""
    gw = lab[GW].host
    since = gw.check_output("date +%s")
    with forged_answers(lab) as forged:
        with ipsec_tunnel(lab, "alice", secret("sso_alice")) as run:
            assert run.returncode != 0
            assert ipsec_sa(lab, "alice")["state"] is None
        assert forged() == lab[GW].address("dmz")  # strongSwan asked, the forgery reached it
    log = gw.check_output(f"journalctl -u strongswan --since @{since} --no-pager")
    assert "RADIUS Response-Authenticator verification failed" in log
