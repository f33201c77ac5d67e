"""AAA as the IPsec gateway meets it: strongSwan's eap-radius relays the
client's EAP to AAA, which offers EAP-TTLS only. The client shows its
device certificate in the TLS handshake and its password inside the
tunnel (EAP-GTC); the account is the certificate's. Each login here is
eapol_test on gw1, the gateway's host, with gw1's secret, so AAA meets
exactly what strongSwan would send it, and the cases strongSwan would
never send."""
from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from lab_aaa import AAA, CLIENT, GW, SECRETS, answer_detail, audited, psql, secret

WORK = "/run/dmzkit-eap-test"
DOMAIN = "lab.dmzkit.test"
AAA_NAME = f"aaa.{DOMAIN}"


@pytest.fixture(scope="module")
def certificates(lab) -> Iterator[None]:
    """alice's and bob's device certificates (key, certificate, issuing CA)
    from client1, and one of another CA for alice's address, on gw1."""
    gw = lab[GW]
    gw.host.run_test(f"install -d -m 0700 {WORK}")
    for user in ("alice", "bob"):
        pem = lab[CLIENT].host.file(f"/root/dmzkit/{user}.pem").content_string
        assert gw.run_with_input(["sh", "-c", f"umask 077; cat > {WORK}/{user}.pem"], pem).returncode == 0
    made = gw.host.run(
        f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj '/O=elsewhere/CN=alice'"
        f" -addext 'subjectAltName=email:alice@{DOMAIN}' -addext 'extendedKeyUsage=clientAuth'"
        f" -keyout {WORK}/other.key -out {WORK}/other.crt && cat {WORK}/other.key {WORK}/other.crt > {WORK}/other.pem")
    assert made.rc == 0, made.stderr
    yield
    gw.host.run(f"rm -rf {WORK}")


def login(lab, identity: str, password: str, certificate: str | None, method: str = "TTLS",
          nas: str = "strongswan", outer: str | None = None) -> bool:
    """One EAP login from gw1 (identity inside the tunnel, and outside too
    unless `outer` says otherwise); True when AAA accepted it (eapol_test
    also checks the answers' Message-Authenticator and the MPPE keys)."""
    network = {"key_mgmt": "WPA-EAP", "eap": method, "identity": f'"{identity}"', "password": f'"{password}"',
               "ca_cert": '"/etc/dmzkit-pki/ca-chain.pem"', "domain_match": f'"{AAA_NAME}"',
               "phase2": '"autheap=GTC"'}
    if outer:
        network["anonymous_identity"] = f'"{outer}"'
    if certificate:
        network |= {"client_cert": f'"{WORK}/{certificate}.pem"', "private_key": f'"{WORK}/{certificate}.pem"'}
    config = f"{WORK}/{uuid.uuid4().hex}.conf"
    body = "network={\n" + "".join(f"\t{key}={value}\n" for key, value in network.items()) + "}\n"
    gw = lab[GW]
    assert gw.run_with_input(["sh", "-c", f"umask 077; cat > {config}"], body).returncode == 0
    try:
        run = gw.run_with_input(
            ["sh", "-c", f'eapol_test -c {config} -a {lab[AAA].address("internal")} -s "$(cat)" -N32:s:{nas} -t 10'],
            secret("aaa_gw1"))
    finally:
        gw.host.run(f"rm -f {config}")
    last = run.stdout.strip().splitlines()[-1]
    assert last in ("SUCCESS", "FAILURE"), run.stdout[-2000:]
    return last == "SUCCESS"


def last_answer(lab) -> tuple[str, str, dict]:
    row = audited(lab, "SELECT subject || '|' || outcome || '|' || detail FROM dmzkit.audit_log "
                  "WHERE event = 'aaa.access' ORDER BY id DESC LIMIT 1")
    subject, outcome, detail = row.split("|", 2)
    return subject, outcome, answer_detail(detail)


def failed_attempts(lab, user: str) -> str:
    return psql(lab, "SELECT failed_attempts FROM dmzkit.credentials c JOIN dmzkit.users u ON u.id = c.user_id "
                     f"WHERE username = '{user}'")


@pytest.mark.usefixtures("certificates")
@pytest.mark.parametrize(("user", "profile"), [("alice", "staff"), ("bob", "contractors")])
def test_the_device_certificate_and_the_password_get_the_users_profile(lab, user: str, profile: str) -> None:
    assert login(lab, f"{user}@{DOMAIN}", secret(f"sso_{user}"), user)
    assert last_answer(lab) == (user, "success", {"nas": "gw1", "profile": profile, "reason": "password checked"})


