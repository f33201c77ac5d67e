"""The IdP's SAML metadata (SAMLMeta §2.4.3), signed, with a short validUntil
renewed while the IdP runs: what an SP needs to send AuthnRequests and
LogoutRequests, resolve artifacts and check assertions."""
from __future__ import annotations

import base64
import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from . import protocol, xmldsig
from .settings import Settings
from .xml import NS, qname, serialize

NAMEID_UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"


def idp_metadata(settings: Settings, certificate: x509.Certificate, key: xmldsig.PrivateKey,
                 moment: dt.datetime) -> bytes:
    """The metadata as signed at `moment`."""
    root = etree.Element(qname("md", "EntityDescriptor"), nsmap={"md": NS["md"], "ds": NS["ds"]},
                         entityID=settings.entity_id, ID=protocol.new_id(),
                         validUntil=protocol.instant(moment + dt.timedelta(days=settings.metadata_valid_days)))
    idp = etree.SubElement(root, qname("md", "IDPSSODescriptor"),
                           protocolSupportEnumeration=NS["samlp"], WantAuthnRequestsSigned="false")
    descriptor = etree.SubElement(idp, qname("md", "KeyDescriptor"), use="signing")
    data = etree.SubElement(etree.SubElement(descriptor, qname("ds", "KeyInfo")), qname("ds", "X509Data"))
    der = certificate.public_bytes(serialization.Encoding.DER)
    etree.SubElement(data, qname("ds", "X509Certificate")).text = base64.b64encode(der).decode()
    etree.SubElement(idp, qname("md", "ArtifactResolutionService"), Binding=protocol.SOAP_BINDING,
                     Location=settings.ars_url, index=str(settings.ars_index), isDefault="true")
    etree.SubElement(idp, qname("md", "SingleLogoutService"), Binding=protocol.REDIRECT_BINDING,
                     Location=settings.slo_url)
    etree.SubElement(idp, qname("md", "NameIDFormat")).text = NAMEID_UNSPECIFIED
    etree.SubElement(idp, qname("md", "SingleSignOnService"), Binding=protocol.REDIRECT_BINDING,
                     Location=settings.sso_url)
    xmldsig.sign(root, key)
    return serialize(root)


class SignedMetadata:
    """The metadata a running IdP serves, signed again once half of its
    validity has passed: whenever an SP fetches it, it is good for half of
    metadata_valid_days at least (a copy signed once at start would go stale
    after metadata_valid_days of uptime)."""

    def __init__(self, settings: Settings, certificate: x509.Certificate, key: xmldsig.PrivateKey) -> None:
        self.settings = settings
        self.certificate = certificate
        self.key = key
        self.signed: dt.datetime | None = None
        self.document = b""

    def at(self, moment: dt.datetime) -> bytes:
        """The metadata to serve at `moment`."""
        half = dt.timedelta(days=self.settings.metadata_valid_days) / 2
        if self.signed is None or not self.signed <= moment < self.signed + half:
            self.document = idp_metadata(self.settings, self.certificate, self.key, moment)
            self.signed = moment
        return self.document
