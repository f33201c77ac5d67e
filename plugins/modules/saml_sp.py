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
    HTTP-Artifact ACS, the keys its ArtifactResolve requests are signed with,
    and the client certificates it uses on the mutual-TLS back channel.
  - Takes them from the SP's metadata (O(metadata)), or given one by one.
    Only HTTPS ACS URLs and RSA (2048 bits or more) or P-256 keys are
    accepted; anything else fails before a file is touched.
  - Restart the IdP to apply (the C(sso) role's handler does).
author: dmzkit maintainers (@dmzkit)
requirements:
  - cryptography
  - lxml (with O(metadata))
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
        HTTP-Artifact C(AssertionConsumerService) and its signing C(KeyDescriptor)s are used.
      - Exclusive with O(entity_id), O(acs_url) and O(signing_certificates).
    type: str
  entity_id:
    description: The SP's entityID.
    type: str
  acs_url:
    description: Its HTTP-Artifact assertion consumer service (HTTPS).
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
"""

import base64
import json
import os
import re
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.dmzkit.remote_access.plugins.module_utils._io import write_file

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
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


class Refused(ValueError):
    pass


def from_metadata(text):
    """(entity_id, acs_url, signing certificates as PEM) of SP metadata."""
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
    return root.get("entityID", ""), services[0].get("Location", ""), pems


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


def checked_certificates(pems, what, signing):
    if not pems:
        raise Refused(f"{what}: at least one certificate is needed")
    out = []
    for pem in pems:
        try:
            cert = x509.load_pem_x509_certificate(pem.encode())
        except ValueError:
            raise Refused(f"{what}: not a PEM certificate")
        key = cert.public_key()
        if signing and not ((isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048)
                            or (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1")):
            raise Refused(f"{what}: only RSA keys of 2048 bits or more and P-256 keys sign")
        out.append(cert.public_bytes(serialization.Encoding.PEM).decode())
    return out


def registration(params):
    if params["metadata"]:
        entity_id, acs_url, signing = from_metadata(params["metadata"])
    else:
        entity_id, acs_url, signing = params["entity_id"], params["acs_url"], params["signing_certificates"] or []
    if not entity_id:
        raise Refused("the SP has no entityID")
    if not (acs_url or "").startswith("https://"):
        raise Refused(f"the ACS must be an https:// URL, got {acs_url!r}")
    return {
        "entity_id": entity_id,
        "acs_url": acs_url,
        "signing_certificates": checked_certificates(signing, "signing_certificates", True),
        "tls_certificates": checked_certificates(params["tls_certificates"] or [], "tls_certificates", False),
    }


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
            signing_certificates=dict(type="list", elements="str"),
            tls_certificates=dict(type="list", elements="str"),
            directory=dict(type="path", default="/etc/dmzkit-sso/providers"),
        ),
        mutually_exclusive=[("metadata", "entity_id"), ("metadata", "acs_url"), ("metadata", "signing_certificates")],
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
    if changed:
        # Certificates and URLs only: readable by the IdP's service user.
        write_file(module, path, (json.dumps(wanted, indent=2, sort_keys=True) + "\n").encode(), default_mode="0644")
    module.exit_json(changed=changed, path=path, entity_id=wanted["entity_id"], acs_url=wanted["acs_url"],
                     diff={"before": before or {}, "after": wanted})


if __name__ == "__main__":
    main()
