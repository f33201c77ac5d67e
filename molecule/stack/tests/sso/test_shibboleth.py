"""Shibboleth SP 3 (Debian's libapache2-mod-shib under Apache on idp1), an
SP we did not write, signs alice in over HTTP-Artifact: its AuthnRequest by
redirect, the IdP's login form, then shibd resolves the artifact itself,
with a signed ArtifactResolve over the mutual-TLS back channel. Checked on
the SP's side (its protected page and its Session handler), in both
daemons' logs, and the artifact is spent: neither the SP nor the IdP takes
it a second time.

The browser is curl on idp1 (the SP's Apache listens on its loopback)."""
from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

import dmzkit_remote_access
from dmzkit_remote_access.sso.artifact import decode

IDP = "idp1"
SP = "https://shib.lab.dmzkit.test:10443"
SP_ENTITY_ID = "https://shib.lab.dmzkit.test/shibboleth"
SP_DIR = "/etc/dmzkit-shibboleth"
SECRETS = Path("/var/lib/dmzkit-lab/secrets")
# No "Expect: 100-continue" on a POST: one answer per request.
CURL = ["curl", "-sS", "-i", "--max-time", "30", "-H", "Expect:", "--cacert", f"{SP_DIR}/ca-chain.pem",
        "--resolve", "shib.lab.dmzkit.test:10443:127.0.0.1"]
SHIBD_LOG = "/var/log/shibboleth/shibd.log"
TRANSACTIONS = "/var/log/shibboleth/transaction.log"

# Resolves an artifact at the IdP as the Shibboleth SP (its signing key and
# client certificate), in idp1's network namespace; prints what came back.
RESOLVE = """
import json, sys
from pathlib import Path
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from dmzkit_remote_access.sso import protocol
where = Path(sys.argv[1])
given = json.loads((where / "resolve.json").read_text())
key = load_pem_private_key((where / "signing.key").read_bytes(), None)
body, request_id = protocol.artifact_resolve(given["sp"], given["ars"], given["artifact"], key)
answer = requests.post(given["ars"], data=body, headers=protocol.SOAP_HEADERS, timeout=10,
                       cert=(str(where / "tls.crt"), str(where / "tls.key")), verify=str(where / "ca-chain.pem"))
idp_key = x509.load_pem_x509_certificate(given["idp_certificate"].encode()).public_key()
message = (protocol.read_artifact_response(answer.content, given["idp"], request_id, [idp_key])
           if answer.status_code == 200 else None)
print(json.dumps({"status": answer.status_code, "has_response": message is not None}))
"""


def on_idp(*argv: str, data: str = "") -> str:
    # Bytes, decoded here: text mode would turn HTTP's CRLFs into newlines.
    run = subprocess.run(["podman", "exec", "-i", IDP, *argv], input=data.encode(), capture_output=True,
                         timeout=60, check=False)
    assert run.returncode == 0, f"{argv[0]}: {run.stderr.decode(errors='replace')[-2000:]}"
    return run.stdout.decode()


def curl(jar: str, *args: str, data: str = "") -> tuple[int, dict[str, str], str]:
    """One request by curl on idp1 with the cookie jar: status, headers, body."""
    head, _, body = on_idp(*CURL, "-b", jar, "-c", jar, *args, data=data).partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def log_size(path: str) -> int:
    return int(on_idp("stat", "-c", "%s", path))


def log_since(path: str, size: int) -> str:
    """What the log got after it had `size` bytes (all of it, if it was rotated)."""
    return on_idp("tail", "-c", f"+{size + 1 if log_size(path) >= size else 1}", path)


@pytest.fixture(scope="module")
def saml_idp_info(ansible_module) -> dict:
    return ansible_module(IDP, "dmzkit.remote_access.saml_idp_info")[IDP]


@pytest.fixture(scope="module")
def login() -> dict:
    """alice signs in at the Shibboleth SP with a fresh browser: what each
    step answered, and what the IdP's journal and shibd's logs got meanwhile."""
    cursor = on_idp("journalctl", "-u", "dmzkit-sso-idp.service", "-n", "0", "--show-cursor", "-q")
    cursor = cursor.split("cursor:", 1)[1].strip()
    sizes = {path: log_size(path) for path in (SHIBD_LOG, TRANSACTIONS)}
    jar, other = on_idp("mktemp").strip(), on_idp("mktemp").strip()
    try:
        status, headers, _ = curl(jar, f"{SP}/secure/")
        assert status == 302, status
        sso = headers["location"]
        status, _, form = curl(jar, sso)
        assert status == 200, status
        fields = {name: html.unescape(value) for name, value in
                  re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form)}
        password = (SECRETS / "sso_alice").read_text().split()[0]
        posted = [f"{name}={value}"
                  for name, value in {**fields, "username": "alice", "method": "password"}.items()]
        # The password goes on standard input, not on a command line.
        status, headers, _ = curl(jar, *[a for p in posted for a in ("--data-urlencode", p)],
                                  "--data-urlencode", "password@-", urllib.parse.urljoin(sso, "/saml2/login"),
                                  data=password)
        assert status == 303, status
        acs = headers["location"]
        acs_status, acs_headers, _ = curl(jar, acs)
        page = curl(jar, f"{SP}/secure/")
        session = curl(jar, f"{SP}/Shibboleth.sso/Session")
        # The same artifact again, from another browser.
        replay = curl(other, acs)
    finally:
        on_idp("rm", "-f", jar, other)
    return {
        "sso": sso,
        "acs": acs,
        "acs_answer": (acs_status, acs_headers.get("location")),
        "page": page,
        "session": session,
        "replay": replay,
        "idp_log": on_idp("journalctl", "-u", "dmzkit-sso-idp.service", "--after-cursor", cursor, "-o", "cat"),
        "shibd_log": log_since(SHIBD_LOG, sizes[SHIBD_LOG]),
        "transactions": log_since(TRANSACTIONS, sizes[TRANSACTIONS]),
    }


