"""The B/S app behind the portal, run as it runs on the apps host (its own
process, mutual TLS) on loopback, with a throw-away PKI: who is signed in
comes from the TLS peer, never from the client's headers."""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from testpki import NOW, make_ca, make_crl, make_leaf, pem, write_key

from dmzkit_remote_access.bs_app.__main__ import main

SRC = Path(__file__).resolve().parents[3] / "src"
HEADER = "X-Dmzkit-User"


@dataclass
class Pki:
    path: Path
    ca_key: object
    ca_cert: object

    def leaf(self, name: str, server: bool = False, unit: str | None = None,
             file: str | None = None) -> tuple[Path, Path, int]:
        """A certificate named `name`; people's and desktops' carry an OU (`unit`)."""
        key, cert = make_leaf(self.ca_key, self.ca_cert, name, server=server, unit=unit)
        file = file or name
        write_key(self.path / f"{file}.key", key)
        (self.path / f"{file}.crt").write_bytes(pem(cert))
        return self.path / f"{name}.crt", self.path / f"{name}.key", cert.serial_number

    def revoke(self, *serials: int) -> None:
        crl = make_crl(self.ca_key, self.ca_cert, NOW, NOW + dt.timedelta(days=1), serials=serials)
        (self.path / "crl.pem").write_bytes(pem(crl))


@pytest.fixture
def pki(tmp_path) -> Pki:
    ca_key, ca_cert = make_ca("test issuing CA")
    (tmp_path / "ca.pem").write_bytes(pem(ca_cert))
    found = Pki(tmp_path, ca_key, ca_cert)
    found.revoke()
    found.leaf("app.test", server=True)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def start_app(pki) -> Iterator:
    procs: list[subprocess.Popen] = []

    def start(allowed_sources=("127.0.0.1/32",)) -> tuple[subprocess.Popen, int]:
        port = free_port()
        settings = {
            "listen_address": "127.0.0.1", "port": port,
            "certificate": str(pki.path / "app.test.crt"), "private_key": str(pki.path / "app.test.key"),
            "ca_chain": str(pki.path / "ca.pem"), "crl": str(pki.path / "crl.pem"),
            "trusted_portals": ["portal.test"], "allowed_sources": list(allowed_sources),
            "identity_header": HEADER, "title": "Test app",
        }
        (pki.path / "settings.json").write_text(json.dumps(settings))
        proc = subprocess.Popen([sys.executable, "-m", "dmzkit_remote_access.bs_app",
                                 "--config", str(pki.path / "settings.json")],
                                env={**os.environ, "PYTHONPATH": str(SRC)})
        procs.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return proc, port
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the app did not start listening")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def get(pki: Pki, port: int, cert: str | None, path: str = "/whoami", headers: dict | None = None,
        method: str = "GET"):
    """One HTTPS request; returns (status, body) or raises ssl.SSLError/OSError."""
    context = ssl.create_default_context(cafile=str(pki.path / "ca.pem"))
    if cert:
        context.load_cert_chain(str(pki.path / f"{cert}.crt"), str(pki.path / f"{cert}.key"))
    lines = [f"{method} {path} HTTP/1.1", "Content-Length: 0", "Host: app.test", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="app.test") as tls:
            tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def refused(pki: Pki, port: int, cert: str | None) -> bool:
    """Whether the server ends the connection (an alert, or a plain close:
    asyncio's TLS drops it) right after the handshake, sending nothing
    first; a server that took the certificate waits for the request."""
    context = ssl.create_default_context(cafile=str(pki.path / "ca.pem"))
    if cert:
        context.load_cert_chain(str(pki.path / f"{cert}.crt"), str(pki.path / f"{cert}.key"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="app.test") as tls:
            tls.settimeout(2)
            try:
                return tls.recv(1) == b""
            except ssl.SSLError:
                return True
            except TimeoutError:
                return False


def test_portal_vouches_for_the_user(pki, start_app):
    pki.leaf("portal.test")
    _, port = start_app()
    status, body = get(pki, port, "portal.test", headers={HEADER: "alice"})
    assert status == 200
    assert json.loads(body) == {"user": "alice", "via": "portal"}


def test_html_page_names_the_user_escaped(pki, start_app):
    pki.leaf("portal.test")
    _, port = start_app()
    status, body = get(pki, port, "portal.test", path="/", headers={HEADER: "<b>eve</b>"})
    assert status == 200
    assert '<strong id="user">&lt;b&gt;eve&lt;/b&gt;</strong>' in body


def test_user_certificate_wins_over_a_forged_header(pki, start_app):
    pki.leaf("alice", unit="staff")
    _, port = start_app()
    status, body = get(pki, port, "alice", headers={HEADER: "bob", "X_Dmzkit_User": "bob"})
    assert status == 200
    assert json.loads(body) == {"user": "alice", "via": "certificate"}


def test_a_user_named_like_the_portal_vouches_for_nobody(pki, start_app):
    """A person's certificate (OU: their group) with the portal's CN is a
    user's, not the portal's: the identity header is ignored."""
    pki.leaf("portal.test", unit="staff", file="named-like-the-portal")
    _, port = start_app()
    status, body = get(pki, port, "named-like-the-portal", headers={HEADER: "alice"})
    assert status == 200
    assert json.loads(body) == {"user": "portal.test", "via": "certificate"}


def test_a_hosts_certificate_that_is_no_portal_names_no_user(pki, start_app):
    pki.leaf("idp.test")
    _, port = start_app()
    status, body = get(pki, port, "idp.test", headers={HEADER: "alice"})
    assert status == 403
    assert "names no user" in body


def test_portal_without_a_user_is_refused(pki, start_app):
    pki.leaf("portal.test")
    _, port = start_app()
    status, body = get(pki, port, "portal.test")
    assert status == 403
    assert "sent no user" in body


def test_no_client_certificate_no_tls(pki, start_app):
    _, port = start_app()
    pki.leaf("alice", unit="staff")
    assert not refused(pki, port, "alice")
    assert refused(pki, port, None)


def test_source_outside_the_gateway_is_refused(pki, start_app):
    pki.leaf("alice", unit="staff")
    _, port = start_app(allowed_sources=("198.18.1.11/32",))
    status, body = get(pki, port, "alice")
    assert status == 403
    assert "do not come through the gateway" in body


def test_a_revoked_certificate_is_refused_once_the_crl_is_read(pki, start_app):
    _, _, serial = pki.leaf("alice", unit="staff")
    proc, port = start_app()
    assert get(pki, port, "alice")[0] == 200
    pki.revoke(serial)
    # The CRL job restarts the app on a new CRL.
    proc.terminate()
    proc.wait(timeout=10)
    _, port = start_app()
    assert refused(pki, port, "alice")


def test_only_get(pki, start_app):
    pki.leaf("alice", unit="staff")
    _, port = start_app()
    assert get(pki, port, "alice", method="POST")[0] == 405
    assert get(pki, port, "alice", path="/elsewhere")[0] == 404


def test_bad_settings_exit_cleanly(tmp_path, capsys):
    (tmp_path / "s.json").write_text("{}")
    assert main(["--config", str(tmp_path / "s.json")]) == 2
    assert capsys.readouterr().err.startswith("dmzkit-bs-app: missing settings:")
