"""The saml_sp module, run by ansible itself on this machine: a registration
the IdP's loader accepts, idempotence, check mode, SP metadata written by
pysaml2, and every refusal before a file is touched."""
from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from saml2 import BINDING_HTTP_ARTIFACT, BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.config import SPConfig
from saml2.metadata import entity_descriptor
from adhoc import run_module
from testpki import NOW, make_ca, make_leaf, pem, write_key

from dmzkit_remote_access.config import ConfigError
from dmzkit_remote_access.sso.settings import load_providers, provider_from_dict

CA_KEY, CA_CERT = make_ca("unit ca")
SIGNING = pem(make_leaf(CA_KEY, CA_CERT, "sp signing")[1]).decode()
TLS = pem(make_leaf(CA_KEY, CA_CERT, "sp client")[1]).decode()
SIGNING_DER = "".join(SIGNING.splitlines()[1:-1])
TOP = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def idp_command(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The IdP's command as service_venv installs it, running this
    checkout's code: the module checks with its check-provider."""
    command = tmp_path_factory.mktemp("venv") / "dmzkit-sso"
    command.write_text(f"#!/bin/sh\nPYTHONPATH={TOP / 'src'} exec {sys.executable} -m dmzkit_remote_access.sso \"$@\"\n")
    command.chmod(0o755)
    return str(command)


@pytest.fixture
def module(idp_command: str) -> Callable[..., dict]:
    def run(directory: Path, *flags: str, **args: object) -> dict:
        return run_module("saml_sp", {"directory": str(directory), "executable": idp_command, **args}, *flags)
    return run


@pytest.fixture
def register(module: Callable[..., dict]) -> Callable[..., dict]:
    def run(directory: Path, *flags: str, **changes: object) -> dict:
        args = {"name": "portal", "entity_id": "https://portal.test/sp", "acs_url": "https://portal.test/acs",
                "signing_certificates": [SIGNING], "tls_certificates": [TLS]}
        return module(directory, *flags, **{**args, **changes})
    return run


def test_check_mode_then_apply_then_nothing_to_do(tmp_path: Path, register) -> None:
    checked = register(tmp_path, "--check")
    assert checked["changed"] and not (tmp_path / "portal.json").exists()
    applied = register(tmp_path)
    assert applied["changed"] and applied["entity_id"] == "https://portal.test/sp"
    assert not register(tmp_path)["changed"]
    provider = load_providers(str(tmp_path))["https://portal.test/sp"]
    assert provider.acs_url == "https://portal.test/acs" and len(provider.tls_keys) == 1


def test_pysaml2_metadata_gives_the_artifact_acs_and_signing_key(tmp_path: Path, module) -> None:
    key, cert = make_leaf(CA_KEY, CA_CERT, "pysaml2 signing")
    write_key(tmp_path / "sp.key", key)
    (tmp_path / "sp.crt").write_bytes(pem(cert))
    config = SPConfig()
    config.load({
        "entityid": "https://pysaml2.test/sp",
        "service": {"sp": {"endpoints": {
            "assertion_consumer_service": [("https://pysaml2.test/post", BINDING_HTTP_POST),
                                           ("https://pysaml2.test/artifact", BINDING_HTTP_ARTIFACT)],
            "single_logout_service": [("https://pysaml2.test/slo-post", BINDING_HTTP_POST),
                                      ("https://pysaml2.test/slo", BINDING_HTTP_REDIRECT)]}}},
        "cert_file": str(tmp_path / "sp.crt"), "key_file": str(tmp_path / "sp.key"),
    })
    registry = tmp_path / "providers"
    registry.mkdir()
    result = module(registry, name="pysaml2", metadata=str(entity_descriptor(config)), tls_certificates=[TLS])
    assert result["changed"], result
    assert result["acs_url"] == "https://pysaml2.test/artifact"
    # The IdP answers a LogoutRequest the Redirect way only.
    assert result["slo_url"] == "https://pysaml2.test/slo"
    stored = json.loads((registry / "pysaml2.json").read_text())
    assert stored["signing_certificates"] == [pem(cert).decode()]
    assert load_providers(str(registry))["https://pysaml2.test/sp"].slo_url == "https://pysaml2.test/slo"


def test_an_slo_url_is_kept_only_when_given(tmp_path: Path, register) -> None:
    """Registrations without one stay as they were: re-running changes nothing."""
    assert register(tmp_path)["changed"]
    assert "slo_url" not in json.loads((tmp_path / "portal.json").read_text())
    assert load_providers(str(tmp_path))["https://portal.test/sp"].slo_url is None
    with_slo = register(tmp_path, slo_url="https://portal.test/slo")
    assert with_slo["changed"] and with_slo["slo_url"] == "https://portal.test/slo"
    assert load_providers(str(tmp_path))["https://portal.test/sp"].slo_url == "https://portal.test/slo"
    assert not register(tmp_path, slo_url="https://portal.test/slo")["changed"]


@pytest.mark.parametrize("services, slo_url", [
    ('<md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" '
     'Location="https://portal.test/slo"/>', "https://portal.test/slo"),
    # Responses go to ResponseLocation when there is one (SAMLMeta §2.2.2).
    ('<md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" '
     'Location="https://portal.test/slo" ResponseLocation="https://portal.test/slo-done"/>',
     "https://portal.test/slo-done"),
    ('<md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:SOAP" '
     'Location="https://portal.test/soap"/>', None),
])
def test_the_slo_url_comes_from_the_redirect_single_logout_service(tmp_path: Path, module, services: str,
                                                                   slo_url: str | None) -> None:
    metadata = sp_metadata(certificate=SIGNING_DER).replace("<md:AssertionConsumerService", services
                                                            + "<md:AssertionConsumerService")
    result = module(tmp_path, name="portal", tls_certificates=[TLS], metadata=metadata)
    assert result["changed"], result
    assert result["slo_url"] == slo_url
    assert load_providers(str(tmp_path))["https://portal.test/sp"].slo_url == slo_url


@pytest.mark.parametrize("changes, why", [
    ({"acs_url": "http://portal.test/acs"}, "https://"),
    ({"slo_url": "http://portal.test/slo"}, "slo_url must be an https:// URL"),
    ({"signing_certificates": ["not a certificate"]}, "not a PEM certificate"),
    ({"tls_certificates": []}, "at least one certificate"),
    ({"name": "../escape"}, "name must be"),
    ({"metadata": "<x/>"}, "mutually exclusive"),
])
def test_bad_input_is_refused_before_any_change(tmp_path: Path, changes: dict, why: str, register) -> None:
    result = register(tmp_path, **changes)
    assert result.get("failed") and why in result["msg"], result
    assert list(tmp_path.iterdir()) == []


def certificate_of(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return pem(x509.CertificateBuilder().subject_name(CA_CERT.subject).issuer_name(CA_CERT.subject)
               .public_key(key.public_key()).serial_number(1).not_valid_before(NOW)
               .not_valid_after(NOW + dt.timedelta(days=1)).sign(CA_KEY, hashes.SHA256())).decode()


def test_small_rsa_and_doctype_metadata_are_refused(tmp_path: Path, module, register) -> None:
    small = register(tmp_path, signing_certificates=[certificate_of(rsa.generate_private_key(65537, 1024))])
    assert small.get("failed") and "2048" in small["msg"]
    doctype = module(tmp_path, name="x", tls_certificates=[TLS],
                     metadata='<!DOCTYPE x [<!ENTITY e "e">]><md:EntityDescriptor '
                              'xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="e">&e;</md:EntityDescriptor>')
    assert doctype.get("failed") and "DOCTYPE" in doctype["msg"]
    assert list(tmp_path.iterdir()) == []


def sp_metadata(index: str = "0", certificate: str = "MIIB") -> str:
    return ('<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" '
            'xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://portal.test/sp"><md:SPSSODescriptor>'
            '<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>'
            f'{certificate}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>'
            f'<md:AssertionConsumerService index="{index}" Location="https://portal.test/acs" '
            'Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact"/></md:SPSSODescriptor></md:EntityDescriptor>')


@pytest.mark.parametrize("metadata, why", [
    (sp_metadata(index="first"), "index must be 0-65535"),
    (sp_metadata(index="70000"), "index must be 0-65535"),
    (sp_metadata(certificate="not*base64"), "not base64"),
    (sp_metadata(certificate="MIIB"), "not a certificate"),
])
def test_broken_metadata_is_refused_with_a_reason(tmp_path: Path, metadata: str, why: str, module) -> None:
    result = module(tmp_path, name="portal", tls_certificates=[TLS], metadata=metadata)
    assert result.get("failed") and why in result["msg"] and "Traceback" not in result.get("module_stderr", ""), result
    assert list(tmp_path.iterdir()) == []


def test_one_entity_id_is_registered_once_and_absent_removes(tmp_path: Path, module, register) -> None:
    register(tmp_path)
    twin = register(tmp_path, name="twin")
    assert twin.get("failed") and "already registered as portal" in twin["msg"]
    removed = module(tmp_path, name="portal", state="absent")
    assert removed["changed"] and not (tmp_path / "portal.json").exists()
    assert not module(tmp_path, name="portal", state="absent")["changed"]


def test_the_registration_is_readable_by_the_idp_and_nothing_else_is_left(tmp_path: Path, register) -> None:
    assert register(tmp_path)["changed"]
    assert (tmp_path / "portal.json").stat().st_mode & 0o777 == 0o644
    assert register(tmp_path, acs_url="https://portal.test/acs2")["changed"]
    assert [p.name for p in tmp_path.iterdir()] == ["portal.json"]


def test_a_p384_key_is_refused_as_the_idp_refuses_it(tmp_path: Path, register) -> None:
    """One policy (RSA >= 2048 or P-256, what the IdP verifies), applied by
    the IdP's own code: the module refuses in the words of the IdP's loader."""
    p384 = certificate_of(ec.generate_private_key(ec.SECP384R1()))
    result = register(tmp_path, signing_certificates=[p384])
    with pytest.raises(ConfigError, match="P-256") as idp:
        provider_from_dict({"entity_id": "https://portal.test/sp", "acs_url": "https://portal.test/acs",
                            "signing_certificates": [p384], "tls_certificates": [TLS]},
                           str(tmp_path / "portal.json"))
    assert result.get("failed") and result["msg"] == f"dmzkit-sso: {idp.value}", result
    assert list(tmp_path.iterdir()) == []


def test_without_the_idp_installed_nothing_is_registered(tmp_path: Path, module) -> None:
    result = module(tmp_path, name="portal", entity_id="https://portal.test/sp",
                    acs_url="https://portal.test/acs", signing_certificates=[SIGNING], tls_certificates=[TLS],
                    executable=str(tmp_path / "venv" / "bin" / "dmzkit-sso"))
    assert result.get("failed") and "install the service first (role saml_idp)" in result["msg"], result
    assert list(tmp_path.iterdir()) == []
