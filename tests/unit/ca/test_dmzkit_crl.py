from __future__ import annotations

import datetime as dt
import functools
import http.server
import os
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from testpki import NOW, UTC, make_ca, make_crl, make_leaf, pem


@pytest.fixture
def ca(tmp_path):
    key, cert = make_ca("issuing CA")
    (tmp_path / "issuing.pem").write_bytes(pem(cert))
    (tmp_path / "issuing.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.BestAvailableEncryption(b"s3cret"))
    )
    (tmp_path / "pass").write_text("s3cret\n")
    return key, cert, tmp_path


def resign_args(path: Path, *extra: str) -> list[str]:
    return ["resign", "--crl", str(path / "crl.pem"), "--issuer", str(path / "issuing.pem"),
            "--key", str(path / "issuing.key"), "--passphrase-file", str(path / "pass"),
            "--valid-days", "7", *extra]


def test_due_after_half_the_window(dmzkit_crl, ca):
    key, cert, _ = ca
    crl = make_crl(key, cert, NOW - dt.timedelta(days=3), NOW + dt.timedelta(days=4))
    assert not dmzkit_crl.is_due(crl, NOW)
    assert dmzkit_crl.is_due(crl, NOW + dt.timedelta(hours=13))


def test_fresh_crl_is_left_alone(dmzkit_crl, ca, capsys):
    key, cert, path = ca
    original = pem(make_crl(key, cert, NOW, NOW + dt.timedelta(days=7)))
    (path / "crl.pem").write_bytes(original)
    assert dmzkit_crl.main(resign_args(path)) == 0
    assert (path / "crl.pem").read_bytes() == original
    assert capsys.readouterr().out.startswith("fresh:")


def test_resign_keeps_entries_and_moves_the_window(dmzkit_crl, ca, capsys):
    key, cert, path = ca
    old = make_crl(key, cert, NOW - dt.timedelta(days=6), NOW + dt.timedelta(days=1), serials=(11, 12))
    (path / "crl.pem").write_bytes(pem(old))
    assert dmzkit_crl.main(resign_args(path)) == 0
    new = x509.load_pem_x509_crl((path / "crl.pem").read_bytes())
    assert capsys.readouterr().out.startswith("re-signed:")
    assert new.is_signature_valid(cert.public_key())
    assert sorted(e.serial_number for e in new) == [11, 12]
    assert [e.revocation_date_utc for e in new] == [e.revocation_date_utc for e in old]
    assert new.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 8
    assert new.next_update_utc - new.last_update_utc == dt.timedelta(days=7)
    assert new.last_update_utc >= NOW
    assert (path / "crl.pem").stat().st_mode & 0o777 == 0o644


def test_wrong_key_is_refused_and_the_crl_untouched(dmzkit_crl, ca, capsys):
    key, cert, path = ca
    original = pem(make_crl(key, cert, NOW - dt.timedelta(days=6), NOW + dt.timedelta(days=1)))
    (path / "crl.pem").write_bytes(original)
    other, _ = make_ca("other")
    (path / "issuing.key").write_bytes(
        other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    )
    (path / "pass").write_text("")
    assert dmzkit_crl.main(resign_args(path)) == 1
    assert "does not belong" in capsys.readouterr().err
    assert (path / "crl.pem").read_bytes() == original


def test_wrong_passphrase_is_an_error_not_a_traceback(dmzkit_crl, ca, capsys):
    key, cert, path = ca
    (path / "crl.pem").write_bytes(pem(make_crl(key, cert, NOW - dt.timedelta(days=6), NOW + dt.timedelta(days=1))))
    (path / "pass").write_text("wrong")
    assert dmzkit_crl.main(resign_args(path)) == 1
    assert "cannot open the issuing CA key" in capsys.readouterr().err


@pytest.fixture
def published(tmp_path):
    """A real HTTP server on loopback publishing tmp_path/pub."""
    root = tmp_path / "pub"
    root.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/crl.pem"
    server.shutdown()
    server.server_close()