@pytest.mark.usefixtures("certificates")
def test_a_wrong_password_is_refused_and_counted(lab) -> None:
    assert not login(lab, f"alice@{DOMAIN}", "not her password", "alice")
    assert last_answer(lab) == ("alice", "failure", {"nas": "gw1", "reason": "password refused"})
    assert failed_attempts(lab, "alice") == "1"
    assert login(lab, f"alice@{DOMAIN}", secret("sso_alice"), "alice")
    assert failed_attempts(lab, "alice") == "0"


@pytest.mark.usefixtures("certificates")
@pytest.mark.parametrize("certificate", [None, "other"])
def test_no_certificate_or_another_cas_gets_no_password_check(lab, certificate: str | None) -> None:
    """The TLS handshake fails before any password is asked: alice's right
    password does not help, and nothing counts against her account."""
    assert not login(lab, f"alice@{DOMAIN}", secret("sso_alice"), certificate)
    assert last_answer(lab) == (f"alice@{DOMAIN}", "failure", {"nas": "gw1", "reason": "EAP-TTLS refused"})
    assert failed_attempts(lab, "alice") == "0"


@pytest.mark.usefixtures("certificates")
def test_a_password_opens_only_its_own_devices_account(lab) -> None:
    """With bob's device, alice's name is refused, and alice's password is
    checked as bob's (the account is the certificate's)."""
    assert not login(lab, f"alice@{DOMAIN}", secret("sso_alice"), "bob")
    assert last_answer(lab) == (f"alice@{DOMAIN}", "failure",
                                {"nas": "gw1", "reason": "identity is not the certificate's"})
    assert not login(lab, f"bob@{DOMAIN}", secret("sso_alice"), "bob")
    assert last_answer(lab) == ("bob", "failure", {"nas": "gw1", "reason": "password refused"})
    assert login(lab, f"bob@{DOMAIN}", secret("sso_bob"), "bob")


@pytest.mark.usefixtures("certificates")
def test_the_identity_outside_the_tunnel_is_the_certificates_too(lab) -> None:
    """The gateway's accounting names the identity outside the tunnel: alice
    with her own device and password may not go by bob's name there."""
    assert not login(lab, f"alice@{DOMAIN}", secret("sso_alice"), "alice", outer=f"bob@{DOMAIN}")
    assert last_answer(lab) == (f"alice@{DOMAIN}", "failure",
                                {"nas": "gw1", "reason": "identity is not the certificate's"})


@pytest.mark.usefixtures("certificates")
def test_only_eap_ttls_is_offered_outside_the_tunnel(lab) -> None:
    """EAP-GTC outside the tunnel would carry the password in the clear
    across the gateway and the network, with no certificate at all."""
    assert not login(lab, f"alice@{DOMAIN}", secret("sso_alice"), None, method="GTC")
    assert last_answer(lab) == (f"alice@{DOMAIN}", "failure", {"nas": "gw1", "reason": "EAP-TTLS refused"})
    assert failed_attempts(lab, "alice") == "0"


@pytest.mark.usefixtures("certificates")
def test_only_strongswan_asks_with_eap(lab) -> None:
    assert not login(lab, f"alice@{DOMAIN}", secret("sso_alice"), "alice", nas="ocserv")
    assert last_answer(lab) == (f"alice@{DOMAIN}", "failure", {"nas": "gw1", "reason": "EAP from strongswan only"})


@pytest.mark.irreversible
@pytest.mark.usefixtures("certificates")
def test_a_revoked_device_is_refused_once_the_crl_is_fetched(lab, converge, throwaway_user) -> None:
    """A device certificate of its own, revoked at the CA: AAA refuses its
    TLS handshake once the trust job has fetched the CRL (which restarts
    FreeRADIUS), before any password is asked. The device has no account, so before the
    revocation its handshake passes and the password check refuses it."""
    user = throwaway_user("eap-revoked", "staff", limit="ca1")
    bundle = SECRETS / "bundles" / f"{user.name}.p12"
    subprocess.run(["podman", "cp", str(bundle), f"{GW}:{WORK}/{user.name}.p12"], check=True)
    unpacked = lab[GW].run_with_input(
        ["openssl", "pkcs12", "-in", f"{WORK}/{user.name}.p12", "-passin", "stdin", "-noenc",
         "-out", f"{WORK}/{user.name}.pem"], user.passphrase + "\n")
    assert unpacked.returncode == 0, unpacked.stderr
    identity = f"{user.name}@{DOMAIN}"
    assert not login(lab, identity, "any password", user.name)
    assert last_answer(lab)[0] == user.name and last_answer(lab)[2]["reason"] == "password refused"
    run = converge({"ca_revoked": [user.name]}, limit="ca1")
    assert run.rc == 0, run.output[-3000:]
    lab[AAA].host.run_test("systemctl start dmzkit-crl-fetch.service")
    assert not login(lab, identity, "any password", user.name)
    assert last_answer(lab) == (identity, "failure", {"nas": "gw1", "reason": "EAP-TTLS refused"})
