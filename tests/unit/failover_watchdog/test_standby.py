"""The standby NIC's settings: the same checks as the watchdog's for what both
have (the kernel side is tested through the standby_nic module, in a namespace)."""
from __future__ import annotations

from typing import Any

import pytest

from dmzkit_remote_access.config import ConfigError
from dmzkit_remote_access.failover_watchdog.standby import StandbyNic

BASE: dict[str, Any] = {"interface": "standby0", "vip": "198.18.1.10/24"}


def test_defaults_and_the_rule() -> None:
    nic = StandbyNic.from_dict(BASE)
    assert nic.rule == "from 198.18.1.10/32 lookup 100 priority 100"
    assert StandbyNic.from_dict({**BASE, "routing_table": 7, "rule_priority": 9}).rule.endswith("lookup 7 priority 9")


@pytest.mark.parametrize(("change", "message"), [
    ({"vip": "198.18.1.10"}, "vip needs its prefix length"),
    ({"vip": "2001:db8::1/64"}, "vip: "),
    ({"routing_table": 253}, "routing_table must be 1..252"),
    ({"rule_priority": 32766}, "rule_priority must be 1..32765"),
    ({"rule_priority": "100"}, "rule_priority must be an integer"),
    ({"witness": "198.18.1.254"}, "unknown settings: witness"),
])
def test_bad_settings_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StandbyNic.from_dict({**BASE, **change})


def test_the_interface_is_required() -> None:
    with pytest.raises(ConfigError, match="missing setting 'interface'"):
        StandbyNic.from_dict({"vip": "198.18.1.10/24"})