def fetch_args(path: Path, url: str) -> list[str]:
    return ["fetch", "--url", url, "--trust", str(path / "issuing.pem"), "--crl", str(path / "local.pem")]


def test_fetch_installs_a_newer_valid_crl(dmzkit_crl, ca, published, capsys):
    key, cert, path = ca
    root, url = published
    (path / "local.pem").write_bytes(pem(make_crl(key, cert, NOW - dt.timedelta(days=2), NOW + dt.timedelta(days=5))))
    newer = pem(make_crl(key, cert, NOW, NOW + dt.timedelta(days=7), serials=(1, 2, 3)))
    (root / "crl.pem").write_bytes(newer)
    assert dmzkit_crl.main(fetch_args(path, url)) == 0
    assert capsys.readouterr().out.startswith("installed:")
    assert (path / "local.pem").read_bytes() == newer


def test_fetch_keeps_the_local_crl_when_the_published_one_is_older(dmzkit_crl, ca, published, capsys):
    key, cert, path = ca
    root, url = published
    local = pem(make_crl(key, cert, NOW, NOW + dt.timedelta(days=7)))
    (path / "local.pem").write_bytes(local)
    (root / "crl.pem").write_bytes(pem(make_crl(key, cert, NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=6))))
    assert dmzkit_crl.main(fetch_args(path, url)) == 0
    assert capsys.readouterr().out.startswith("current:")
    assert (path / "local.pem").read_bytes() == local


@pytest.fixture
def systemctl(tmp_path, monkeypatch):
    """A systemctl first on PATH that records its arguments and exits 5
    (no such unit) for absent.service, 1 for broken.service."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "systemctl.calls"
    script = bin_dir / "systemctl"
    script.write_text(
        "#!/bin/sh\n"
        f"echo \"$*\" >> {calls}\n"
        'case "$2" in absent.service) exit 5;; broken.service) exit 1;; esac\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return lambda: calls.read_text().splitlines() if calls.exists() else []


def test_fetch_reloads_the_named_and_the_registered_units_once(dmzkit_crl, ca, published, systemctl):
    key, cert, path = ca
    root, url = published
    (root / "crl.pem").write_bytes(pem(make_crl(key, cert, NOW, NOW + dt.timedelta(days=7))))
    registered = path / "reload.d"
    registered.mkdir()
    for unit in ("nginx.service", "absent.service", "ocserv.service"):
        (registered / unit).touch()
    argv = [*fetch_args(path, url), "--reload", "ocserv.service", "--reload-dir", str(registered)]
    assert dmzkit_crl.main(argv) == 0
    assert systemctl() == [f"try-reload-or-restart {unit}"
                           for unit in ("ocserv.service", "absent.service", "nginx.service")]
    # Nothing newer published: nothing reloads.
    assert dmzkit_crl.main(argv) == 0
    assert len(systemctl()) == 3


def test_a_unit_registered_for_restart_is_restarted(dmzkit_crl, ca, published, systemctl):
    """FreeRADIUS's EAP module reads the CRL only at start (a HUP leaves it):
    its registration asks for a restart."""
    key, cert, path = ca
    root, url = published
    (root / "crl.pem").write_bytes(pem(make_crl(key, cert, NOW, NOW + dt.timedelta(days=7))))
    registered = path / "reload.d"
    registered.mkdir()
    (registered / "freeradius.service").write_text("restart\n")
    (registered / "nginx.service").touch()
    assert dmzkit_crl.main([*fetch_args(path, url), "--reload-dir", str(registered)]) == 0
    assert systemctl() == ["try-restart freeradius.service", "try-reload-or-restart nginx.service"]


def test_a_consumer_that_fails_to_reload_is_reported(dmzkit_crl, ca, published, systemctl, capsys):
    key, cert, path = ca
    root, url = published
    newer = pem(make_crl(key, cert, NOW, NOW + dt.timedelta(days=7)))
    (root / "crl.pem").write_bytes(newer)
    assert dmzkit_crl.main([*fetch_args(path, url), "--reload", "broken.service"]) == 1
    assert "broken.service did not reload" in capsys.readouterr().err
    assert (path / "local.pem").read_bytes() == newer


@pytest.mark.parametrize("problem", ["forged", "expired", "garbage"])
def test_fetch_refuses_what_it_cannot_trust(dmzkit_crl, ca, published, capsys, problem):
    key, cert, path = ca
    root, url = published
    if problem == "forged":
        other_key, _ = make_ca("issuing CA")  # same name, different key
        body = pem(make_crl(other_key, cert, NOW, NOW + dt.timedelta(days=7)))
    elif problem == "expired":
        body = pem(make_crl(key, cert, NOW - dt.timedelta(days=8), NOW - dt.timedelta(days=1)))
    else:
        body = b"<html>proxy error</html>"
    (root / "crl.pem").write_bytes(body)
    assert dmzkit_crl.main(fetch_args(path, url)) == 1
    assert capsys.readouterr().err.startswith("dmzkit-crl fetch:")
    assert not (path / "local.pem").exists()


def test_fetch_refuses_other_schemes(dmzkit_crl, ca, capsys):
    _, _, path = ca
    assert dmzkit_crl.main(fetch_args(path, "file:///etc/passwd")) == 1
    assert "only http and https" in capsys.readouterr().err


def test_trust_file_with_several_certificates_and_text(dmzkit_crl, ca):
    _, cert, _ = ca
    _, other = make_ca("other")
    bundle = b"issuing:\n" + pem(cert) + b"\nroot:\n" + pem(other)
    assert [c.subject for c in dmzkit_crl.load_certificates(bundle)] == [cert.subject, other.subject]
    with pytest.raises(dmzkit_crl.CrlError):
        dmzkit_crl.load_certificates(b"no certificates here")


LEAF_EXPIRES = NOW + dt.timedelta(days=30)
CRL_NEXT_UPDATE = NOW + dt.timedelta(days=7)


def index_time(moment: dt.datetime) -> str:
    """openssl's index.txt time: UTCTime, YYMMDDHHMMSSZ."""
    return moment.strftime("%y%m%d%H%M%SZ")


