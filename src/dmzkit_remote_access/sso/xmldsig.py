"""Enveloped XML signatures in one narrow profile, signed and verified in process.

The profile (saml.md §5): one Reference, to the signed element's own ID, which
must be unique in the document; transforms enveloped-signature then exclusive
c14n without comments; SHA-256 digests; RSA-SHA256 (PKCS#1 v1.5, 2048 bits
or more) or ECDSA-SHA256 on P-256. Anything else is refused, not negotiated.
That key policy is `method_of`, the one place it is written: the IdP's and
the proxy's own keys, the SPs' registered keys (settings.py, and through it
the saml_sp module) and every verification go through it. Keys come from
configuration (metadata), never from the message: KeyInfo is written for
the reader's benefit and ignored on verification. `verify` returns the
signed element re-parsed from the canonical bytes that were digested, so
callers read data only from what the signature covers.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from copy import deepcopy

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from lxml import etree

from .xml import NS, Element, XmlError, children, one, optional, parse, qname

EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
MIN_RSA_BITS = 2048
# The one curve: the collection makes its ECDSA keys on it (roles saml_idp
# and ca), and SHA-256, the only digest here, matches its strength.
ECDSA_CURVE = "secp256r1"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class SignatureError(XmlError):
    """A signature that is missing, outside the profile, or wrong."""


def _c14n(element: Element, prefixes: list[str] | None = None) -> bytes:
    return etree.tostring(element, method="c14n", exclusive=True, with_comments=False,
                          inclusive_ns_prefixes=prefixes)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: str) -> bytes:
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except binascii.Error as e:
        raise SignatureError("bad base64 in the signature") from e


def _ds(parent: Element, local: str, **attributes: str) -> Element:
    return etree.SubElement(parent, qname("ds", local), attributes, nsmap={"ds": NS["ds"]})


def method_of(key: PrivateKey | PublicKey) -> str:
    """The signature method `key` signs or verifies with; raises for a key
    outside the policy: RSA of 2048 bits or more, or ECDSA on P-256."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise SignatureError(f"RSA keys below {MIN_RSA_BITS} bits are refused")
        return RSA_SHA256
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.name != ECDSA_CURVE:
            raise SignatureError(f"ECDSA keys on {key.curve.name} are refused: only P-256 ({ECDSA_CURVE})")
        return ECDSA_SHA256
    raise SignatureError("only RSA and ECDSA keys are supported")


