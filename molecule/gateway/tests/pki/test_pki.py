"""Journey pki: the CA in use. Chains and purposes, a mutual-TLS handshake
between a DMZ server and an internet client, the role's refusals, renewal
after a SAN change, and revocation (of a user issued for that test alone)
reaching the server through the pushed CRL.

The re-converges run pki.yml (the CA and the test server only): what they
exercise is the CA, and the rest of the lab has nothing to do with it."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

PLAYBOOK = "pki.yml"
CA_DIR = "/var/lib/dmzkit-ca"
PKI = "/etc/dmzkit-pki"
SERVER = "gw1"
SERVER_NAME = "gw1.lab.dmzkit.test"
# The gateway's nginx holds port 443 on the VIP and on gw1's own address: the
# test server gets a DMZ address of its own, and a rule in the gateway's
# firewall for as long as it runs.
SERVER_ADDRESS = "198.18.1.12"
OPENING = f'ip daddr {SERVER_ADDRESS} tcp dport 443 accept comment "dmzkit-verify pki"'
SECRETS = Path("/var/lib/dmzkit-lab/secrets")
CLIENT_DIR = "/root/pki"


def issued_serials(lab) -> dict[str, str]:
    out = lab["ca1"].host.run_test(
        f"for f in {CA_DIR}/issued/*.pem; do echo \"$(basename $f .pem) $(openssl x509 -noout -serial -in $f)\"; done"
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def tree_digest(host, *paths: str) -> str:
    return host.run_test(f"find {' '.join(paths)} -type f -print0 | sort -z | xargs -0 sha256sum").stdout


def unpack(client, bundle: str, user: str, passphrase: str) -> None:
    """A user's key and certificate (and the issuing CA), unpacked on the
    client from their PKCS#12 at bundle; the passphrase goes through stdin."""
    client.host.run_test(f"install -d -m 0700 {CLIENT_DIR}")
    parts = {f"{user}.crt": ["-clcerts", "-nokeys"], f"{user}.key": ["-nocerts", "-noenc"],
             "issuing.pem": ["-cacerts", "-nokeys"]}
    for name, flags in parts.items():
        result = client.run_with_input(
            ["openssl", "pkcs12", "-in", bundle, "-passin", "stdin", *flags, "-out", f"{CLIENT_DIR}/{name}"],
            passphrase + "\n",
        )
        assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def alice(lab):
    """alice's key and certificate, unpacked from her PKCS#12 on the client."""
    client = lab["client1"]
    unpack(client, "/root/dmzkit/alice.p12", "alice", (SECRETS / "user_alice").read_text().strip())
    return client


@pytest.fixture
def tls_server(lab, transient_service):
    """openssl s_server on the gateway, demanding a client certificate that
    chains to the CA and is not on the CRL (read when the server starts)."""
    gw = lab[SERVER].host

    def start() -> None:
        gw.run_expect([0], f"ip address replace {SERVER_ADDRESS}/32 dev eth0")
        if OPENING not in gw.check_output("nft list chain inet dmzkit_host input"):
            gw.run_expect([0], f"nft 'insert rule inet dmzkit_host input {OPENING}'")
        transient_service(
            SERVER, "verify-tls-server",
            f"openssl s_server -accept {SERVER_ADDRESS}:443 -www -cert {PKI}/{SERVER}-tls.crt "
            f"-key {PKI}/{SERVER}-tls.key -cert_chain {PKI}/ca-chain.pem -CAfile {PKI}/ca-chain.pem "
            f"-Verify 2 -verify_return_error -crl_check -CRL {PKI}/crl.pem",
            443, address=SERVER_ADDRESS,
        )

    yield start
    handles = gw.run("nft -a list chain inet dmzkit_host input").stdout.splitlines()
    for line in handles:
        if "dmzkit-verify pki" in line:
            gw.run(f"nft delete rule inet dmzkit_host input handle {line.rsplit('handle ', 1)[1]}")
    gw.run(f"ip address del {SERVER_ADDRESS}/32 dev eth0")


