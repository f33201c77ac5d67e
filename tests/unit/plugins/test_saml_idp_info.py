"""The saml_idp_info module on an IdP configuration that is not what the sso role
writes: a reason, never a traceback."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from adhoc import run_module
from testpki import make_ca, make_leaf, pem

CA_KEY, CA_CERT = make_ca("unit ca")


def config(tmp_path: Path, **overrides: object) -> Path:
    (tmp_path / "providers").mkdir()
    (tmp_path / "signing.pem").write_bytes(pem(make_leaf(CA_KEY, CA_CERT, "idp signing")[1]))
    (tmp_path / "tls.pem").write_bytes(pem(make_leaf(CA_KEY, CA_CERT, "idp", server=True)[1]))
    settings = {"entity_id": "https://idp.test/saml2", "base_url": "https://idp.test", "back_url": "https://idp.test:8443",
                "signing_certificate": str(tmp_path / "signing.pem"), "certificate": str(tmp_path / "tls.pem"),
                "providers_dir": str(tmp_path / "providers"), **overrides}
    path = tmp_path / "idp.json"
    path.write_text(json.dumps({k: v for k, v in settings.items() if v is not None}))
    return path


@pytest.mark.parametrize("overrides, why", [
    ({"entity_id": None}, "KeyError('entity_id')"),
    ({"base_url": 443}, "TypeError"),
    ({"certificate": "/etc/hostname"}, "ValueError"),
])
def test_a_configuration_it_cannot_read_is_refused_with_a_reason(tmp_path: Path, overrides: dict, why: str) -> None:
    result = run_module("saml_idp_info", {"config": str(config(tmp_path, **overrides)), "command": "/bin/false"})
    assert result.get("failed") and "cannot read the IdP's configuration" in result["msg"], result
    assert why in result["msg"] and "module_stderr" not in result, result
