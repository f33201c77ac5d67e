#!/usr/bin/python
# Copyright: dmzkit maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: saml_idp_info
short_description: The collection's SAML IdP as its service providers see it
version_added: 0.1.0
description:
  - Run on the IdP host. Returns its signed metadata, endpoints, the
    fingerprints of its signing and TLS keys, and the service providers
    registered with C(saml_sp). Changes nothing.
author: dmzkit maintainers (@dmzkit)
requirements:
  - cryptography (Debian C(python3-cryptography))
options:
  config:
    description: The IdP's configuration file.
    type: path
    default: /etc/dmzkit-sso/idp.json
  command:
    description: The IdP's command, which signs the metadata.
    type: path
    default: /opt/dmzkit/venv/bin/dmzkit-sso
extends_documentation_fragment:
  - dmzkit.remote_access.attributes.info_module
"""

EXAMPLES = r"""
- name: Read the IdP
  dmzkit.remote_access.saml_idp_info:
  register: idp
  delegate_to: idp1

- name: Give an SP the IdP's metadata
  ansible.builtin.copy:
    content: "{{ idp.metadata }}"
    dest: /etc/my-sp/idp-metadata.xml
    mode: "0644"
"""

RETURN = r"""
entity_id:
  description: The IdP's entityID.
  returned: always
  type: str
sso_url:
  description: Where SPs send AuthnRequests (HTTP-Redirect).
  returned: always
  type: str
ars_url:
  description: Where SPs resolve artifacts (SOAP over mutual TLS).
  returned: always
  type: str
metadata:
  description: The signed metadata.
  returned: always
  type: str
signing_certificate:
  description: The PEM certificate SPs check assertions with.
  returned: always
  type: str
signing_spki_sha256:
  description: SHA-256 of the signing key (SubjectPublicKeyInfo), hex.
  returned: always
  type: str
tls_spki_sha256:
  description: SHA-256 of both channels' TLS key, hex.
  returned: always
  type: str
service_providers:
  description: Registered SPs, each with C(name), C(entity_id) and C(acs_url).
  returned: always
  type: list
  elements: dict
"""

import hashlib
import json
import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

CRYPTOGRAPHY_ERROR: str | None = None
try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
except ImportError:
    x509 = None
    CRYPTOGRAPHY_ERROR = traceback.format_exc()


def spki_sha256(pem: bytes) -> str:
    key = x509.load_pem_x509_certificate(pem).public_key()
    return hashlib.sha256(key.public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            config=dict(type="path", default="/etc/dmzkit-sso/idp.json"),
            command=dict(type="path", default="/opt/dmzkit/venv/bin/dmzkit-sso"),
        ),
        supports_check_mode=True,
    )
    if x509 is None:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_ERROR)
    try:
        with open(module.params["config"], encoding="utf-8") as f:
            config = json.load(f)
        with open(config["signing_certificate"], "rb") as f:
            signing = f.read()
        with open(config["certificate"], "rb") as f:
            tls = f.read()
        providers = []
        for name in sorted(os.listdir(config["providers_dir"])):
            if name.endswith(".json"):
                with open(os.path.join(config["providers_dir"], name), encoding="utf-8") as f:
                    registration = json.load(f)
                providers.append({"name": name[:-5], "entity_id": registration.get("entity_id"),
                                  "acs_url": registration.get("acs_url")})
        facts = dict(
            entity_id=config["entity_id"],
            sso_url=config["base_url"] + "/saml2/sso",
            ars_url=config["back_url"] + "/saml2/ars",
            signing_certificate=signing.decode(),
            signing_spki_sha256=spki_sha256(signing),
            tls_spki_sha256=spki_sha256(tls),
            service_providers=providers,
        )
    # A file that is not the JSON object, or the PEM, the sso role writes.
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        module.fail_json(msg=f"cannot read the IdP's configuration ({module.params['config']}): {e!r}")
    rc, metadata, err = module.run_command([module.params["command"], "metadata", "--config",
                                            module.params["config"]])
    if rc != 0:
        module.fail_json(msg=f"the IdP could not sign its metadata: {err.strip()}")
    module.exit_json(changed=False, metadata=metadata, **facts)


if __name__ == "__main__":
    main()
