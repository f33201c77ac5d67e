"""The hardened parser refuses what a SAML message never needs."""
from __future__ import annotations

import pytest

from dmzkit_remote_access.sso.xml import XmlError, one, parse, text

SAML = 'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion"'


@pytest.mark.parametrize(("data", "why"), [
    (b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>', "DOCTYPE"),
    (b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
     b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]><x>&d;</x>',
     "DOCTYPE|well-formed"),
    (b'<!DOCTYPE x SYSTEM "http://198.18.0.1/x.dtd"><x/>', "DOCTYPE"),
    (f'<saml:NameID {SAML}>admin@example.test<!---->.evil.test</saml:NameID>'.encode(), "comments"),
    (b'<x><?pi data?></x>', "processing instructions"),
    (b'<?pi data?><x/>', "processing instructions"),
    (b'<x/><!-- trailer -->', "comments"),
    (b'<x>', "well-formed"),
    (b'<x>' + b'a' * 70_000 + b'</x>', "larger"),
])
def test_refused(data: bytes, why: str) -> None:
    with pytest.raises(XmlError, match=why):
        parse(data, 64 * 1024)


def test_text_only_elements() -> None:
    name = parse(f'<saml:NameID {SAML}> alice </saml:NameID>'.encode(), 1024)
    assert text(name) == "alice"
    with pytest.raises(XmlError, match="text only"):
        text(parse(f'<saml:NameID {SAML}>alice<b/></saml:NameID>'.encode(), 1024))


def test_exactly_one_child() -> None:
    root = parse(f'<r {SAML}><saml:Issuer>a</saml:Issuer><saml:Issuer>b</saml:Issuer></r>'.encode(), 1024)
    with pytest.raises(XmlError, match="expected one saml:Issuer"):
        one(root, "saml", "Issuer")
