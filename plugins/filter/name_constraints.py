# Copyright: dmzkit maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: names_outside_constraints
short_description: Subject alternative names a CA's name constraints would reject
version_added: 0.1.0
description:
  - Returns the subject alternative names of O(_input) that the X.509 name
    constraints (RFC 5280, section 4.2.1.10) in O(permitted) and O(excluded)
    do not allow, so a role can refuse a request before anything is signed.
  - Names and constraints use the C(TYPE:value) form of community.crypto
    (C(DNS:), C(IP:), C(email:), C(URI:)). A name is checked only against
    constraints of its own type; with no permitted constraint of a type,
    every name of that type is permitted.
  - C(DNS:example.org) covers the domain and its subdomains,
    C(DNS:.example.org) only subdomains. C(IP:) constraints are networks in
    CIDR or address/mask form. C(email:) constraints are a mailbox, a host
    (C(example.org)) or a domain (C(.example.org)). C(URI:) constraints
    match the URI's host like a DNS constraint.
options:
  _input:
    description: Subject alternative names to check.
    type: list
    elements: str
    required: true
  permitted:
    description: Permitted subtrees.
    type: list
    elements: str
    default: []
  excluded:
    description: Excluded subtrees.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Refuse names the issuing CA may not sign
  ansible.builtin.assert:
    that: rejected | length == 0
    fail_msg: "Not allowed by the CA's name constraints: {{ rejected | join(', ') }}"
  vars:
    rejected: >-
      {{ ['DNS:gw1.lab.example', 'IP:198.18.1.11']
         | dmzkit.remote_access.names_outside_constraints(['DNS:lab.example', 'IP:198.18.0.0/15']) }}
"""

RETURN = r"""
_value:
  description: The names that are not allowed, in input order.
  type: list
  elements: str
"""

import ipaddress
from urllib.parse import urlsplit

from ansible.errors import AnsibleFilterError

from ansible_collections.dmzkit.remote_access.plugins.plugin_utils.general_names import split as _split


def _dns_matches(name: str, constraint: str) -> bool:
    name = name.rstrip(".").lower()
    constraint = constraint.rstrip(".").lower()
    if constraint.startswith("."):
        return name.endswith(constraint)
    return name == constraint or name.endswith("." + constraint)


def _email_matches(mailbox: str, constraint: str) -> bool:
    if "@" in constraint:
        return mailbox.lower() == constraint.lower()
    host = mailbox.rpartition("@")[2].lower()
    constraint = constraint.lower()
    if constraint.startswith("."):
        return host.endswith(constraint)
    return host == constraint


def _ip_matches(address: str, constraint: str) -> bool:
    try:
        network = ipaddress.ip_network(constraint, strict=False)
        ip = ipaddress.ip_network(address, strict=False)
    except ValueError as exc:
        raise AnsibleFilterError(f"bad IP name or constraint: {exc}") from exc
    return ip.version == network.version and ip.subnet_of(network)  # type: ignore[arg-type]


def _matches(kind: str, value: str, constraint: str) -> bool:
    if kind == "DNS":
        return _dns_matches(value, constraint)
    if kind == "IP":
        return _ip_matches(value, constraint)
    if kind == "email":
        return _email_matches(value, constraint)
    return _dns_matches(urlsplit(value).hostname or "", constraint)


def names_outside_constraints(names: list[str], permitted: list[str] | None = None,
                              excluded: list[str] | None = None) -> list[str]:
    if not isinstance(names, list):
        raise AnsibleFilterError("names_outside_constraints expects a list of names")
    permitted_by_kind: dict[str, list[str]] = {}
    excluded_by_kind: dict[str, list[str]] = {}
    for source, target in ((permitted or [], permitted_by_kind), (excluded or [], excluded_by_kind)):
        for constraint in source:
            kind, value = _split(constraint)
            target.setdefault(kind, []).append(value)

    rejected = []
    for name in names:
        kind, value = _split(name)
        allowed = kind not in permitted_by_kind or any(
            _matches(kind, value, c) for c in permitted_by_kind[kind]
        )
        if allowed and any(_matches(kind, value, c) for c in excluded_by_kind.get(kind, [])):
            allowed = False
        if not allowed:
            rejected.append(name)
    return rejected


class FilterModule:
    def filters(self) -> dict:
        return {"names_outside_constraints": names_outside_constraints}
