"""The Response and its Assertion: issued by the IdP, checked by the SP.

The IdP signs the Assertion; the Response travels inside the signed
ArtifactResponse over mutual TLS. The SP side follows saml.md §4 in order
and reads every value from the verified Assertion only.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from . import xmldsig
from .protocol import (CLOCK_SKEW, SUCCESS, check_fresh, instant, new_id, new_message, node, now, parse_instant,
                       read_header)
from .xml import Element, XmlError, children, one, optional, qname, serialize, text

BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
PASSWORD = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
ATTRIBUTE_NAME_FORMAT = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
ASSERTION_LIFETIME = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Login:
    """What the SP learns from a valid assertion."""
    user: str
    session_index: str
    session_not_on_or_after: dt.datetime | None
    authn_context: str
    attributes: dict[str, list[str]] = field(default_factory=dict)
    assertion_id: str = ""
    not_on_or_after: dt.datetime | None = None
    # When the user authenticated: the IdP's session start, not the assertion's.
    authn_instant: dt.datetime | None = None


def response(idp: str, sp: str, acs_url: str, in_response_to: str | None, login: Login,
             key: xmldsig.PrivateKey, session_lifetime: dt.timedelta) -> bytes:
    """A Response to `sp` with one signed bearer Assertion for `login.user`,
    who authenticated at `login.authn_instant` (now if None), in a session
    that ends `session_lifetime` from now."""
    moment = now()
    authenticated = login.authn_instant or moment
    extra = {"InResponseTo": in_response_to} if in_response_to else {}
    element, _ = new_message("Response", idp, Destination=acs_url, **extra)
    status = node("samlp", "Status", element)
    node("samlp", "StatusCode", status, Value=SUCCESS)

    assertion = node("saml", "Assertion", element, ID=new_id(), Version="2.0", IssueInstant=instant(moment))
    node("saml", "Issuer", assertion).text = idp
    subject = node("saml", "Subject", assertion)
    node("saml", "NameID", subject, Format=UNSPECIFIED).text = login.user
    confirmation = node("saml", "SubjectConfirmation", subject, Method=BEARER)
    node("saml", "SubjectConfirmationData", confirmation, Recipient=acs_url,
         NotOnOrAfter=instant(moment + ASSERTION_LIFETIME), **extra)
    conditions = node("saml", "Conditions", assertion, NotBefore=instant(moment),
                      NotOnOrAfter=instant(moment + ASSERTION_LIFETIME))
    node("saml", "Audience", node("saml", "AudienceRestriction", conditions)).text = sp
    statement = node("saml", "AuthnStatement", assertion, AuthnInstant=instant(authenticated),
                     SessionIndex=login.session_index,
                     SessionNotOnOrAfter=instant(moment + session_lifetime))
    node("saml", "AuthnContextClassRef", node("saml", "AuthnContext", statement)).text = login.authn_context
    if login.attributes:
        attributes = node("saml", "AttributeStatement", assertion)
        for name, values in sorted(login.attributes.items()):
            attribute = node("saml", "Attribute", attributes, Name=name, NameFormat=ATTRIBUTE_NAME_FORMAT)
            for value in values:
                node("saml", "AttributeValue", attribute).text = value
    xmldsig.sign(assertion, key)
    return serialize(element)


def _window(element: Element, what: str, current: dt.datetime) -> dt.datetime:
    """NotBefore <= now < NotOnOrAfter, with clock skew; returns NotOnOrAfter."""
    if element.get("NotBefore") is not None and parse_instant(element.get("NotBefore"), what) > current + CLOCK_SKEW:
        raise XmlError(f"{what} is not valid yet")
    end = parse_instant(element.get("NotOnOrAfter"), f"{what} NotOnOrAfter")
    if end <= current - CLOCK_SKEW:
        raise XmlError(f"{what} has expired")
    return end


def validate(message: Element, idp: str, sp: str, acs_url: str, request_id: str,
             keys: list[xmldsig.PublicKey]) -> Login:
    """The checks of saml.md §4 on a Response to our AuthnRequest `request_id`."""
    _, issuer, issued = read_header(message, "Response")
    if issuer != idp:
        raise XmlError("the Response comes from another IdP")
    check_fresh(issued, "Response", ASSERTION_LIFETIME)
    if message.get("Destination") != acs_url:
        raise XmlError("the Response is addressed to another endpoint")
    if message.get("InResponseTo") != request_id:
        raise XmlError("the Response does not answer our request")
    code = one(one(message, "samlp", "Status"), "samlp", "StatusCode").get("Value")
    if code != SUCCESS:
        raise XmlError(f"the IdP answered {code}")
    if children(message, "saml", "EncryptedAssertion"):
        raise XmlError("encrypted assertions are not supported")
    found = message.findall(".//" + qname("saml", "Assertion"))
    if len(found) != 1 or found[0].getparent() is not message:
        raise XmlError("exactly one Assertion, directly in the Response, is accepted")

    assertion = xmldsig.verify(found[0], keys)
    current = now()
    if text(one(assertion, "saml", "Issuer")) != idp:
        raise XmlError("the Assertion comes from another IdP")
    subject = one(assertion, "saml", "Subject")
    user = text(one(subject, "saml", "NameID"))
    if not user:
        raise XmlError("empty NameID")
    bearer = [c for c in children(subject, "saml", "SubjectConfirmation") if c.get("Method") == BEARER]
    if len(bearer) != 1:
        raise XmlError("expected one bearer SubjectConfirmation")
    data = one(bearer[0], "saml", "SubjectConfirmationData")
    if data.get("NotBefore") is not None:
        raise XmlError("bearer SubjectConfirmationData must not carry NotBefore")
    if data.get("Recipient") != acs_url:
        raise XmlError("the Assertion's Recipient is another endpoint")
    if data.get("InResponseTo") != request_id:
        raise XmlError("the Assertion's InResponseTo is another request")
    confirmed_until = _window(data, "SubjectConfirmationData", current)

    conditions = one(assertion, "saml", "Conditions")
    conditions_until = _window(conditions, "Conditions", current)
    restrictions = children(conditions, "saml", "AudienceRestriction")
    if not restrictions or not all(sp in [text(a) for a in children(r, "saml", "Audience")] for r in restrictions):
        raise XmlError("the Assertion is for another audience")

    statement = one(assertion, "saml", "AuthnStatement")
    session_end = statement.get("SessionNotOnOrAfter")
    attributes: dict[str, list[str]] = {}
    block = optional(assertion, "saml", "AttributeStatement")
    for attribute in children(block, "saml", "Attribute") if block is not None else []:
        attributes[attribute.get("Name", "")] = [text(v) for v in children(attribute, "saml", "AttributeValue")]
    context = one(statement, "saml", "AuthnContext")
    return Login(
        user=user,
        session_index=statement.get("SessionIndex", ""),
        session_not_on_or_after=parse_instant(session_end, "SessionNotOnOrAfter") if session_end else None,
        authn_context=text(one(context, "saml", "AuthnContextClassRef")),
        attributes=attributes,
        assertion_id=assertion.get("ID", ""),
        not_on_or_after=min(confirmed_until, conditions_until),
        authn_instant=parse_instant(statement.get("AuthnInstant"), "AuthnInstant"),
    )