def leaf(ca_key, ca_cert, name: str, serial: int) -> x509.Certificate:
    return make_leaf(ca_key, ca_cert, name, serial=serial, organization="lab", not_after=LEAF_EXPIRES)[1]


def test_index_marks_revoked_certificates_and_keeps_replaced_ones(dmzkit_crl, ca, capsys):
    key, cert, path = ca
    issued = path / "issued"
    issued.mkdir()
    (issued / "alice.pem").write_bytes(pem(leaf(key, cert, "alice", 0xABC)))
    (issued / "gw1.pem").write_bytes(pem(leaf(key, cert, "gw1", 0x1F00)))
    revoked_at = dt.datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
    crl = (
        x509.CertificateRevocationListBuilder().issuer_name(cert.subject)
        .last_update(NOW).next_update(CRL_NEXT_UPDATE)
        .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(0xABC).revocation_date(revoked_at).build())
        .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(0x77).revocation_date(revoked_at).build())
        .sign(key, hashes.SHA256())
    )
    (path / "crl.pem").write_bytes(pem(crl))
    args = ["index", "--issued-dir", str(issued), "--crl", str(path / "crl.pem"), "--out", str(path / "index.txt")]
    assert dmzkit_crl.main(args) == 0
    assert capsys.readouterr().out.startswith("written:")
    assert (path / "index.txt").read_text().splitlines() == [
        f"R\t{index_time(LEAF_EXPIRES)}\t260506070809Z\t0ABC\tunknown\t/O=lab/CN=alice",
        f"V\t{index_time(LEAF_EXPIRES)}\t\t1F00\tunknown\t/O=lab/CN=gw1",
        f"R\t{index_time(CRL_NEXT_UPDATE)}\t260506070809Z\t77\tunknown\t/CN=replaced certificate",
    ]
    assert dmzkit_crl.main(args) == 0
    assert capsys.readouterr().out.startswith("unchanged:")
