#!/usr/bin/python
# Copyright: dmzkit maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: saml_sp
short_description: Register a SAML service provider at the collection's IdP
version_added: 0.1.0
description:
  - Writes the registration the IdP of the C(sso) role reads at start, one
    JSON file per SP in O(directory). It holds the SP's entityID, its
    HTTP-Artifact ACS, where its single logout answers go (if it has such an
    endpoint), the keys its ArtifactResolve and LogoutRequest messages are
    signed with, and the client certificates it uses on the mutual-TLS back channel.
  - Takes them from the SP's metadata (O(metadata)), or given one by one.
  - The IdP's own code judges the registration before it replaces the old
    one, in check mode too (C(dmzkit-sso check-provider) on the new file),
    so what the IdP would refuse at start is refused here, in its words,
    before a file is touched. Among others, the ACS must be HTTPS, and a signing key RSA
    of 2048 bits or more or ECDSA on P-256, the keys the IdP verifies
    signatures with.
  - Restart the IdP to apply (the C(sso) role's handler does).
author: dmzkit maintainers (@dmzkit)
requirements:
  - cryptography
  - lxml (with O(metadata))
  - the IdP installed on the target (role C(saml_idp))
options:
  name:
    description: Name of the registration (its file name), letters, digits, C(.), C(_), C(-).
    type: str
    required: true
  state:
    description: Whether the SP is registered.
    type: str
    choices: [present, absent]
    default: present
  metadata:
    description:
      - The SP's metadata (one C(md:EntityDescriptor) with an C(SPSSODescriptor)); its default
        HTTP-Artifact C(AssertionConsumerService), its HTTP-Redirect C(SingleLogoutService) if it has
        one (its C(ResponseLocation), else its C(Location)) and its signing C(KeyDescriptor)s are used.
      - Exclusive with O(entity_id), O(acs_url), O(slo_url) and O(signing_certificates).
    type: str
  entity_id:
    description: The SP's entityID.
    type: str
  acs_url:
    description: Its HTTP-Artifact assertion consumer service (HTTPS).
    type: str
  slo_url:
    description:
      - Where the IdP sends its signed LogoutResponse (HTTP-Redirect, HTTPS) when the SP signs a user
        out with a LogoutRequest.
      - Without it, the IdP shows the user a page of its own instead.
    type: str
  signing_certificates:
    description: PEM certificates of the keys that sign its requests.
    type: list
    elements: str
  tls_certificates:
    description: PEM client certificates it presents on the back channel; required with O(state=present).
    type: list
    elements: str
  directory:
    description: The IdP's registry.
    type: path
    default: /etc/dmzkit-sso/providers
  executable:
    description:
      - The IdP's command, as role C(saml_idp) installs it; the registration is checked with its
        C(check-provider).
    type: path
    default: /opt/dmzkit/venv/bin/dmzkit-sso
extends_documentation_fragment:
  - dmzkit.remote_access.attributes
"""

EXAMPLES = r"""
- name: Register the intranet portal from its metadata
  dmzkit.remote_access.saml_sp:
    name: intranet
    metadata: "{{ lookup('ansible.builtin.file', 'intranet-sp.xml') }}"
    tls_certificates: ["{{ lookup('ansible.builtin.file', 'intranet-client.pem') }}"]

- name: Retire it
  dmzkit.remote_access.saml_sp:
    name: intranet
    state: absent
"""

RETURN = r"""
path:
  description: The registration file.
  returned: always
  type: str
entity_id:
  description: The SP's entityID.
  returned: when state is present
  type: str
acs_url:
  description: The ACS the IdP sends artifacts to.
  returned: when state is present
  type: str
slo_url:
  description: Where the IdP sends LogoutResponses, or null.
  returned: when state is present
  type: str
"""

import base64
import json
import os
import re
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.dmzkit.remote_access.plugins.module_utils._io import Candidate, file_attributes
from ansible_collections.dmzkit.remote_access.plugins.module_utils._service import run_service

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    CRYPTOGRAPHY_ERROR = None
except ImportError:
    x509 = None
    CRYPTOGRAPHY_ERROR = traceback.format_exc()

try:
    from lxml import etree
    LXML_ERROR = None
except ImportError:
    etree = None
    LXML_ERROR = traceback.format_exc()

NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
ARTIFACT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact"
REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"


class Refused(ValueError):
    pass


def from_metadata(text):
    """(entity_id, acs_url, slo_url or None, signing certificates as PEM) of SP metadata."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(text.encode(), parser)
    except etree.XMLSyntaxError as e:
        raise Refused(f"the metadata is not well-formed XML: {e}")
    if root.getroottree().docinfo.doctype:
        raise Refused("the metadata has a DOCTYPE")
    if root.tag != f"{{{MD}}}EntityDescriptor":
        raise Refused("the metadata must be one md:EntityDescriptor")
    sp = root.findall(f"{{{MD}}}SPSSODescriptor")
    if len(sp) != 1:
        raise Refused("the metadata must hold one SPSSODescriptor")
    services = [s for s in sp[0].findall(f"{{{MD}}}AssertionConsumerService") if s.get("Binding") == ARTIFACT]
    if not services:
        raise Refused("the SP has no HTTP-Artifact AssertionConsumerService")
    services.sort(key=lambda s: (s.get("isDefault") not in ("true", "1"), endpoint_index(s)))
    # The IdP answers single logout the Redirect way only (SAMLMeta 2.2.2: responses to ResponseLocation).
    logout = [s for s in sp[0].findall(f"{{{MD}}}SingleLogoutService") if s.get("Binding") == REDIRECT]
    slo_url = (logout[0].get("ResponseLocation") or logout[0].get("Location")) if logout else None
    pems = []
    for descriptor in sp[0].findall(f"{{{MD}}}KeyDescriptor"):
        if descriptor.get("use", "signing") != "signing":
            continue
        for value in descriptor.iter(f"{{{DS}}}X509Certificate"):
            try:
                der = base64.b64decode("".join((value.text or "").split()), validate=True)
            except ValueError:
                raise Refused("an X509Certificate is not base64")
            pems.append(serialization_pem(der))
    return root.get("entityID", ""), services[0].get("Location", ""), slo_url, pems


def endpoint_index(service):
    """An IndexedEndpointType's index: an xs:unsignedShort (SAMLMeta 2.2.3)."""
    text = service.get("index", "0")
    if not (text.isascii() and text.isdigit() and int(text) <= 65535):
        raise Refused(f"an AssertionConsumerService index must be 0-65535, got {text!r}")
    return int(text)


def serialization_pem(der):
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise Refused("a KeyDescriptor holds something that is not a certificate")
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def normalized_certificates(pems, what):
    """The certificates as the IdP reads them back: PEM, one each. Whether
    they may sign is the IdP's to say (check-provider)."""
    if not pems:
        raise Refused(f"{what}: at least one certificate is needed")
    out = []
    for pem in pems:
        try:
            cert = x509.load_pem_x509_certificate(pem.encode())
        except ValueError:
            raise Refused(f"{what}: not a PEM certificate")
        out.append(cert.public_bytes(serialization.Encoding.PEM).decode())
    return out


def registration(params):
    if params["metadata"]:
        entity_id, acs_url, slo_url, signing = from_metadata(params["metadata"])
    else:
        entity_id, acs_url, slo_url = params["entity_id"], params["acs_url"], params["slo_url"]
        signing = params["signing_certificates"] or []
    wanted = {
        "entity_id": entity_id,
        "acs_url": acs_url,
        "signing_certificates": normalized_certificates(signing, "signing_certificates"),
        "tls_certificates": normalized_certificates(params["tls_certificates"] or [], "tls_certificates"),
    }
    # Only when there is one: a registration written before slo_url existed stays as it is.
    if slo_url:
        wanted["slo_url"] = slo_url
    return wanted


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            metadata=dict(type="str"),
            entity_id=dict(type="str"),
            acs_url=dict(type="str"),
            slo_url=dict(type="str"),
            signing_certificates=dict(type="list", elements="str"),
            tls_certificates=dict(type="list", elements="str"),
            directory=dict(type="path", default="/etc/dmzkit-sso/providers"),
            executable=dict(type="path", default="/opt/dmzkit/venv/bin/dmzkit-sso"),
        ),
        mutually_exclusive=[("metadata", "entity_id"), ("metadata", "acs_url"), ("metadata", "slo_url"),
                            ("metadata", "signing_certificates")],
        required_if=[("state", "present", ("tls_certificates",))],
        supports_check_mode=True,
    )
    p = module.params
    if x509 is None:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_ERROR)
    if p["metadata"] and etree is None:
        module.fail_json(msg=missing_required_lib("lxml"), exception=LXML_ERROR)
    if not NAME.match(p["name"]):
        module.fail_json(msg=f"name must be 1-64 letters, digits, '.', '_' or '-', got {p['name']!r}")
    path = os.path.join(p["directory"], p["name"] + ".json")
    before = read(path)

    if p["state"] == "absent":
        if before is not None and not module.check_mode:
            os.unlink(path)
        module.exit_json(changed=before is not None, path=path,
                         diff={"before": before or {}, "after": {}})

    if not p["metadata"] and not (p["entity_id"] and p["acs_url"] and p["signing_certificates"]):
        module.fail_json(msg="give metadata, or entity_id, acs_url and signing_certificates")
    try:
        wanted = registration(p)
    except Refused as e:
        module.fail_json(msg=f"SP {p['name']} not registered: {e}")
    if not os.path.isdir(p["directory"]):
        module.fail_json(msg=f"{p['directory']} does not exist (is the sso role applied?)")
    for other in sorted(os.listdir(p["directory"])):
        if other.endswith(".json") and other != p["name"] + ".json":
            if (read(os.path.join(p["directory"], other)) or {}).get("entity_id") == wanted["entity_id"]:
                module.fail_json(msg=f"{wanted['entity_id']} is already registered as {other[:-5]}")

    changed = before != wanted
    # Certificates and URLs only: readable by the IdP's service user.
    attributes = file_attributes(module, path, "0644")
    with Candidate(module, path, (json.dumps(wanted, indent=2, sort_keys=True) + "\n").encode()) as candidate:
        # The IdP's own loader judges it, as the IdP would at start.
        run_service(module, [p["executable"], "check-provider", "%s"], candidate.name, path, "saml_idp")
        if changed and not module.check_mode:
            candidate.install(attributes)
    module.exit_json(changed=changed, path=path, entity_id=wanted["entity_id"], acs_url=wanted["acs_url"],
                     slo_url=wanted.get("slo_url"), diff={"before": before or {}, "after": wanted})


if __name__ == "__main__":
    main()
