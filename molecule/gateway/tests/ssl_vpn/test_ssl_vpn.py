"""Journey ssl_vpn, from the external user's machine: the clientless portal
and the SSL VPN tunnel with two-way certificate login, the apps behind them,
and every refusal (no certificate, revoked certificate, forged identity,
routes outside the user's group, requests around the gateway).

Tests run in file order; the revocation is of a contractor issued for that
test alone, and runs after every other journey's tests (irreversible)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CLIENT = "client1"
GATEWAY = "gw1"
CREDENTIALS = "/root/dmzkit"
VPN = "https://vpn.lab.dmzkit.test/"
PORTAL = "https://portal.lab.dmzkit.test"
APP = "https://app1.lab.dmzkit.test:8443"
MAIL = "imaps://app1.lab.dmzkit.test/"
SECRETS = Path("/var/lib/dmzkit-lab/secrets")
CA_ADDRESS = "198.18.2.10"


def curl(lab, user: str | None, url: str, *extra: str):
    cert = f"--cert {CREDENTIALS}/{user}.pem" if user else ""
    return lab[CLIENT].host.run(f"curl -sS --max-time 10 {cert} {' '.join(extra)} {url}")


def vpn_login(lab, user: str | None):
    """Authenticate to ocserv only (no tunnel); rc 0 when the login passed."""
    cert = f"-c {CREDENTIALS}/{user}.pem" if user else ""
    return lab[CLIENT].host.run(f"timeout 20 openconnect --non-inter --authenticate {cert} {VPN}")


@contextmanager
def tunnel(lab, user: str) -> Iterator[None]:
    client = lab[CLIENT].host
    pid = f"/run/openconnect-{user}.pid"
    started = client.run(
        f"timeout 30 openconnect --background --pid-file={pid} --interface=tun-{user} "
        f"--non-inter -c {CREDENTIALS}/{user}.pem {VPN}"
    )
    assert started.rc == 0, started.stderr
    try:
        client.run_test(f"timeout 10 sh -c 'until ip link show tun-{user} >/dev/null 2>&1; do sleep 0.2; done'")
        yield
    finally:
        client.run(f"kill $(cat {pid}) && timeout 10 sh -c 'while ip link show tun-{user} >/dev/null 2>&1; do sleep 0.2; done'")


def imap_list(lab, user: str, password: str):
    """List the user's mailboxes over IMAPS; the credentials go through stdin."""
    return lab[CLIENT].run_with_input(
        ["curl", "-sS", "--max-time", "10", "--netrc-file", "/dev/stdin", MAIL],
        f"machine app1.lab.dmzkit.test login {user} password {password}\n",
    )


def test_gateway_holds_the_vip_and_forwards(lab):
    gw = lab[GATEWAY].host
    active = gw.run("systemctl is-active ocserv nginx dmzkit-gateway-vip dmzkit-host-firewall").stdout.split()
    assert active == ["active"] * 4
    assert "198.18.1.10/24" in gw.run_test("ip -4 -o address show").stdout
    assert gw.run_test("sysctl -n net.ipv4.ip_forward").stdout.strip() == "1"
    assert gw.run("ocserv --test-config --config /etc/ocserv/ocserv.conf").rc == 0


def test_the_vip_guard_follows_ocserv_and_nginx_behind_the_one_host_table(lab):
    gw = lab[GATEWAY].host
    after = gw.run_test("systemctl show dmzkit-gateway-vip -p After").stdout.strip().removeprefix("After=").split()
    assert {"ocserv.service", "nginx.service"} <= set(after)
    tables = gw.run_test("nft list tables").stdout
    assert "table inet dmzkit_host" in tables and "table inet ssl_vpn_gateway" not in tables


def test_portal_shows_the_user_from_the_certificate(lab):
    whoami = curl(lab, "alice", f"{PORTAL}/whoami")
    assert whoami.rc == 0, whoami.stderr
    assert json.loads(whoami.stdout) == {"user": "alice", "via": "portal"}
    page = curl(lab, "alice", f"{PORTAL}/")
    assert '<strong id="user">alice</strong>' in page.stdout


