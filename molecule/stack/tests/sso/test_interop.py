"""pysaml2 (PyPI), an SP we did not write, completes an artifact login
against the lab's IdP: AuthnRequest by redirect, sign-in, ArtifactResolve
over mutual TLS, and the Response validated by pysaml2 itself. Then the
IdP's refusals, to that same SP: another SP's artifact, the right artifact
with another client certificate, an expired artifact."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from cryptography import x509

from browser import browser_sign_in
from dmzkit_remote_access.tls import spki_sha256

IDP = "idp1"
INTEROP = "/etc/dmzkit-interop"
SECRETS = Path("/var/lib/dmzkit-lab/secrets")
SP_SCRIPT = Path(__file__).with_name("pysaml2_sp.py")


def read_from(host: str, path: str) -> str:
    return subprocess.run(["podman", "exec", host, "cat", path], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture(scope="module")
def saml_idp_info(ansible_module) -> dict:
    """What the saml_idp_info module tells an SP's administrator about the IdP."""
    return ansible_module(IDP, "dmzkit.remote_access.saml_idp_info")[IDP]


def test_sso_info_tells_the_endpoints_keys_and_registrations(saml_idp_info: dict) -> None:
    assert saml_idp_info["entity_id"] == "https://idp1.lab.dmzkit.test/saml2"
    assert saml_idp_info["ars_url"] == "https://198.18.2.40:8443/saml2/ars"
    certificate = x509.load_pem_x509_certificate(saml_idp_info["signing_certificate"].encode())
    assert saml_idp_info["signing_spki_sha256"] == spki_sha256(certificate.public_key())
    assert saml_idp_info["signing_certificate"].split()[2] in saml_idp_info["metadata"].replace("\n", "")
    assert {"name": "pysaml2-interop", "entity_id": "https://interop.lab.dmzkit.test/pysaml2",
            "acs_url": "https://interop.lab.dmzkit.test/acs"} in saml_idp_info["service_providers"]


def run_pysaml2(tmp_path: Path, metadata: str, *mode: str, **login: object) -> dict:
    """pysaml2_sp.py in idp1's network namespace, with the interop SP's
    files and the login settings plus `login`; its JSON answer."""
    files = {
        "ca-chain.pem": f"{INTEROP}/ca-chain.pem",
        "tls.crt": f"{INTEROP}/{IDP}-interop-sp.fullchain.pem",
        "tls.key": f"{INTEROP}/{IDP}-interop-sp.key",
        "signing.crt": f"{INTEROP}/signing.crt",
        "signing.key": f"{INTEROP}/signing.key",
        # A valid certificate of the lab's CA that is not this SP's: the SAML proxy's.
        "other-tls.crt": f"/etc/dmzkit-pki/{IDP}-saml-proxy-client.fullchain.pem",
        "other-tls.key": f"/etc/dmzkit-pki/{IDP}-saml-proxy-client.key",
    }
    tmp_path.chmod(0o700)
    for name, source in files.items():
        (tmp_path / name).write_text(read_from(IDP, source))
    (tmp_path / "idp-metadata.xml").write_text(metadata)
    (tmp_path / "login.json").write_text(json.dumps({
        "idp": "https://idp1.lab.dmzkit.test/saml2",
        "sp": "https://interop.lab.dmzkit.test/pysaml2",
        "acs": "https://interop.lab.dmzkit.test/acs",
        "user": "alice",
        "password": (SECRETS / "sso_alice").read_text().split()[0],
        **login,
    }))
    pid = subprocess.run(["podman", "inspect", "-f", "{{.State.Pid}}", IDP], capture_output=True, text=True,
                         check=True).stdout.strip()
    # requests prefers REQUESTS_CA_BUNDLE (and CURL_CA_BUNDLE) to the CA it is given.
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    run = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, str(SP_SCRIPT), str(tmp_path),
                          *mode], capture_output=True, text=True, timeout=180, check=False, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


def test_pysaml2_completes_an_artifact_login(tmp_path: Path, saml_idp_info: dict) -> None:
    outcome = run_pysaml2(tmp_path, saml_idp_info["metadata"])
    assert outcome["user"] == "alice", outcome
    assert outcome["attributes"]["groups"] == ["staff"]
    assert outcome["attributes"]["mail"] == ["alice@lab.dmzkit.test"]
    assert outcome["relay_state"] == "/home"
    # The artifact was spent by the first resolution.
    assert outcome["replay"] == {"status": 200, "has_response": False}


def test_the_idp_refuses_another_sps_artifact_another_certificate_and_an_expired_artifact(
        lab, tmp_path: Path, saml_idp_info: dict) -> None:
    # An artifact the IdP issued for the B/S application, held back by alice's browser.
    held = browser_sign_in(lab, hold_artifact=True)
    foreign = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(held["acs"]).query))["SAMLart"]
    ttl = json.loads(read_from(IDP, "/etc/dmzkit-sso/idp.json"))["artifact_ttl"]
    outcome = run_pysaml2(tmp_path, saml_idp_info["metadata"], "refusals", foreign_artifact=foreign, artifact_ttl=ttl)
    # Another SP's artifact: nothing (and it is spent: deleted before the check).
    assert outcome["foreign"] == {"status": 200, "has_response": False}
    # This SP's artifact over another client certificate: a SOAP fault (HTTP
    # 500, SOAP 1.1 §6.2); the artifact is not spent, and resolves over the
    # SP's own certificate.
    assert outcome["other_certificate"] == {"status": 500, "has_response": False}
    assert outcome["then_own_certificate"] == {"status": 200, "has_response": True}
    assert outcome["expired"] == {"status": 200, "has_response": False}