def _coordinate_size(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> int:
    return (key.curve.key_size + 7) // 8


def sign(element: Element, key: PrivateKey, certificate_der: bytes | None = None) -> Element:
    """Sign `element` (which must carry an ID) in place. The signature goes
    right after its saml:Issuer, where the SAML schemas want it, or first."""
    reference = element.get("ID")
    if not reference:
        raise SignatureError("the element to sign has no ID")
    method = method_of(key)
    digest = hashlib.sha256(_c14n(element)).digest()

    signature = etree.Element(qname("ds", "Signature"), nsmap={"ds": NS["ds"]})
    info = _ds(signature, "SignedInfo")
    _ds(info, "CanonicalizationMethod", Algorithm=EXC_C14N)
    _ds(info, "SignatureMethod", Algorithm=method)
    ref = _ds(info, "Reference", URI=f"#{reference}")
    transforms = _ds(ref, "Transforms")
    _ds(transforms, "Transform", Algorithm=ENVELOPED)
    _ds(transforms, "Transform", Algorithm=EXC_C14N)
    _ds(ref, "DigestMethod", Algorithm=SHA256)
    _ds(ref, "DigestValue").text = _b64(digest)
    value = _ds(signature, "SignatureValue")
    if certificate_der is not None:
        data = _ds(_ds(signature, "KeyInfo"), "X509Data")
        _ds(data, "X509Certificate").text = _b64(certificate_der)

    issuer = optional(element, "saml", "Issuer")
    element.insert(element.index(issuer) + 1 if issuer is not None else 0, signature)
    value.text = _b64(sign_bytes(key, _c14n(info)))
    return element


def sign_bytes(key: PrivateKey, data: bytes) -> bytes:
    """A signature value as XML-DSig encodes it (ECDSA: r and s, fixed width),
    also used for the query string of the Redirect binding."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    size = _coordinate_size(key)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def _algorithm(element: Element, expected: tuple[str, ...], what: str) -> str:
    algorithm = element.get("Algorithm", "")
    if algorithm not in expected:
        # repr, cut short: the sender's text goes into logs and SOAP faults.
        raise SignatureError(f"{what} {algorithm[:100]!r} is not allowed")
    return algorithm


def _prefix_list(transform: Element) -> list[str] | None:
    found = transform.findall(f"{{{EXC_C14N}}}InclusiveNamespaces")
    if not found:
        return None
    if len(found) > 1 or len(transform) != 1:
        raise SignatureError("unexpected content in the c14n transform")
    return found[0].get("PrefixList", "").split()


def verify_bytes(key: PublicKey, method: str, signed: bytes, raw: bytes) -> bool:
    """Whether `raw` (encoded as sign_bytes does) signs `signed` with `key` by `method`."""
    try:
        if method == RSA_SHA256 and isinstance(key, rsa.RSAPublicKey):
            key.verify(raw, signed, padding.PKCS1v15(), hashes.SHA256())
            return True
        if method == ECDSA_SHA256 and isinstance(key, ec.EllipticCurvePublicKey):
            size = _coordinate_size(key)
            if len(raw) != 2 * size:
                return False
            r, s = int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big")
            key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA256()))
            return True
    except InvalidSignature:
        return False
    return False


def verify(element: Element, keys: list[PublicKey]) -> Element:
    """Check `element`'s own enveloped signature against the pinned `keys`;
    return what was signed, re-parsed from the digested bytes."""
    if not keys:
        raise SignatureError("no trusted key is configured: nothing can be verified")
    try:
        return _verify(element, keys)
    except SignatureError:
        raise
    except XmlError as e:  # a missing or doubled part of the signature
        raise SignatureError(str(e)) from e
    except etree.C14NError as e:  # e.g. a relative namespace URI, which c14n refuses
        raise SignatureError(f"cannot canonicalize the signed element: {e}") from e


def _remove_keeping_tail(node: Element) -> None:
    """The enveloped-signature transform: the element goes, the text after it
    stays (lxml's remove() would take that text, its tail, along)."""
    parent = node.getparent()
    if node.tail:
        previous = node.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + node.tail
        else:
            parent.text = (parent.text or "") + node.tail
    parent.remove(node)


def _verify(element: Element, keys: list[PublicKey]) -> Element:
    signature = one(element, "ds", "Signature")
    info = one(signature, "ds", "SignedInfo")
    if [etree.QName(c).localname for c in info][:2] != ["CanonicalizationMethod", "SignatureMethod"]:
        raise SignatureError("SignedInfo must start with its c14n and signature methods")
    _algorithm(one(info, "ds", "CanonicalizationMethod"), (EXC_C14N,), "canonicalization")
    method = _algorithm(one(info, "ds", "SignatureMethod"), (RSA_SHA256, ECDSA_SHA256), "signature method")
    ref = one(info, "ds", "Reference")
    reference = element.get("ID")
    if not reference or ref.get("URI") != f"#{reference}":
        raise SignatureError("the signature does not cover this element")
    if element.getroottree().getroot().xpath("count(//@ID[. = $id])", id=reference) != 1:
        raise SignatureError("the signed ID is not unique in the message")
    transforms = children(one(ref, "ds", "Transforms"), "ds", "Transform")
    if [t.get("Algorithm") for t in transforms] != [ENVELOPED, EXC_C14N] or len(transforms[0]):
        raise SignatureError("only the enveloped-signature and exclusive c14n transforms are allowed")
    prefixes = _prefix_list(transforms[1])
    _algorithm(one(ref, "ds", "DigestMethod"), (SHA256,), "digest method")
    expected = _unb64(one(ref, "ds", "DigestValue").text or "")

    content = deepcopy(element)
    _remove_keeping_tail(one(content, "ds", "Signature"))
    canonical = _c14n(content, prefixes)
    if not hmac.compare_digest(hashlib.sha256(canonical).digest(), expected):
        raise SignatureError("the digest does not match: the signed element was changed")
    raw = _unb64(one(signature, "ds", "SignatureValue").text or "")
    signed = _c14n(info)
    for key in keys:
        if method_of(key) == method and verify_bytes(key, method, signed, raw):
            return parse(canonical, len(canonical))
    raise SignatureError("the signature does not verify with any trusted key")