def handshake(lab, user: str | None = "alice"):
    cert = f"-cert {CLIENT_DIR}/{user}.crt -key {CLIENT_DIR}/{user}.key" if user else ""
    return lab["client1"].host.run(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 10 openssl s_client -quiet "
        f"-connect {SERVER_ADDRESS}:443 -servername {SERVER_NAME} "
        f"-verify_hostname {SERVER_NAME} -CAfile /etc/ssl/certs/ca-certificates.crt -verify_return_error {cert}"
    )


def test_keys_never_leave_their_hosts_and_are_private(lab):
    ca = lab["ca1"].host
    for key in ("root.key", "issuing.key"):
        f = ca.file(f"{CA_DIR}/private/{key}")
        assert f.mode == 0o600 and f.user == "root"
        assert "ENCRYPTED" in f.content_string
    gw_key = lab[SERVER].host.file(f"{PKI}/{SERVER}-tls.key")
    assert gw_key.mode == 0o600
    # The gateway's key material appears nowhere on the CA host (the pattern
    # goes through stdin, so it never shows in a command line or a report).
    key_line = gw_key.content_string.splitlines()[1]
    search = lab["ca1"].run_with_input(["grep", "-rqF", "-f", "-", "/var/lib", "/etc", "/root", "/tmp"], key_line + "\n")
    assert search.returncode == 1, "gateway key material found on the CA host"
    bundle = SECRETS / "bundles" / "alice.p12"
    assert bundle.stat().st_mode & 0o777 == 0o600


def test_server_certificate_chains_with_the_server_purpose(lab):
    gw = lab[SERVER].host
    gw.run_test(f"openssl verify -CAfile {PKI}/ca-chain.pem -purpose sslserver {PKI}/{SERVER}-tls.crt")
    text = gw.run_test(f"openssl x509 -noout -text -in {PKI}/{SERVER}-tls.crt").stdout
    assert f"DNS:{SERVER_NAME}" in text and f"IP Address:{lab[SERVER].address('dmz')}" in text
    assert gw.run(f"openssl verify -CAfile {PKI}/ca-chain.pem -purpose sslclient {PKI}/{SERVER}-tls.crt").rc != 0


def test_user_certificate_chains_with_the_client_purpose_only(alice):
    verify = (f"openssl verify -CAfile /etc/ssl/certs/ca-certificates.crt -untrusted {CLIENT_DIR}/issuing.pem "
              f"-purpose {{}} {CLIENT_DIR}/alice.crt")
    alice.host.run_test(verify.format("sslclient"))
    assert alice.host.run(verify.format("sslserver")).rc != 0
    text = alice.host.run_test(f"openssl x509 -noout -text -in {CLIENT_DIR}/alice.crt").stdout
    assert "email:alice@lab.dmzkit.test" in text


def test_issuing_ca_carries_the_name_constraints(lab):
    text = lab["ca1"].host.run_test(f"openssl x509 -noout -text -in {CA_DIR}/issuing.pem").stdout
    assert "X509v3 Name Constraints: critical" in text
    assert "DNS:lab.dmzkit.test" in text and "email:lab.dmzkit.test" in text
    assert "pathlen:0" in text


def test_mutual_tls_handshake_succeeds(lab, alice, tls_server):
    tls_server()
    result = handshake(lab)
    assert result.rc == 0, result.stderr
    assert "HTTP/1.0 200 ok" in result.stdout
    assert "CN=alice" in result.stdout or "CN = alice" in result.stdout


def test_handshake_without_a_client_certificate_is_refused(lab, alice, tls_server):
    tls_server()
    result = handshake(lab, user=None)
    assert "HTTP/1.0 200 ok" not in result.stdout
    assert "alert" in result.stderr.lower() or result.rc != 0


def test_crl_is_published_and_the_timers_run(lab):
    ca_address = lab["ca1"].address("internal")
    gw = lab[SERVER].host
    published = gw.run_test(
        f"python3 -c \"import urllib.request;print(urllib.request.urlopen('http://{ca_address}/crl.pem').read().decode())\""
    ).stdout
    assert published.strip() == gw.file(f"{PKI}/crl.pem").content_string.strip()
    lab["ca1"].host.run_test("systemctl start dmzkit-crl-resign.service")
    gw.run_test("systemctl start dmzkit-crl-fetch.service")
    assert lab["ca1"].host.service("dmzkit-crl-resign.timer").is_running
    assert gw.service("dmzkit-crl-fetch.timer").is_running


