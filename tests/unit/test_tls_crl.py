"""The TLS clients check the CA's CRL on the server's certificate: a real
TLS server on loopback, and a client built by tls.client_context or with
the files and checks of the portal's nginx towards its upstreams."""
from __future__ import annotations

import ast
import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from testpki import NOW, make_ca, make_crl, make_leaf, pem, write_key

from dmzkit_remote_access.tls import client_context, server_context

TOP = Path(__file__).resolve().parents[2]
SRC = TOP / "src" / "dmzkit_remote_access"
REVOKED_SERIAL = 0x5EC0_0001
YEAR = dt.timedelta(days=365)


def make_authority(name: str, signer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None
                   ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A root (no signer) or an issuing CA under it, as the ca role has them."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    signer_key, issuer = signer if signer else (key, None)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0 if signer else 1), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .sign(signer_key, hashes.SHA256())
    )
    return key, cert


@dataclass(frozen=True)
class Pki:
    where: Path

    def path(self, name: str) -> str:
        return str(self.where / name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Shaped like the ca role's: a root, an issuing CA, ca-chain.pem with
    both and crl.pem, the issuing CA's CRL (the root's is not given to the
    Python services). Two servers named localhost, one of them revoked; a
    client certificate; CRLs that are expired or of another CA."""
    where = tmp_path_factory.mktemp("pki")
    root_key, root_cert = make_authority("unit root")
    key, issuing = make_authority("unit issuing", (root_key, root_cert))
    (where / "ca-chain.pem").write_bytes(pem(issuing) + pem(root_cert))
    # What the ca role's `trust` adds for whole-chain verifiers: the root's CRL.
    root_crl = pem(make_crl(root_key, root_cert, NOW, NOW + YEAR, serials=()))
    (where / "ca-chain-crl.pem").write_bytes(pem(issuing) + pem(root_cert) + root_crl)
    (where / "crl.pem").write_bytes(pem(make_crl(key, issuing, NOW, NOW + YEAR, serials=(REVOKED_SERIAL,))))
    (where / "expired-crl.pem").write_bytes(pem(make_crl(key, issuing, NOW - 2 * YEAR, NOW - YEAR, serials=())))
    other_key, other = make_ca("another ca")
    (where / "other-crl.pem").write_bytes(pem(make_crl(other_key, other, NOW, NOW + YEAR, serials=())))
    for name, serial, server in (("good", None, True), ("revoked", REVOKED_SERIAL, True), ("client", None, False)):
        leaf_key, leaf = make_leaf(key, issuing, "localhost" if server else name, server=server, serial=serial)
        write_key(where / f"{name}.key", leaf_key)
        (where / f"{name}.pem").write_bytes(pem(leaf) + pem(issuing))
    return Pki(where)


def serve(context: ssl.SSLContext) -> Iterator[int]:
    """One TLS connection on a loopback port: handshake, then b"hello"."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        with listener:
            listener.settimeout(10)
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                try:
                    with context.wrap_socket(connection, server_side=True) as tls:
                        tls.sendall(b"hello")
                except OSError:  # the client refused us: ssl.SSLError is an OSError
                    pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    thread.join(10)


@pytest.fixture
def server(pki: Pki, request: pytest.FixtureRequest) -> Iterator[int]:
    """A server with certificate `request.param` ("good" or "revoked"),
    asking for a client certificate and checking it against the CRL."""
    name = request.param
    context = server_context(pki.path(f"{name}.pem"), pki.path(f"{name}.key"), pki.path("ca-chain.pem"),
                             pki.path("crl.pem"), ssl.CERT_OPTIONAL)
    yield from serve(context)


