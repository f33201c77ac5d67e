"""The standby NIC: link up with no address of its own, ARP answered only by
the interface that holds an address, and the policy rule that sends replies
from the VIP out of it.

`dmzkit-failover-watchdog standby-nic FILE` brings the NIC to what FILE says
and prints what it found and left as JSON: at boot (dmzkit-standby-nic.service),
and for the `standby_nic` module, which writes FILE. It never adds or removes
the VIP, which is the watchdog's job, so it cannot disturb a takeover.
"""
from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..config import PARSE, ConfigError, FileSettings
from .settings import check_routing_table, vip_interface

# Least values that keep ARP on the interface holding the address (failover.md §5):
# the effective value is the larger of `all` and the interface's own.
ARP_SYSCTLS = {"arp_ignore": 1, "arp_announce": 2}
PRIORITIES = range(1, 32766)


class StandbyError(Exception):
    """The host is not as a standby NIC needs it, or cannot be made so."""


@dataclass(frozen=True)
class StandbyNic(FileSettings):
    interface: str
    vip: ipaddress.IPv4Interface = field(metadata={PARSE: vip_interface})
    routing_table: int = 100
    rule_priority: int = 100

    def check(self) -> None:
        check_routing_table(self.routing_table, "routing_table")
        if self.rule_priority not in PRIORITIES:
            raise ConfigError(f"rule_priority must be 1..32765, got {self.rule_priority}")

    @property
    def rule(self) -> str:
        return f"from {self.vip.ip}/32 lookup {self.routing_table} priority {self.rule_priority}"


@dataclass(frozen=True)
class NicState:
    link_up: bool
    rules: tuple[str, ...]
    arp_ignore: int
    arp_announce: int


def ip(*args: str) -> str:
    run = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise StandbyError(f"ip {' '.join(args)} failed: {run.stderr.strip()}")
    return run.stdout


def sysctl_path(scope: str, name: str) -> str:
    return f"/proc/sys/net/ipv4/conf/{scope}/{name}"


def effective_sysctl(interface: str, name: str) -> int:
    values = []
    for scope in ("all", interface):
        with open(sysctl_path(scope, name), encoding="ascii") as f:
            values.append(int(f.read()))
    return max(values)


def set_sysctl(interface: str, name: str, value: int) -> None:
    try:
        with open(sysctl_path(interface, name), "w", encoding="ascii") as f:
            f.write(str(value))
    except OSError as e:
        raise StandbyError(f"cannot set net.ipv4.conf.{interface}.{name}={value} ({e.strerror}); where /proc/sys "
                           f"is read-only, set net.ipv4.conf.all.{name}={value} when the host is created") from None


def table_rules(table: int) -> tuple[str, ...]:
    """The IPv4 policy rules that look up `table`, as `ip rule add` takes them."""
    rules = json.loads(ip("-j", "-4", "rule", "show", "table", str(table)) or "[]")
    # A host source comes without srclen: /32 is implied.
    return tuple(sorted(
        f"from {r['src']}/{r.get('srclen', 32)} lookup {table} priority {r['priority']}"
        if r.get("src", "all") != "all" else f"from all lookup {table} priority {r['priority']}"
        for r in rules))


def link(interface: str) -> dict[str, Any]:
    try:
        return json.loads(ip("-j", "link", "show", "dev", interface))[0]
    except StandbyError:
        raise StandbyError(f"no interface {interface} on this host: the standby NIC must exist") from None


def foreign_addresses(nic: StandbyNic) -> list[str]:
    """Addresses on the NIC other than the VIP (which the watchdog may hold)."""
    found = json.loads(ip("-j", "-4", "address", "show", "dev", nic.interface) or "[]")
    return [a["local"] for i in found for a in i.get("addr_info", []) if a["local"] != str(nic.vip.ip)]


def observed(nic: StandbyNic, details: dict[str, Any]) -> NicState:
    return NicState(link_up="UP" in details.get("flags", []), rules=table_rules(nic.routing_table),
                    **{name: effective_sysctl(nic.interface, name) for name in ARP_SYSCTLS})


def wanted(nic: StandbyNic, before: NicState, present: bool) -> NicState:
    """Present: link up, the one rule, the ARP sysctls at least ARP_SYSCTLS.
    Absent: no rule in the table; the link and the sysctls stay as they are."""
    if not present:
        return replace(before, rules=())
    return NicState(link_up=True, rules=(nic.rule,),
                    **{name: max(getattr(before, name), least) for name, least in ARP_SYSCTLS.items()})


def apply(nic: StandbyNic, before: NicState, after: NicState) -> None:
    if after.link_up and not before.link_up:
        ip("link", "set", "dev", nic.interface, "up")
    for name in ARP_SYSCTLS:
        if getattr(after, name) != getattr(before, name):
            set_sysctl(nic.interface, name, getattr(after, name))
    # The new rule first, then the stale ones: a failure in between leaves
    # one rule too many for a moment, never none.
    for rule in after.rules:
        if rule not in before.rules:
            ip("-4", "rule", "add", *rule.split())
    for rule in before.rules:
        if rule not in after.rules:
            ip("-4", "rule", "del", *rule.split())


def converge(nic: StandbyNic, present: bool = True, check: bool = False) -> dict[str, Any]:
    """Bring the NIC to `nic` (or remove its rule); only report with `check`."""
    details = link(nic.interface)
    if present:
        foreign = foreign_addresses(nic)
        if foreign:
            raise StandbyError(f"{nic.interface} has address {', '.join(foreign)}: a standby NIC holds no address "
                               "of its own (only the VIP, while the watchdog holds it)")
    before = observed(nic, details)
    after = wanted(nic, before, present)
    if not check and after != before:
        apply(nic, before, after)
    return {"changed": after != before, "before": asdict(before), "after": asdict(after),
            "mac": details.get("address", "")}
