"""An artifact login by pysaml2 (PyPI) as the SP, against the lab's IdP.

Run by test_interop.py in the network namespace of a lab host, with the
controller's Python (where pysaml2 is installed):

    pysaml2_sp.py DIR [refusals]

DIR holds the SP's material (ca-chain.pem, signing.key/.crt, tls.key/.crt,
idp-metadata.xml) and `login.json` with the entity IDs, the ACS and the
user's name and password. Prints one JSON object: what the SP learnt, and
what the IdP answered to a second resolution of the same artifact.

With `refusals`, `login.json` also names another SP's artifact
(`foreign_artifact`), another client certificate (other-tls.crt/.key) and
the IdP's artifact lifetime (`artifact_ttl`); the object tells what the IdP
answered to this SP for the other SP's artifact, to the other certificate,
and to an artifact resolved after its lifetime.
"""
from __future__ import annotations

import base64
import json
import re
import sys
import time
import urllib.parse
from pathlib import Path
from xml.etree import ElementTree

import requests
from lxml import etree
from saml2 import BINDING_HTTP_ARTIFACT, BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.httpbase import HTTPError
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256


def response_in(soap: bytes) -> etree._Element | None:
    """The samlp:Response in a SOAP ArtifactResponse, as sent."""
    envelope = etree.fromstring(soap, etree.XMLParser(resolve_entities=False, no_network=True))
    return envelope.find(".//{urn:oasis:names:tc:SAML:2.0:protocol}Response")


def service_provider(where: Path, login: dict) -> Saml2Client:
    # pysaml2 takes the ArtifactResponse out of the SOAP envelope with
    # ElementTree, which writes it back with prefixes of its own (ns0, ...);
    # exclusive C14N keeps prefixes, so the IdP's signature would no longer
    # verify. With the IdP's prefixes registered the bytes come back as signed.
    for prefix, uri in (("samlp", "urn:oasis:names:tc:SAML:2.0:protocol"),
                        ("saml", "urn:oasis:names:tc:SAML:2.0:assertion"),
                        ("ds", "http://www.w3.org/2000/09/xmldsig#")):
        ElementTree.register_namespace(prefix, uri)
    config = SPConfig()
    config.load({
        "entityid": login["sp"],
        "service": {"sp": {
            # The same ACS for POST too: the resolved Response goes through
            # pysaml2's POST parser, which checks its Destination against it.
            "endpoints": {"assertion_consumer_service": [(login["acs"], BINDING_HTTP_ARTIFACT),
                                                         (login["acs"], BINDING_HTTP_POST)]},
            "authn_requests_signed": True,
            "want_assertions_signed": True,
            "want_response_signed": False,
            "signing_algorithm": SIG_RSA_SHA256,
            "digest_algorithm": DIGEST_SHA256,
        }},
        "key_file": str(where / "signing.key"),
        "cert_file": str(where / "signing.crt"),
        "metadata": {"local": [str(where / "idp-metadata.xml")]},
        "xmlsec_binary": "/usr/bin/xmlsec1",
        # The IdP names attributes plainly (uid, mail, groups), with no
        # attribute map in pysaml2.
        "allow_unknown_attributes": True,
        "ca_certs": str(where / "ca-chain.pem"),
        "verify_ssl_cert": True,
    })
    sp = Saml2Client(config)
    # pysaml2 would present its signing key on the back channel; the IdP
    # wants the client certificate the SP registered for TLS.
    sp.request_args["cert"] = (str(where / "tls.crt"), str(where / "tls.key"))
    return sp


def sign_in(sp: Saml2Client, where: Path, login: dict) -> tuple[str, dict[str, str]]:
    """AuthnRequest by redirect, the IdP's form; the request ID and the query the IdP sent the browser back with."""
    request_id, info = sp.prepare_for_authenticate(entityid=login["idp"], binding=BINDING_HTTP_REDIRECT,
                                                   response_binding=BINDING_HTTP_ARTIFACT, relay_state="/home")
    location = dict(info["headers"])["Location"]

    browser = requests.Session()
    browser.verify = str(where / "ca-chain.pem")
    page = browser.get(location, allow_redirects=False, timeout=10)
    fields = {k: v.replace("&amp;", "&") for k, v in
              re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page.text)}
    answer = browser.post(urllib.parse.urljoin(location, "/saml2/login"), allow_redirects=False, timeout=10,
                          data={**fields, "username": login["user"], "password": login["password"],
                                "method": "password"})
    if answer.status_code != 303:
        raise RuntimeError(f"login answered {answer.status_code}")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(answer.headers["Location"]).query))
    return request_id, query


def answer_of(sp: Saml2Client, artifact: str) -> dict:
    """What the IdP answers this SP's ArtifactResolve: status, and whether a Response came."""
    try:
        answer = sp.artifact2message(artifact, "idpsso")
    except HTTPError as refused:
        # pysaml2 raises on anything but 200, with "<status>:<body>".
        return {"status": int(str(refused).split(":", 1)[0]), "has_response": False}
    return {"status": answer.status_code,
            "has_response": answer.status_code == 200 and response_in(answer.content) is not None}


def main(where: Path) -> dict:
    login = json.loads((where / "login.json").read_text())
    sp = service_provider(where, login)
    request_id, query = sign_in(sp, where, login)
    resolved = sp.artifact2message(query["SAMLart"], "idpsso")
    # Checks the ArtifactResponse's signature, and returns the Response.
    sp.parse_artifact_resolve_response(resolved.text)
    # pysaml2 does not validate a resolved Response (its issue #679): hand
    # the Response, as the IdP sent it, to the Response parser, which checks
    # signature, audience and times. (Its object model would write it back
    # with xsi:type added to each AttributeValue, and the Assertion's
    # signature would no longer verify.)
    sent = etree.tostring(response_in(resolved.content))
    response = sp.parse_authn_request_response(base64.b64encode(sent).decode(), BINDING_HTTP_POST,
                                               {request_id: "/home"})
    identity = response.get_identity()
    return {
        "user": response.get_subject().text,
        "attributes": identity,
        "relay_state": query.get("RelayState"),
        "replay": answer_of(sp, query["SAMLart"]),
    }


def refusals(where: Path) -> dict:
    login = json.loads((where / "login.json").read_text())
    sp = service_provider(where, login)
    outcome = {"foreign": answer_of(sp, login["foreign_artifact"])}
    _, query = sign_in(sp, where, login)
    sp.request_args["cert"] = (str(where / "other-tls.crt"), str(where / "other-tls.key"))
    outcome["other_certificate"] = answer_of(sp, query["SAMLart"])
    sp.request_args["cert"] = (str(where / "tls.crt"), str(where / "tls.key"))
    # The refused request did not spend it.
    outcome["then_own_certificate"] = answer_of(sp, query["SAMLart"])
    _, query = sign_in(sp, where, login)
    time.sleep(login["artifact_ttl"] + 2)
    outcome["expired"] = answer_of(sp, query["SAMLart"])
    return outcome


if __name__ == "__main__":
    run = refusals if sys.argv[2:] == ["refusals"] else main
    print(json.dumps(run(Path(sys.argv[1])), default=str))