def test_forged_identity_header_is_ignored(lab):
    forged = curl(lab, "alice", f"{PORTAL}/whoami", "-H 'X-Dmzkit-User: bob'", "-H 'X_Dmzkit_User: bob'")
    assert json.loads(forged.stdout) == {"user": "alice", "via": "portal"}


def test_no_certificate_no_tls(lab):
    portal = curl(lab, None, f"{PORTAL}/whoami")
    assert portal.rc != 0 and portal.stdout == ""
    portal_server = PORTAL.removeprefix("https://") + ":443"
    assert "tlsv13 alert certificate required" in lab[CLIENT].tls_refusal(portal_server, "-tls1_3")
    assert "alert handshake failure" in lab[CLIENT].tls_refusal(portal_server, "-tls1_2")
    assert vpn_login(lab, None).rc != 0


def test_internal_network_unreachable_without_the_tunnel(lab):
    assert not lab[CLIENT].connects(lab["app1"].address("internal"), 8443)


def test_tunnel_reaches_the_bs_and_cs_apps(lab):
    password = (SECRETS / "cs_app_alice").read_text().strip()
    with tunnel(lab, "alice"):
        whoami = curl(lab, "alice", f"{APP}/whoami", "-H 'X-Dmzkit-User: bob'")
        assert json.loads(whoami.stdout) == {"user": "alice", "via": "certificate"}
        mail = imap_list(lab, "alice", password)
        assert mail.returncode == 0, mail.stderr
        assert "INBOX" in mail.stdout
        wrong = imap_list(lab, "alice", password + "x")
        assert wrong.returncode != 0
        # staff's group routes the whole internal network
        assert lab[CLIENT].connects(CA_ADDRESS, 80)


def test_group_routes_limit_a_contractor(lab):
    with tunnel(lab, "bob"):
        routes = lab[CLIENT].host.run_test("ip -4 route show dev tun-bob").stdout
        assert "198.18.2.70" in routes and "198.18.2.0/24" not in routes
        whoami = curl(lab, "bob", f"{APP}/whoami")
        assert json.loads(whoami.stdout) == {"user": "bob", "via": "certificate"}
        # Routed into the tunnel by hand: the gateway still drops it.
        lab[CLIENT].host.run_test(f"ip route replace {CA_ADDRESS}/32 dev tun-bob")
        assert lab[CLIENT].pings("198.18.2.70")
        assert not lab[CLIENT].connects(CA_ADDRESS, 80)
        assert not lab[CLIENT].pings(CA_ADDRESS)


def test_app_refuses_requests_around_the_gateway(lab):
    """From the internal network, with a valid user certificate: refused,
    because the request did not come through the gateway."""
    users = "/var/lib/dmzkit-ca/private/users"
    result = lab["ca1"].host.run(
        f"curl -sS --max-time 10 --cert {users}/alice.crt --key {users}/alice.key "
        f"--cacert /var/lib/dmzkit-ca/pub/ca-chain.pem {APP}/whoami "
        f"--resolve app1.lab.dmzkit.test:8443:{lab['app1'].address('internal')} -w '%{{http_code}}'"
    )
    assert result.stdout.endswith("403")
    assert "do not come through the gateway" in result.stdout


@pytest.mark.irreversible
def test_revoked_certificate_is_refused(lab, converge, throwaway_user):
    user = throwaway_user("vpn-revoked", "contractors", limit="ca1,client1").name
    assert vpn_login(lab, user).rc == 0
    run = converge({"ca_revoked": [user]}, limit="ca1,gw1")
    assert run.rc == 0, run.output[-3000:]
    portal = curl(lab, user, f"{PORTAL}/whoami", "-w '%{http_code}'")
    assert portal.stdout.endswith("400")
    assert "certificate" in portal.stdout and user not in portal.stdout
    refused = vpn_login(lab, user)
    assert refused.rc != 0
    # alice and bob are untouched
    assert vpn_login(lab, "alice").rc == 0
    assert vpn_login(lab, "bob").rc == 0