def query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def test_shibboleth_asks_for_the_artifact_binding_at_the_registered_acs(login: dict, saml_idp_info: dict) -> None:
    assert login["sso"].startswith(saml_idp_info["sso_url"] + "?SAMLRequest=")
    assert {"name": "shibboleth-interop", "entity_id": SP_ENTITY_ID,
            "acs_url": f"{SP}/Shibboleth.sso/SAML2/Artifact"} in saml_idp_info["service_providers"]
    assert login["acs"].startswith(f"{SP}/Shibboleth.sso/SAML2/Artifact?SAMLart=")


def test_shibboleth_signs_alice_in(login: dict) -> None:
    # The ACS made a session and sent the browser back where it started.
    assert login["acs_answer"] == (302, f"{SP}/secure/")
    status, _, page = login["page"]
    assert status == 200
    # What mod_shib handed the page (REMOTE_USER is the uid attribute).
    assert dict(line.split("=", 1) for line in page.splitlines() if line) == {
        "user": "alice", "idp": "https://idp1.lab.dmzkit.test/saml2",
        "mail": "alice@lab.dmzkit.test", "groups": "staff"}
    status, _, session = login["session"]
    assert status == 200
    text = re.sub(r"<[^>]+>", "", session)
    for line in ("Identity Provider: https://idp1.lab.dmzkit.test/saml2", "nameid: alice", "uid: alice",
                 "displayName: Alice Lab", "mail: alice@lab.dmzkit.test", "groups: staff",
                 "Authentication Context Class: urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"):
        assert line in text, text


def test_shibd_resolved_the_artifact_on_the_back_channel(login: dict) -> None:
    key = decode(query(login["acs"])["SAMLart"]).key[:12]
    # The IdP answers only a requester with the SP's registered client
    # certificate and a signature by its registered key.
    assert re.search(rf"ArtifactResolve _\w+ from {re.escape(SP_ENTITY_ID)}: artifact {key} resolved",
                     login["idp_log"]), login["idp_log"]
    assert "refused" not in login["idp_log"], login["idp_log"]
    assert re.search(r"new session created: .* IdP \(https://idp1\.lab\.dmzkit\.test/saml2\)", login["shibd_log"])
    logins = [line.split("|") for line in login["transactions"].splitlines()
              if "Shibboleth-TRANSACTION.Login" in line]
    # alice's sign-in, then the replay the last test looks at (an error, no user).
    artifact = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact"
    assert [(f[2], f[10], f[11], f[12]) for f in logins] == [
        ("alice", artifact, "", "urn:oasis:names:tc:SAML:2.0:status:Success"),
        ("", artifact, "opensaml::BindingException", "")], logins


def test_the_artifact_is_spent(login: dict, saml_idp_info: dict, tmp_path: Path) -> None:
    artifact = query(login["acs"])["SAMLart"]
    # Shibboleth keeps the artifacts it saw and refuses one again itself ...
    status, _, body = login["replay"]
    assert status == 500 and "Rejecting replayed artifact" in body
    # ... and the IdP gives the SP nothing for it: it went with the first resolution.
    tmp_path.chmod(0o700)
    for name, source in {"signing.key": "signing.key", "tls.crt": f"{IDP}-shib-sp-client.fullchain.pem",
                         "tls.key": f"{IDP}-shib-sp-client.key", "ca-chain.pem": "ca-chain.pem"}.items():
        (tmp_path / name).write_text(on_idp("cat", f"{SP_DIR}/{source}"))
    (tmp_path / "resolve.json").write_text(json.dumps({
        "sp": SP_ENTITY_ID, "ars": saml_idp_info["ars_url"], "artifact": artifact,
        "idp": saml_idp_info["entity_id"], "idp_certificate": saml_idp_info["signing_certificate"]}))
    pid = subprocess.run(["podman", "inspect", "-f", "{{.State.Pid}}", IDP], capture_output=True, text=True,
                         check=True).stdout.strip()
    # requests prefers REQUESTS_CA_BUNDLE (and CURL_CA_BUNDLE) to the CA it is given.
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    env["PYTHONPATH"] = str(Path(dmzkit_remote_access.__file__).parents[1])
    run = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", RESOLVE, str(tmp_path)],
                         capture_output=True, text=True, timeout=60, check=False, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout) == {"status": 200, "has_response": False}
