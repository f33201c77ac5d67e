from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.dmzkit.remote_access.plugins.filter.name_constraints import (
    names_outside_constraints as outside,
)


@pytest.mark.parametrize(
    ("name", "constraint", "allowed"),
    [
        ("DNS:lab.example", "DNS:lab.example", True),
        ("DNS:gw1.lab.example", "DNS:lab.example", True),
        ("DNS:GW1.Lab.Example.", "DNS:lab.example", True),
        ("DNS:evillab.example", "DNS:lab.example", False),
        ("DNS:lab.example", "DNS:.lab.example", False),
        ("DNS:a.lab.example", "DNS:.lab.example", True),
        ("IP:198.18.1.11", "IP:198.18.0.0/15", True),
        ("IP:198.20.0.1", "IP:198.18.0.0/15", False),
        ("IP:198.19.255.255", "IP:198.18.0.0/255.254.0.0", True),
        ("IP:2001:db8::1", "IP:198.18.0.0/15", False),
        ("email:alice@lab.example", "email:lab.example", True),
        ("email:alice@x.lab.example", "email:lab.example", False),
        ("email:alice@x.lab.example", "email:.lab.example", True),
        ("email:alice@lab.example", "email:bob@lab.example", False),
        ("URI:https://idp.lab.example/saml", "URI:lab.example", True),
        ("URI:https://idp.other.example/", "URI:lab.example", False),
    ],
)
def test_permitted_subtrees(name, constraint, allowed):
    assert outside([name], [constraint]) == ([] if allowed else [name])


def test_a_type_without_permitted_constraints_is_open():
    assert outside(["IP:203.0.113.7", "DNS:gw1.lab.example"], ["DNS:lab.example"]) == []


def test_excluded_wins_over_permitted():
    names = ["DNS:gw1.lab.example", "DNS:admin.lab.example"]
    assert outside(names, ["DNS:lab.example"], ["DNS:admin.lab.example"]) == ["DNS:admin.lab.example"]


def test_rejected_names_keep_input_order():
    names = ["IP:192.0.2.1", "DNS:ok.lab.example", "DNS:x.invalid"]
    assert outside(names, ["DNS:lab.example", "IP:198.18.0.0/15"]) == ["IP:192.0.2.1", "DNS:x.invalid"]


@pytest.mark.parametrize("bad", ["gw1.lab.example", "DNS:", "X400:foo", "IP:not-an-ip"])
def test_malformed_names_are_an_error_not_a_traceback(bad):
    with pytest.raises(AnsibleFilterError):
        outside([bad], ["IP:198.18.0.0/15", "DNS:lab.example"])
