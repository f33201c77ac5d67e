"""The sso journey, B/S part, from the external user's machine through the
gateway: alice's browser opens the B/S application on the portal, is sent
to the IdP's sign-in pages (the portal's site of their own), signs in with
her password and lands back on the application, which names her from the
assertion it resolved over mutual TLS."""
from __future__ import annotations

from pathlib import Path

from browser import browser_sign_in, screenshot

APP = "app1"
IDP = "idp1"
# Kept for docs/sso.md (docs/images/bs-sso.png is a copy of one).
OUTPUT = Path(__file__).resolve().parents[4] / "tests/output/sso/bs-sso.png"


def test_the_browser_signs_in_to_the_bs_app_through_the_gateway_via_the_idp(lab) -> None:
    outcome = browser_sign_in(lab)
    assert outcome["user"] == "alice", outcome
    assert "identified by single sign-on" in outcome["text"]
    assert outcome["url"] == "https://portal.lab.dmzkit.test/"
    # The sign-in page was the IdP's, on its own site behind the portal.
    assert any(url.startswith("https://sso.lab.dmzkit.test/saml2/sso?SAMLRequest=") for url in outcome["visited"])
    screenshot(OUTPUT)
    assert OUTPUT.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # The application resolved the artifact itself, over the back channel.
    journal = lab[APP].host.run_test("journalctl -u dmzkit-bs-app --no-pager -o cat").stdout
    assert f"alice signed in from {lab['gw1'].address('dmz')}" in journal
    idp = lab[IDP].host.run_test("journalctl -u dmzkit-sso-idp --no-pager -o cat").stdout
    assert f"ArtifactResolve from {lab[APP].address('internal')}: artifact" in idp