def talk(context: ssl.SSLContext, port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.recv(5)


@pytest.mark.parametrize("server", ["good"], indirect=True)
@pytest.mark.parametrize("mutual", [False, True])
def test_a_server_not_on_the_crl_is_reached(pki: Pki, server: int, mutual: bool) -> None:
    client = (pki.path("client.pem"), pki.path("client.key")) if mutual else ()
    assert talk(client_context(pki.path("ca-chain.pem"), *client, crl=pki.path("crl.pem")), server) == b"hello"


@pytest.mark.parametrize("server", ["revoked"], indirect=True)
@pytest.mark.parametrize("mutual", [False, True])
def test_a_revoked_server_certificate_is_refused(pki: Pki, server: int, mutual: bool) -> None:
    """A stolen key of an internal app or of the IdP, its certificate revoked:
    no client of ours talks to it any more."""
    client = (pki.path("client.pem"), pki.path("client.key")) if mutual else ()
    context = client_context(pki.path("ca-chain.pem"), *client, crl=pki.path("crl.pem"))
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        talk(context, server)
    assert refused.value.verify_code == 23, refused.value.verify_message  # X509_V_ERR_CERT_REVOKED


@pytest.mark.parametrize("server", ["good"], indirect=True)
@pytest.mark.parametrize("crl, code", [("expired-crl.pem", 12),  # X509_V_ERR_CRL_HAS_EXPIRED
                                       ("other-crl.pem", 3)])    # X509_V_ERR_UNABLE_TO_GET_CRL
def test_without_a_current_crl_of_the_issuer_no_server_is_trusted(pki: Pki, server: int, crl: str,
                                                                  code: int) -> None:
    """Fail closed, as the servers do with client certificates: the CRL
    job keeps crl.pem fresh (roles/ca `trust`)."""
    context = client_context(pki.path("ca-chain.pem"), crl=pki.path(crl))
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        talk(context, server)
    assert refused.value.verify_code == code, refused.value.verify_message


def test_the_crl_is_required() -> None:
    """Every caller says which CRL: a new TLS client cannot forget it."""
    with pytest.raises(TypeError):
        client_context("ca-chain.pem")  # type: ignore[call-arg]


def calls(tree: ast.AST, name: str) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            function = node.func
            called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
            if called == name:
                yield node


# TLS clients that do not go through client_context, and why.
OWN_CONTEXTS = {
    # The user's machine: it has the CA chain it was given, no CRL job.
    "sso/client.py",
    # The failover watchdog's probe of the gateway's VPN port, a health
    # check: it sends nothing and trusts nothing it reads.
    "failover_watchdog/service.py",
}


def test_every_tls_client_of_the_services_checks_the_crl() -> None:
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        tree = ast.parse(path.read_text(), str(path))
        for call in calls(tree, "client_context"):
            crl = [keyword.value for keyword in call.keywords if keyword.arg == "crl"]
            assert crl and not (isinstance(crl[0], ast.Constant) and crl[0].value is None), \
                f"{relative}:{call.lineno}: client_context without the CRL"
        own = [call.lineno for name in ("create_default_context", "SSLContext") for call in calls(tree, name)]
        if relative not in ("tls.py", *OWN_CONTEXTS):
            assert not own, f"{relative}:{own}: a TLS context of its own, not tls.client_context"


def portal_upstream_files() -> dict[str, str]:
    """proxy_ssl_* of an application's location in the portal's nginx
    configuration, file names relative to the PKI directory."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TOP / "roles" / "ssl_vpn_gateway" / "templates"),
                             trim_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["comment"] = lambda text: "# " + text
    text = env.get_template("nginx-portal.conf.j2").render(
        ansible_managed="Ansible managed", __ssl_vpn_gateway_portal_sites=["portal.test"],
        __ssl_vpn_gateway_portal_socket="/run/portal.sock", ssl_vpn_gateway_pki_dir="/PKI",
        __ssl_vpn_gateway_cert_name="gw", __ssl_vpn_gateway_upstream_cert_name="gw-portal",
        ssl_vpn_gateway_portal_name="portal.test", ssl_vpn_gateway_identity_header="X-Remote-User",
        ssl_vpn_gateway_portal_apps=[{"name": "app.test", "path": "/app/", "upstream": "https://app.test"}])
    location = text[text.index("location /app/"):]
    location = location[:location.index("}")]
    directives = dict(line.strip().rstrip(";").split(None, 1) for line in location.splitlines()[1:]
                      if line.strip().startswith("proxy_ssl_"))
    return {name: value.removeprefix("/PKI/") for name, value in directives.items()}


def nginx_upstream_context(pki: Pki, trusted: str, crl: str | None) -> ssl.SSLContext:
    """What nginx makes of proxy_ssl_trusted_certificate and proxy_ssl_crl
    (ngx_ssl_trusted_certificate, ngx_ssl_crl): certificates and CRLs of
    both files in one store, and X509_V_FLAG_CRL_CHECK | CRL_CHECK_ALL,
    a CRL for every CA of the chain. nginx itself is not run here."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki.path(trusted))
    if crl:
        context.load_verify_locations(pki.path(crl))
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
    return context


def test_the_portal_checks_its_upstreams_against_the_crl() -> None:
    files = portal_upstream_files()
    assert files["proxy_ssl_verify"] == "on"
    assert files["proxy_ssl_crl"] == "crl.pem"
    # CRL_CHECK_ALL wants the root's CRL too, which only this file has.
    assert files["proxy_ssl_trusted_certificate"] == "ca-chain-crl.pem"


@pytest.mark.parametrize("server", ["revoked"], indirect=True)
def test_with_the_portals_files_a_revoked_upstream_is_refused(pki: Pki, server: int) -> None:
    files = portal_upstream_files()
    context = nginx_upstream_context(pki, files["proxy_ssl_trusted_certificate"], files["proxy_ssl_crl"])
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        talk(context, server)
    assert refused.value.verify_code == 23, refused.value.verify_message  # X509_V_ERR_CERT_REVOKED


@pytest.mark.parametrize("server", ["good"], indirect=True)
def test_with_the_portals_files_an_upstream_not_revoked_is_reached(pki: Pki, server: int) -> None:
    files = portal_upstream_files()
    context = nginx_upstream_context(pki, files["proxy_ssl_trusted_certificate"], files["proxy_ssl_crl"])
    assert talk(context, server) == b"hello"


@pytest.mark.parametrize("server", ["good"], indirect=True)
def test_without_the_roots_crl_nginx_would_refuse_every_upstream(pki: Pki, server: int) -> None:
    """Why the CA file is ca-chain-crl.pem, not ca-chain.pem, beside proxy_ssl_crl."""
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        talk(nginx_upstream_context(pki, "ca-chain.pem", "crl.pem"), server)
    assert refused.value.verify_code == 3, refused.value.verify_message  # X509_V_ERR_UNABLE_TO_GET_CRL