def ocsp_status(lab, name: str) -> str:
    serial = issued_serials(lab)[name].split("=", 1)[1]
    answer = lab[SERVER].host.run_test(
        f"openssl ocsp -issuer {PKI}/ca-chain.pem -serial 0x{serial} -CAfile {PKI}/ca-chain.pem "
        f"-url http://{lab['ca1'].address('internal')}:2560"
    )
    # The status goes to stdout, the signature check ("Response verify OK") to stderr.
    return answer.stdout + answer.stderr


def test_ocsp_responder_answers_good_for_a_valid_certificate(lab):
    answer = ocsp_status(lab, "alice")
    assert ": good" in answer and "Response verify OK" in answer


@pytest.mark.parametrize(
    ("extra_vars", "limit", "message"),
    [
        ({"ca_issue_profile": "nonsense"}, SERVER, "unknown profile 'nonsense'"),
        ({"ca_test_extra_names": ["DNS:portal.example.com"]}, SERVER,
         "not allowed by the CA's name constraints: DNS:portal.example.com"),
        ({"ca_issue_common_name": "alice", "ca_issue_organizational_unit": "staff"}, SERVER,
         "is already issued as 'alice'"),
        ({"ca_revoked": ["nobody"]}, "ca1", "never issued: nobody"),
        ({"ca_root_key_passphrase": ""}, "ca1", "must be non-empty"),
    ],
    ids=["unknown-profile", "san-outside-constraints", "duplicate-subject", "unknown-revocation", "missing-passphrase"],
)
def test_bad_input_is_refused_before_anything_changes(lab, converge, extra_vars, limit, message):
    before = (tree_digest(lab["ca1"].host, CA_DIR), tree_digest(lab[SERVER].host, PKI))
    # Limited to the host whose input is bad, so the refusal comes first.
    run = converge(extra_vars, limit=limit, playbook=PLAYBOOK)
    assert run.rc != 0
    assert message in run.output
    assert "Traceback" not in run.output
    assert (tree_digest(lab["ca1"].host, CA_DIR), tree_digest(lab[SERVER].host, PKI)) == before


def test_expired_ca_is_refused(lab, converge):
    expired_dir = "/var/lib/dmzkit-ca-expired"
    script = (
        "import datetime as d, os\n"
        "from cryptography import x509\n"
        "from cryptography.hazmat.primitives import hashes, serialization\n"
        "from cryptography.hazmat.primitives.asymmetric import ec\n"
        "from cryptography.x509.oid import NameOID\n"
        "k = ec.generate_private_key(ec.SECP256R1())\n"
        "n = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'old root')])\n"
        "t = d.datetime(2020, 1, 1)\n"
        "c = (x509.CertificateBuilder().subject_name(n).issuer_name(n).public_key(k.public_key())"
        ".serial_number(1).not_valid_before(t).not_valid_after(t + d.timedelta(days=30)).sign(k, hashes.SHA256()))\n"
        f"os.makedirs('{expired_dir}', exist_ok=True)\n"
        f"open('{expired_dir}/root.pem', 'wb').write(c.public_bytes(serialization.Encoding.PEM))\n"
    )
    lab["ca1"].host.run_test("python3 -c %s", script)
    run = converge({"ca_dir": expired_dir}, limit="ca1", playbook=PLAYBOOK)
    assert run.rc != 0
    assert f"{expired_dir}/root.pem expired" in run.output
    assert not lab["ca1"].host.file(f"{expired_dir}/private").exists
    lab["ca1"].host.run_test(f"rm -rf {expired_dir}")


def test_adding_a_san_reissues_exactly_that_certificate(lab, converge):
    before = issued_serials(lab)
    run = converge({"ca_test_extra_names": ["DNS:portal.lab.dmzkit.test"]}, limit=f"ca1,{SERVER}",
                   playbook=PLAYBOOK)
    assert run.rc == 0, run.output[-3000:]
    after = issued_serials(lab)
    assert {name for name in before if before[name] != after[name]} == {f"{SERVER}-tls"}
    text = lab[SERVER].host.run_test(f"openssl x509 -noout -text -in {PKI}/{SERVER}-tls.crt").stdout
    assert "DNS:portal.lab.dmzkit.test" in text


