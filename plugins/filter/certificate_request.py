# Copyright: dmzkit maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: csr_deviations
short_description: What a certificate signing request asks for beyond what the CA decided
version_added: 0.1.0
description:
  - Compares a PEM certificate signing request (CSR) with the certificate
    the CA means to issue, and returns every difference, so a CA can sign
    the request only when the requester contributed nothing but its public
    key.
  - community.crypto's C(ownca) provider copies the request's subject and
    every extension into the certificate. A request made on the host that
    receives the certificate is as trustworthy as that host; this filter
    lets the CA refuse one that asks for another subject, another name, a
    wider purpose or an extension of its own.
  - Checked, each exactly, extra or missing ones included - the subject
    (attributes in order); the subject alternative names; basic constraints
    (critical, not a CA); key usage (critical); extended key usage; no
    other extension; the request's own signature; the public key's type and
    curve (ECC) or minimum size (RSA).
  - Runs on the controller with the C(cryptography) library that
    ansible-core requires.
options:
  _input:
    description: The request, PEM.
    type: str
    required: true
  subject:
    description: The subject the CA decided, as community.crypto's C(subject_ordered).
    type: list
    elements: dict
    required: true
  subject_alt_names:
    description: Subject alternative names in C(TYPE:value) form (DNS, IP, email, URI).
    type: list
    elements: str
    default: []
  key_usage:
    description: Key usages, in the short names community.crypto takes (C(digitalSignature), ...).
    type: list
    elements: str
    required: true
  extended_key_usage:
    description: Extended key usages, short names (C(serverAuth), ...) or dotted OIDs.
    type: list
    elements: str
    required: true
  key_type:
    description: The key type the CA accepts.
    type: str
    choices: [ECC, RSA]
    required: true
  key_curve:
    description: With O(key_type=ECC), the one curve accepted.
    type: str
  key_size:
    description: With O(key_type=RSA), the smallest size accepted, in bits.
    type: int
"""

EXAMPLES = r"""
- name: Refuse a request that asks for more than the CA decided
  ansible.builtin.assert:
    that: deviations | length == 0
    fail_msg: "Refused: {{ deviations | join('; ') }}"
  vars:
    deviations: >-
      {{ csr.csr | dmzkit.remote_access.csr_deviations(
           subject=[{'commonName': 'gw1.lab.example'}], subject_alt_names=['DNS:gw1.lab.example'],
           key_usage=['digitalSignature'], extended_key_usage=['serverAuth'],
           key_type='ECC', key_curve='secp256r1') }}
"""

RETURN = r"""
_value:
  description: One sentence per difference; empty when the request asks for exactly what was decided.
  type: list
  elements: str
