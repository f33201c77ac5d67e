"""SAML protocol messages of the artifact profile, built and read strictly.

- AuthnRequest over the HTTP-Redirect binding (SAMLBind §3.4): DEFLATE +
  base64 in the query, signed over the query string when the SP signs;
  the inflated size is capped (DEFLATE bombs).
- LogoutRequest / LogoutResponse (single logout, SAMLProf §4.4) over the
  same binding, always signed.
- ArtifactResolve / ArtifactResponse in a SOAP 1.1 envelope (SAMLBind §3.2):
  both signed with the enveloped profile of xmldsig.py.

Reading a message never trusts it: every reader returns plain values
taken after the structural checks, and raises XmlError otherwise.
"""
from __future__ import annotations

import base64
import datetime as dt
import secrets
import urllib.parse
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass

from lxml import etree

from . import xmldsig
from .xml import NS, SOAP_LIMIT, Element, XmlError, one, optional, parse, qname, serialize, text

ARTIFACT_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact"
REDIRECT_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
SOAP_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:SOAP"
SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
REQUESTER = "urn:oasis:names:tc:SAML:2.0:status:Requester"
REQUEST_DENIED = "urn:oasis:names:tc:SAML:2.0:status:RequestDenied"
UNKNOWN_PRINCIPAL = "urn:oasis:names:tc:SAML:2.0:status:UnknownPrincipal"
# What a SAML SOAP requester sends (SAMLBind 3.2.3.1; OpenSAML and others send the SOAPAction).
SOAP_HEADERS = {"Content-Type": "text/xml", "SOAPAction": "http://www.oasis-open.org/committees/security"}
# The inflated AuthnRequest of a Redirect: far above any real one, far below a bomb.
INFLATE_LIMIT = 16 * 1024
# SAMLBind §3.4.3 tells the sender a RelayState MUST NOT exceed 80 bytes,
# but SPs send whole return URLs (SimpleSAMLphp on purpose; 114 bytes seen),
# and refusing them signs nobody in. Still bounded: it is echoed in the
# login form and in the redirect to the ACS. 1024 bytes is a long URL, and
# percent-encoded (at most 3 KiB) it keeps the form under FORM_LIMIT and
# the ACS redirect under the 8 KiB request lines of aiohttp and nginx.
RELAY_STATE_LIMIT = 1024
CLOCK_SKEW = dt.timedelta(seconds=180)
# How long an AuthnRequest is taken, and so how long the login form that
# carries it stays good. At least as long as an SP waits for the answer
# (bs_app's sign-in cookie: 10 minutes), or a user who takes their time is
# refused here while the SP still waits.
AUTHN_REQUEST_LIFETIME = dt.timedelta(minutes=10)
REDIRECT_SIG_ALGORITHMS = (xmldsig.RSA_SHA256, xmldsig.ECDSA_SHA256)


def new_id() -> str:
    """An xs:ID: must not start with a digit; 160 random bits."""
    return "_" + secrets.token_hex(20)