# What root on a DMZ host can do to the requests Ansible makes there: every
# Python started on the host hands back a request for alice's subject, for
# client authentication, signed with the host's own key.
TAMPER = """
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_sign = x509.CertificateSigningRequestBuilder.sign


def sign(self, key, algorithm, *args, **kwargs):
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dmzkit remote access"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "staff"),
        x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
    for extension in self._extensions:
        if extension.oid != x509.ExtendedKeyUsage.oid:
            builder = builder.add_extension(extension.value, extension.critical)
    builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return _sign(builder, key, algorithm, *args, **kwargs)


x509.CertificateSigningRequestBuilder.sign = sign
"""


@pytest.fixture
def host_taken_over(lab):
    """The test server's host with its certificate requests tampered with,
    through a .pth file every Python on it reads at start."""
    gw = lab[SERVER]
    # Beside cryptography: a .pth runs when its directory joins sys.path.
    site = gw.host.check_output(
        "python3 -c 'import cryptography, os; print(os.path.dirname(os.path.dirname(cryptography.__file__)))'")
    files = (f"{site}/dmzkit_verify_tamper.py", f"{site}/dmzkit-verify-tamper.pth")
    try:
        for path, text in zip(files, (TAMPER, "import dmzkit_verify_tamper\n")):
            written = gw.run_with_input(["sh", "-c", f"mkdir -p {site} && cat > {path}"], text)
            assert written.returncode == 0, written.stderr
        yield gw
    finally:
        gw.host.run_expect([0], f"rm -f {' '.join(files)}")


def test_a_host_taken_over_cannot_choose_what_the_ca_signs(lab, converge, host_taken_over):
    before = (tree_digest(lab["ca1"].host, CA_DIR), tree_digest(host_taken_over.host, PKI))
    run = converge(limit=f"ca1,{SERVER}", playbook=PLAYBOOK)
    assert run.rc != 0
    assert f"Certificate '{SERVER}-tls': refused to sign the request that {SERVER} handed back" in run.output
    assert "subject CN=alice,OU=staff,O=dmzkit remote access" in run.output
    assert "Traceback" not in run.output
    assert (tree_digest(lab["ca1"].host, CA_DIR), tree_digest(host_taken_over.host, PKI)) == before


@pytest.mark.irreversible
def test_revoked_client_is_refused_once_the_crl_is_pushed(lab, alice, converge, tls_server, throwaway_user):
    user = throwaway_user("pki-revoked", "staff", limit="ca1", playbook=PLAYBOOK)
    bundle = f"{CLIENT_DIR}/{user.name}.p12"
    subprocess.run(["podman", "cp", str(SECRETS / "bundles" / f"{user.name}.p12"), f"client1:{bundle}"], check=True)
    unpack(alice, bundle, user.name, user.passphrase)
    tls_server()
    assert "HTTP/1.0 200 ok" in handshake(lab, user.name).stdout
    serial = issued_serials(lab)[user.name].split("=", 1)[1]
    run = converge({"ca_revoked": [user.name]}, limit=f"ca1,{SERVER}", playbook=PLAYBOOK)
    assert run.rc == 0, run.output[-3000:]
    crl = lab[SERVER].host.run_test(f"openssl crl -noout -text -in {PKI}/crl.pem").stdout
    assert f"Serial Number: {serial}" in crl
    tls_server()
    result = handshake(lab, user.name)
    assert "HTTP/1.0 200 ok" not in result.stdout
    assert "revoked" in (result.stdout + result.stderr).lower()
    assert ": revoked" in ocsp_status(lab, user.name)
    # The bundle of a revoked user is not re-issued, and alice is untouched.
    assert issued_serials(lab)[user.name].split("=", 1)[1] == serial
    assert "HTTP/1.0 200 ok" in handshake(lab).stdout
    assert os.path.exists(SECRETS / "bundles" / "alice.p12")
