"""The one place SAML XML is parsed (saml.md §5).

No DTD, no entities, no network, a size cap, and no comments or processing
instructions anywhere: a SAML message never needs them, and they are how
NameID truncation attacks hide. Nothing else in the package parses XML.
"""
from __future__ import annotations

from lxml import etree

NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "md": "urn:oasis:names:tc:SAML:2.0:metadata",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
    "soap": "http://schemas.xmlsoap.org/soap/envelope/",
}
# saml.md §5's cap on a SOAP message.
SOAP_LIMIT = 64 * 1024

Element = etree._Element


class XmlError(ValueError):
    """Refused XML. The message says why and never echoes the input."""


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                           remove_comments=False, remove_pis=False)


def parse(data: bytes, limit: int) -> Element:
    if len(data) > limit:
        raise XmlError(f"message larger than {limit} bytes")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as e:
        raise XmlError("not well-formed XML") from e
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None:
        raise XmlError("a DOCTYPE is not allowed")
    if next(root.itersiblings(preceding=True), None) is not None or next(root.itersiblings(), None) is not None:
        raise XmlError("comments or processing instructions are not allowed")
    for node in root.iter():
        if not isinstance(node.tag, str):  # comment, processing instruction, entity
            raise XmlError("comments, processing instructions and entities are not allowed")
    return root


def qname(prefix: str, local: str) -> str:
    return f"{{{NS[prefix]}}}{local}"


def children(parent: Element, prefix: str, local: str) -> list[Element]:
    return parent.findall(qname(prefix, local))


def one(parent: Element, prefix: str, local: str) -> Element:
    """Exactly one such child, or the message is refused."""
    found = children(parent, prefix, local)
    if len(found) != 1:
        raise XmlError(f"expected one {prefix}:{local} in {etree.QName(parent).localname}, found {len(found)}")
    return found[0]


def optional(parent: Element, prefix: str, local: str) -> Element | None:
    found = children(parent, prefix, local)
    if len(found) > 1:
        raise XmlError(f"more than one {prefix}:{local} in {etree.QName(parent).localname}")
    return found[0] if found else None


def text(element: Element) -> str:
    """An element's text, which must be all it holds."""
    if len(element):
        raise XmlError(f"{etree.QName(element).localname} must hold text only")
    return (element.text or "").strip()


def serialize(element: Element) -> bytes:
    return etree.tostring(element, encoding="UTF-8", xml_declaration=False)