def instant(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_instant(value: str | None, what: str) -> dt.datetime:
    """An xs:dateTime in UTC ('Z'), as SAMLCore §1.3.3 requires."""
    if not value or not value.endswith("Z"):
        raise XmlError(f"{what} must be a UTC time ending in Z")
    try:
        moment = dt.datetime.fromisoformat(value[:-1])
    except ValueError as e:
        raise XmlError(f"{what} is not a time") from e
    return moment.replace(tzinfo=dt.timezone.utc)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def check_fresh(moment: dt.datetime, what: str, lifetime: dt.timedelta = CLOCK_SKEW) -> None:
    """A message's IssueInstant: neither from the future nor older than `lifetime`, with skew."""
    current = now()
    if moment > current + CLOCK_SKEW or moment < current - lifetime - CLOCK_SKEW:
        raise XmlError(f"{what} is outside the accepted time window")


def accepted_for(lifetime: dt.timedelta = CLOCK_SKEW) -> float:
    """Seconds from the first to the last moment a message of this lifetime is
    accepted, skew on both sides: how long a replay cache must keep its ID."""
    return (lifetime + 2 * CLOCK_SKEW).total_seconds()


def node(prefix: str, local: str, parent: Element | None = None, **attributes: str) -> Element:
    nsmap = {"samlp": NS["samlp"], "saml": NS["saml"]}
    if parent is None:
        return etree.Element(qname(prefix, local), attributes, nsmap=nsmap)
    return etree.SubElement(parent, qname(prefix, local), attributes)


def new_message(local: str, issuer: str, **attributes: str) -> tuple[Element, str]:
    message_id = new_id()
    element = node("samlp", local, ID=message_id, Version="2.0", IssueInstant=instant(now()), **attributes)
    node("saml", "Issuer", element).text = issuer
    return element, message_id


def add_status(element: Element, codes: tuple[str, ...]) -> None:
    """A Status: the top-level code and its nested second-level codes, outermost first."""
    parent = node("samlp", "Status", element)
    for code in codes:
        parent = node("samlp", "StatusCode", parent, Value=code)


def read_status(element: Element) -> tuple[str, ...]:
    """The status codes of a response, outermost first."""
    code = one(one(element, "samlp", "Status"), "samlp", "StatusCode")
    return tuple(str(c.get("Value")) for c in code.iter(qname("samlp", "StatusCode")))


def read_header(element: Element, local: str) -> tuple[str, str, dt.datetime]:
    """ID, Issuer and IssueInstant of a request or response, checked."""
    if element.tag != qname("samlp", local):
        raise XmlError(f"expected samlp:{local}")
    if element.get("Version") != "2.0":
        raise XmlError("only SAML 2.0 is accepted")
    message_id = element.get("ID") or ""
    if not message_id:
        raise XmlError(f"{local} without ID")
    issuer = text(one(element, "saml", "Issuer"))
    return message_id, issuer, parse_instant(element.get("IssueInstant"), f"{local} IssueInstant")


# -- SOAP ---------------------------------------------------------------------

class SoapError(XmlError):
    """A message refused at the SOAP level for a reason SOAP 1.1 has a faultcode
    of its own for (§4.4.1): VersionMismatch or MustUnderstand."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def soap(element: Element) -> bytes:
    envelope = etree.Element(qname("soap", "Envelope"), nsmap={"soap": NS["soap"]})
    etree.SubElement(envelope, qname("soap", "Body")).append(element)
    return serialize(envelope)


def soap_fault(code: str, reason: str) -> bytes:
    """A SOAP 1.1 Fault (§4.4): `code` is Client, Server, MustUnderstand or
    VersionMismatch; `reason`, plain text for the requester's logs, is cut
    short and stripped of anything unprintable."""
    fault = etree.Element(qname("soap", "Fault"), nsmap={"soap": NS["soap"]})
    etree.SubElement(fault, "faultcode").text = f"soap:{code}"
    etree.SubElement(fault, "faultstring").text = "".join(c if c.isprintable() else "?" for c in reason[:300])
    return soap(fault)


def soap_body(data: bytes) -> Element:
    """The one element in a SOAP 1.1 body. A Header is allowed (SAMLBind §3.2.2.1
    lets requesters add one) and ignored, unless an entry of it must be
    understood: we understand none (SOAP 1.1 §4.2.3)."""
    envelope = parse(data, SOAP_LIMIT)
    if envelope.tag != qname("soap", "Envelope"):
        if etree.QName(envelope).localname == "Envelope":
            raise SoapError("VersionMismatch", "only SOAP 1.1 envelopes are accepted")
        raise XmlError("not a SOAP 1.1 envelope")
    header = optional(envelope, "soap", "Header")
    if header is not None:
        if envelope[0] is not header:
            raise XmlError("the SOAP Header must come first in the envelope")
        # An entry addressed to an intermediary (actor) should not reach us at
        # all: one that did is refused like ours rather than let through.
        if any(entry.get(qname("soap", "mustUnderstand")) in ("1", "true") for entry in header):
            raise SoapError("MustUnderstand", "a SOAP header entry we must understand is not supported")
    body = one(envelope, "soap", "Body")
    if len(body) != 1:
        raise XmlError("the SOAP body must hold exactly one element")
    return body[0]


# -- AuthnRequest over HTTP-Redirect ---------------------------------------------

@dataclass(frozen=True)
class AuthnRequest:
    id: str
    issuer: str
    acs_url: str | None
    is_passive: bool
    force_authn: bool


def authn_request(issuer: str, destination: str, acs_url: str) -> tuple[Element, str]:
    element, request_id = new_message("AuthnRequest", issuer, Destination=destination,
                                      AssertionConsumerServiceURL=acs_url, ProtocolBinding=ARTIFACT_BINDING)
    return element, request_id


def _query(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{k}={urllib.parse.quote_plus(v)}" for k, v in pairs)


def redirect_url(location: str, message: Element, relay_state: str | None, key: xmldsig.PrivateKey | None,
                 parameter: str = "SAMLRequest") -> str:
    """The Redirect binding: deflated, base64, URL-encoded as `parameter`
    (SAMLRequest or SAMLResponse); signed over the query when a key is given."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = compressor.compress(serialize(message)) + compressor.flush()
    pairs = [(parameter, base64.b64encode(deflated).decode())]
    if relay_state is not None:
        pairs.append(("RelayState", relay_state))
    if key is not None:
        pairs.append(("SigAlg", xmldsig.method_of(key)))
        pairs.append(("Signature", base64.b64encode(xmldsig.sign_bytes(key, _query(pairs).encode())).decode()))
    separator = "&" if "?" in location else "?"
    return location + separator + _query(pairs)


def _raw_query_values(query: str) -> dict[str, str]:
    """Each parameter's value as sent (still URL-encoded): the signature covers those bytes."""
    values: dict[str, str] = {}
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name in values:
            raise XmlError(f"{name} appears twice in the query")
        values[name] = value
    return values


def read_redirect(query: str, keys_of: Callable[[str], list[xmldsig.PublicKey]], parameter: str = "SAMLRequest"
                  ) -> tuple[Element, str | None, bool]:
    """The message of a Redirect query (in `parameter`: SAMLRequest or
    SAMLResponse), its RelayState, and whether it was signed with one of the
    keys `keys_of` gives for the message's issuer (an invalid or unexpected
    signature raises)."""
    raw = _raw_query_values(query)
    if parameter not in raw:
        raise XmlError(f"no {parameter} in the query")
    value = urllib.parse.unquote_plus(raw[parameter])
    try:
        deflated = base64.b64decode(value, validate=True)
        inflater = zlib.decompressobj(-15)
        data = inflater.decompress(deflated, INFLATE_LIMIT + 1)
    except (ValueError, zlib.error) as e:  # binascii.Error, or text that is not ASCII
        raise XmlError(f"{parameter} is not deflated base64") from e
    if len(data) > INFLATE_LIMIT or inflater.unconsumed_tail:
        raise XmlError(f"{parameter} inflates past the limit")
    relay = urllib.parse.unquote_plus(raw["RelayState"]) if "RelayState" in raw else None
    if relay is not None and len(relay.encode()) > RELAY_STATE_LIMIT:
        raise XmlError(f"RelayState longer than {RELAY_STATE_LIMIT} bytes")
    element = parse(data, INFLATE_LIMIT)
    if "Signature" not in raw:
        return element, relay, False
    algorithm = urllib.parse.unquote_plus(raw.get("SigAlg", ""))
    if algorithm not in REDIRECT_SIG_ALGORITHMS:
        # repr, cut short: the sender's text goes into our log, so no line breaks of its own.
        raise xmldsig.SignatureError(f"signature algorithm {algorithm[:100]!r} is not allowed")
    keys = keys_of(text(one(element, "saml", "Issuer")))
    if not keys:
        raise xmldsig.SignatureError("a signed message from an issuer with no signing key configured")
    # SAMLBind §3.4.4.1: the signature covers these, in this order, as sent.
    order = [n for n in (parameter, "RelayState", "SigAlg") if n in raw]
    signed_input = "&".join(f"{n}={raw[n]}" for n in order).encode()
    try:
        signature = base64.b64decode(urllib.parse.unquote_plus(raw["Signature"]), validate=True)
    except ValueError as e:  # binascii.Error, or text that is not ASCII
        raise xmldsig.SignatureError("bad base64 in the signature") from e
    if not any(xmldsig.verify_bytes(k, algorithm, signed_input, signature) for k in keys):
        raise xmldsig.SignatureError("the message's signature does not verify with its issuer's keys")
    return element, relay, True


def read_authn_request(element: Element, destinations: Collection[str]) -> AuthnRequest:
    """`destinations`: the URLs our SSO endpoint is reached under."""
    request_id, issuer, issued = read_header(element, "AuthnRequest")
    check_fresh(issued, "AuthnRequest", AUTHN_REQUEST_LIFETIME)
    if element.get("Destination") is not None and element.get("Destination") not in destinations:
        raise XmlError("the AuthnRequest is for another destination")
    binding = element.get("ProtocolBinding")
    if binding not in (None, ARTIFACT_BINDING):
        raise XmlError("only the HTTP-Artifact binding is offered for responses")
    return AuthnRequest(request_id, issuer, element.get("AssertionConsumerServiceURL"),
                        element.get("IsPassive") in ("true", "1"), element.get("ForceAuthn") in ("true", "1"))


# -- LogoutRequest / LogoutResponse over HTTP-Redirect ------------------------------

@dataclass(frozen=True)
class LogoutRequest:
    id: str
    issuer: str
    name_id: str


def logout_request(issuer: str, destination: str, name_id: str) -> tuple[Element, str]:
    """A LogoutRequest for `name_id`'s session (SAMLCore §3.7.1)."""
    element, request_id = new_message("LogoutRequest", issuer, Destination=destination)
    node("saml", "NameID", element).text = name_id
    return element, request_id


def read_logout_request(element: Element, destinations: Collection[str]) -> LogoutRequest:
    """`destinations`: the URLs our SLO endpoint is reached under. A signed
    Redirect message must name its Destination (SAMLBind §3.4.5.2): nobody
    can take one meant for another IdP here."""
    request_id, issuer, issued = read_header(element, "LogoutRequest")
    check_fresh(issued, "LogoutRequest")
    if element.get("Destination") not in destinations:
        raise XmlError("the LogoutRequest is for another destination")
    until = element.get("NotOnOrAfter")
    if until is not None and parse_instant(until, "NotOnOrAfter") <= now() - CLOCK_SKEW:
        raise XmlError("the LogoutRequest has expired")
    # BaseID and EncryptedID are not issued here, so never asked for.
    return LogoutRequest(request_id, issuer, text(one(element, "saml", "NameID")))


def logout_response(issuer: str, destination: str, in_response_to: str,
                    status: tuple[str, ...] = (SUCCESS,)) -> Element:
    element, _ = new_message("LogoutResponse", issuer, Destination=destination, InResponseTo=in_response_to)
    add_status(element, status)
    return element


def read_logout_response(element: Element, idp: str, destination: str, in_response_to: str) -> tuple[str, ...]:
    """The status codes of the IdP's answer to our LogoutRequest `in_response_to`."""
    read_answer(element, "LogoutResponse", idp, in_response_to)
    if element.get("Destination") != destination:
        raise XmlError("the LogoutResponse is addressed to another endpoint")
    return read_status(element)


def read_answer(element: Element, kind: str, idp: str, in_response_to: str) -> None:
    """Refuse a `kind` answer that is not `idp`'s fresh answer to our request `in_response_to`."""
    _, issuer, issued = read_header(element, kind)
    if issuer != idp:
        raise XmlError(f"the {kind} comes from another issuer")
    check_fresh(issued, kind)
    if element.get("InResponseTo") != in_response_to:
        raise XmlError(f"the {kind} answers another request")


# -- ArtifactResolve / ArtifactResponse -------------------------------------------

@dataclass(frozen=True)
class ArtifactResolve:
    id: str
    issuer: str
    artifact: str
    destination: str | None
    issued: dt.datetime
    element: Element


def artifact_resolve(issuer: str, destination: str, artifact: str, key: xmldsig.PrivateKey) -> tuple[bytes, str]:
    element, request_id = new_message("ArtifactResolve", issuer, Destination=destination)
    node("samlp", "Artifact", element).text = artifact
    xmldsig.sign(element, key)
    return soap(element), request_id


def read_artifact_resolve(data: bytes) -> ArtifactResolve:
    element = soap_body(data)
    request_id, issuer, issued = read_header(element, "ArtifactResolve")
    return ArtifactResolve(request_id, issuer, text(one(element, "samlp", "Artifact")),
                           element.get("Destination"), issued, element)


def artifact_response(issuer: str, in_response_to: str, message: bytes | None, key: xmldsig.PrivateKey,
                      status: tuple[str, ...] = (SUCCESS,)) -> bytes:
    """Success with the message, or empty Success (used, expired, someone else's:
    SAMLCore §3.5.3 wants an empty response, not an error). `status` is the
    top-level code and its nested second-level codes, outermost first."""
    element, _ = new_message("ArtifactResponse", issuer, InResponseTo=in_response_to)
    add_status(element, status)
    if message is not None:
        element.append(parse(message, SOAP_LIMIT))
    xmldsig.sign(element, key)
    return soap(element)


def read_artifact_response(data: bytes, idp: str, in_response_to: str, keys: list[xmldsig.PublicKey]) -> Element | None:
    """The message in a signed ArtifactResponse from `idp` answering our
    request, or None for an empty one. Only the verified bytes are read."""
    element = xmldsig.verify(soap_body(data), keys)
    read_answer(element, "ArtifactResponse", idp, in_response_to)
    status = read_status(element)
    if status[0] != SUCCESS:
        raise XmlError(f"the IdP answered {' / '.join(status)[:300]!r}")
    rest = [c for c in element if c.tag not in (qname("saml", "Issuer"), qname("samlp", "Status"))]
    if len(rest) > 1:
        raise XmlError("more than one message in the ArtifactResponse")
    return rest[0] if rest else None