"""

import ipaddress
from collections import Counter

from ansible.errors import AnsibleFilterError

from ansible_collections.dmzkit.remote_access.plugins.plugin_utils.general_names import split

try:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtensionOID
except ImportError as exc:
    # ansible-core requires cryptography: without it the filter says so when used.
    CRYPTOGRAPHY_ERROR = str(exc)
else:
    CRYPTOGRAPHY_ERROR = None

# The names profiles use, as dotted OIDs (RFC 5280, 4.1.2.4 and 4.2.1.12).
_ATTRIBUTES = {
    "commonName": "2.5.4.3",
    "organizationName": "2.5.4.10",
    "organizationalUnitName": "2.5.4.11",
    "countryName": "2.5.4.6",
    "stateOrProvinceName": "2.5.4.8",
    "localityName": "2.5.4.7",
    "emailAddress": "1.2.840.113549.1.9.1",
}
_KEY_USAGES = {
    "digitalSignature": "digital_signature",
    "nonRepudiation": "content_commitment",
    "contentCommitment": "content_commitment",
    "keyEncipherment": "key_encipherment",
    "dataEncipherment": "data_encipherment",
    "keyAgreement": "key_agreement",
    "keyCertSign": "key_cert_sign",
    "cRLSign": "crl_sign",
    "encipherOnly": "encipher_only",
    "decipherOnly": "decipher_only",
}
_EXTENDED_KEY_USAGES = {
    "serverAuth": "1.3.6.1.5.5.7.3.1",
    "clientAuth": "1.3.6.1.5.5.7.3.2",
    "codeSigning": "1.3.6.1.5.5.7.3.3",
    "emailProtection": "1.3.6.1.5.5.7.3.4",
    "timeStamping": "1.3.6.1.5.5.7.3.8",
    "OCSPSigning": "1.3.6.1.5.5.7.3.9",
    "ipsecIKE": "1.3.6.1.5.5.7.3.17",
}


def _name(subject: list[dict]) -> x509.Name:
    attributes = []
    for entry in subject:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise AnsibleFilterError(f"subject entries are one-key dicts, not {entry!r}")
        (key, value), = entry.items()
        if key not in _ATTRIBUTES:
            raise AnsibleFilterError(f"subject attribute '{key}' is not one of {', '.join(_ATTRIBUTES)}")
        attributes.append(x509.NameAttribute(x509.ObjectIdentifier(_ATTRIBUTES[key]), str(value)))
    return x509.Name(attributes)


def _general_name(text: str) -> x509.GeneralName:
    kind, value = split(text)
    if kind == "DNS":
        return x509.DNSName(value)
    if kind == "email":
        return x509.RFC822Name(value)
    if kind == "URI":
        return x509.UniformResourceIdentifier(value)
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError as exc:
        raise AnsibleFilterError(f"'{text}': {exc}") from exc


def _key_usage(names: list[str]) -> x509.KeyUsage:
    flags = dict.fromkeys(set(_KEY_USAGES.values()), False)
    for name in names:
        if name not in _KEY_USAGES:
            raise AnsibleFilterError(f"key usage '{name}' is not one of {', '.join(_KEY_USAGES)}")
        flags[_KEY_USAGES[name]] = True
    return x509.KeyUsage(**flags)


def _extended_key_usage(names: list[str]) -> x509.ExtendedKeyUsage:
    oids = []
    for name in names:
        try:
            oids.append(x509.ObjectIdentifier(_EXTENDED_KEY_USAGES.get(name, name)))
        except ValueError as exc:
            raise AnsibleFilterError(
                f"extended key usage '{name}' is neither a dotted OID nor one of {', '.join(_EXTENDED_KEY_USAGES)}"
            ) from exc
    return x509.ExtendedKeyUsage(oids)


def _key_deviation(key: object, key_type: str, key_curve: str | None, key_size: int | None) -> str | None:
    if key_type == "ECC":
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != key_curve:
            return f"its public key is {_describe(key)}; the CA accepts ECC {key_curve} only"
        return None
    if key_type == "RSA":
        if not isinstance(key, rsa.RSAPublicKey) or key.key_size < int(key_size or 0):
            return f"its public key is {_describe(key)}; the CA accepts RSA of {key_size} bits or more only"
        return None
    raise AnsibleFilterError(f"key_type must be ECC or RSA, not {key_type!r}")


def _describe(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECC {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size} bits"
    return type(key).__name__.replace("PublicKey", "").lstrip("_") or "of an unknown type"


def csr_deviations(pem: str, subject: list[dict], key_usage: list[str], extended_key_usage: list[str],
                   key_type: str, subject_alt_names: list[str] | None = None, key_curve: str | None = None,
                   key_size: int | None = None) -> list[str]:
    if CRYPTOGRAPHY_ERROR is not None:
        raise AnsibleFilterError(f"csr_deviations needs the cryptography library: {CRYPTOGRAPHY_ERROR}")
    expected_names = [_general_name(n) for n in subject_alt_names or []]
    wanted: dict[x509.ObjectIdentifier, tuple[bool, x509.ExtensionType]] = {
        ExtensionOID.BASIC_CONSTRAINTS: (True, x509.BasicConstraints(ca=False, path_length=None)),
        ExtensionOID.KEY_USAGE: (True, _key_usage(key_usage)),
        ExtensionOID.EXTENDED_KEY_USAGE: (False, _extended_key_usage(extended_key_usage)),
    }
    expected_subject = _name(subject)
    try:
        request = x509.load_pem_x509_csr(str(pem).encode())
        extensions = list(request.extensions)
    except ValueError as exc:
        return [f"it is not a readable PEM certificate request ({exc})"]

    deviations = []
    if not request.is_signature_valid:
        deviations.append("its signature does not verify")
    if request.subject != expected_subject:
        deviations.append(f"it asks for subject {request.subject.rfc4514_string()}, "
                          f"not {expected_subject.rfc4514_string()}")
    key = _key_deviation(request.public_key(), key_type, key_curve, key_size)
    if key:
        deviations.append(key)

    seen = set()
    for extension in extensions:
        seen.add(extension.oid)
        if extension.oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME:
            asked = Counter(extension.value)
            if asked != Counter(expected_names):
                names = ", ".join(sorted(str(n.value) for n in asked))
                deviations.append(f"it asks for the names [{names}], not "
                                  f"[{', '.join(sorted(str(n.value) for n in expected_names))}]")
            continue
        if extension.oid not in wanted:
            deviations.append(f"it asks for an extension the CA does not put in: {extension.oid.dotted_string}"
                              f" ({getattr(extension.oid, '_name', 'unknown')})")
            continue
        critical, value = wanted[extension.oid]
        if extension.value != value or extension.critical != critical:
            deviations.append(f"its {extension.oid._name} is {extension.value!r} (critical: {extension.critical}), "
                              f"not {value!r} (critical: {critical})")
    for oid in wanted:
        if oid not in seen:
            deviations.append(f"it lacks the {oid._name} extension")
    if expected_names and ExtensionOID.SUBJECT_ALTERNATIVE_NAME not in seen:
        deviations.append("it lacks the subject alternative names")
    return deviations


class FilterModule:
    def filters(self) -> dict:
        return {"csr_deviations": csr_deviations}
