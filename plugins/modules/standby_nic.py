#!/usr/bin/python
# Copyright: dmzkit maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: standby_nic
short_description: Prepare the VNC backup host's standby NIC to take over the gateway's address
version_added: 0.1.0
description:
  - Keeps the standby NIC link-up with no address of its own, so that a
    takeover is only an address add and a gratuitous ARP. Bringing a link up
    costs seconds of negotiation on real switches; the address moves, the link
    does not.
  - Checks that ARP answers come only from the interface that holds an address
    (C(arp_ignore) >= 1, C(arp_announce) >= 2, effective values being the
    larger of C(all) and the interface's own), so the host's other NIC never
    answers for the VIP and the standby NIC never answers for the host's own
    address.
  - Adds the policy rule C(from VIP lookup table) that sends replies sourced
    from the VIP out of the standby NIC. The table's routes belong to the VIP
    (the kernel removes them with the NIC's last address), so the watchdog
    puts them back at each takeover.
  - Records what the standby NIC must know (the VIP, the primary's MACs, its
    management address, the witness) in O(record), and the commands that
    restore the link and the rule at boot in an C(ip -batch) file next to it.
  - Never adds or removes the VIP itself, which is the failover watchdog's job,
    and the module must not disturb a takeover in progress.
author: dmzkit maintainers
options:
  interface:
    description: The standby NIC, on the same segment as the primary.
    type: str
    required: true
  vip:
    description: The primary's service address with its prefix, e.g. C(198.18.1.10/24).
    type: str
    required: true
  primary_macs:
    description: MAC addresses the primary may answer with for the VIP.
    type: list
    elements: str
    required: true
  primary_mgmt:
    description: The primary's own (management) address, in the VIP's subnet.
    type: str
    required: true
  witness:
    description: A third address in the VIP's subnet (the router) that tells an isolated backup from a dead primary.
    type: str
    required: true
  table:
    description: Routing table of the VIP's policy rule.
    type: int
    default: 100
  priority:
    description: Priority of the policy rule.
    type: int
    default: 100
  record:
    description: JSON file recording what the standby NIC knows; the C(ip -batch) file is written next to it with suffix C(.ip).
    type: path
    default: /etc/dmzkit-failover-watchdog/standby-nic.json
  state:
    description: C(absent) removes the rule and the record; the link stays up.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - dmzkit.remote_access.attributes
notes:
  - Needs C(CAP_NET_ADMIN). Where C(/proc/sys) is read-only (containers), the
    ARP sysctls must be set when the host is created; the module then only
    checks them and says which one is missing.
"""

EXAMPLES = r"""
- name: Standby NIC of the VNC backup host
  dmzkit.remote_access.standby_nic:
    interface: standby0
    vip: 198.18.1.10/24
    primary_macs: [02:42:c6:12:01:0b]
    primary_mgmt: 198.18.1.11
    witness: 198.18.1.254
"""

RETURN = r"""
record:
  description: What the standby NIC knows, as written to O(record).
  returned: state is present
  type: dict
  sample: {interface: standby0, vip: 198.18.1.10/24, primary_macs: [02:42:c6:12:01:0b],
           primary_mgmt: 198.18.1.11, witness: 198.18.1.254, table: 100}
mac:
  description: The standby NIC's MAC address.
  returned: always
  type: str
  sample: 02:42:c6:12:01:99
"""

import ipaddress
import json
import os
import re

from ansible.module_utils.basic import AnsibleModule

MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# Least values that keep ARP on the interface holding the address (failover.md §5).
ARP_SYSCTLS = {"arp_ignore": 1, "arp_announce": 2}


class StandbyNic:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.p = module.params
        self.iface = self.p["interface"]

    def ip(self, *args: str) -> str:
        rc, out, err = self.module.run_command(["ip", *args])
        if rc != 0:
            self.module.fail_json(msg=f"ip {' '.join(args)} failed: {err.strip()}")
        return out

    def ip_json(self, *args: str) -> list:
        return json.loads(self.ip("-j", *args) or "[]")

    def link(self) -> dict:
        rc, out, _ = self.module.run_command(["ip", "-j", "link", "show", "dev", self.iface])
        if rc != 0:
            self.module.fail_json(msg=f"no interface {self.iface} on this host: the standby NIC must exist")
        return json.loads(out)[0]

    def sysctl(self, name: str, scope: str) -> int:
        with open(f"/proc/sys/net/ipv4/conf/{scope}/{name}", encoding="ascii") as f:
            return int(f.read())

    def effective_sysctls(self) -> dict[str, int]:
        return {name: max(self.sysctl(name, "all"), self.sysctl(name, self.iface)) for name in ARP_SYSCTLS}

    def set_sysctl(self, name: str, value: int) -> None:
        try:
            with open(f"/proc/sys/net/ipv4/conf/{self.iface}/{name}", "w", encoding="ascii") as f:
                f.write(str(value))
        except OSError as e:
            self.module.fail_json(msg=f"cannot set net.ipv4.conf.{self.iface}.{name}={value} ({e.strerror}); where "
                                      f"/proc/sys is read-only, set net.ipv4.conf.all.{name}={value} when the host "
                                      "is created")

    def rules(self) -> list[str]:
        # A host source comes without srclen: /32 is implied.
        return sorted(f"from {r['src']}/{r.get('srclen', 32)} lookup {r['table']} priority {r['priority']}"
                      if r.get("src", "all") != "all" else f"from all lookup {r['table']} priority {r['priority']}"
                      for r in self.ip_json("-4", "rule", "show", "table", str(self.p["table"])))


def validated(module: AnsibleModule) -> dict:
    p = module.params
    try:
        vip = ipaddress.IPv4Interface(p["vip"])
        mgmt = ipaddress.IPv4Address(p["primary_mgmt"])
        witness = ipaddress.IPv4Address(p["witness"])
    except ValueError as e:
        module.fail_json(msg=f"not an IPv4 address: {e}")
    if "/" not in p["vip"]:
        module.fail_json(msg=f"vip needs its prefix length, e.g. {vip.ip}/24")
    for name, address in (("primary_mgmt", mgmt), ("witness", witness)):
        if address not in vip.network:
            module.fail_json(msg=f"{name} {address} is not in the VIP's subnet {vip.network}")
        if address == vip.ip:
            module.fail_json(msg=f"{name} must differ from the VIP: the watchdog cannot probe an address it may hold")
    macs = sorted({m.lower() for m in p["primary_macs"]})
    if not macs or not all(MAC_RE.match(m) for m in macs):
        module.fail_json(msg="primary_macs must list the primary's MAC addresses as aa:bb:cc:dd:ee:ff")
    return {"interface": p["interface"], "vip": str(vip), "primary_macs": macs, "primary_mgmt": str(mgmt),
            "witness": str(witness), "table": p["table"]}


def apply(nic: StandbyNic, before: dict, after: dict) -> None:
    if after["link_up"] and not before["link_up"]:
        nic.ip("link", "set", "dev", nic.iface, "up")
    for rule in before["rules"]:
        if rule not in after["rules"]:
            nic.ip("-4", "rule", "del", *rule.split())
    for rule in after["rules"]:
        if rule not in before["rules"]:
            nic.ip("-4", "rule", "add", *rule.split())


def write_or_remove(path: str, content: str | None) -> None:
    """Atomically, world-readable (nothing secret); None removes the file."""
    if content is None:
        if os.path.exists(path):
            os.unlink(path)
        return
    if read_text(path) == content:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(content)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            interface=dict(type="str", required=True),
            vip=dict(type="str", required=True),
            primary_macs=dict(type="list", elements="str", required=True),
            primary_mgmt=dict(type="str", required=True),
            witness=dict(type="str", required=True),
            table=dict(type="int", default=100),
            priority=dict(type="int", default=100),
            record=dict(type="path", default="/etc/dmzkit-failover-watchdog/standby-nic.json"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if not 1 <= p["table"] < 253 or not 1 <= p["priority"] < 32766:
        module.fail_json(msg="table must be 1..252 (253-255 are the kernel's) and priority 1..32765")
    nic = StandbyNic(module)
    record = validated(module)
    vip = ipaddress.IPv4Interface(record["vip"])
    link = nic.link()
    foreign = [a["local"] for i in nic.ip_json("-4", "addr", "show", "dev", nic.iface)
               for a in i.get("addr_info", []) if a["local"] != str(vip.ip)]
    if foreign and p["state"] == "present":
        module.fail_json(msg=f"{nic.iface} has address {', '.join(foreign)}: a standby NIC holds no address of "
                             "its own (only the VIP, while the watchdog holds it)")

    table, prio = str(p["table"]), str(p["priority"])
    want_rules = [f"from {vip.ip}/32 lookup {table} priority {prio}"] if p["state"] == "present" else []
    batch_path = os.path.splitext(p["record"])[0] + ".ip"
    want_record = json.dumps(record, indent=2, sort_keys=True) + "\n" if p["state"] == "present" else None
    want_batch = None
    if p["state"] == "present":
        want_batch = "".join([
            f"link set dev {nic.iface} up\n",
            f"rule add from {vip.ip}/32 lookup {table} priority {prio}\n",
        ])

    before = {"link_up": "UP" in link.get("flags", []), "rules": nic.rules(),
              "record": read_text(p["record"]), "boot_batch": read_text(batch_path)}
    after = {"link_up": True if p["state"] == "present" else before["link_up"], "rules": want_rules,
             "record": want_record, "boot_batch": want_batch}
    sysctls = nic.effective_sysctls()
    missing = {k: v for k, v in ARP_SYSCTLS.items() if sysctls[k] < v} if p["state"] == "present" else {}
    changed = before != after or bool(missing)

    if not module.check_mode:
        for name, value in missing.items():
            nic.set_sysctl(name, value)
        if before != after:
            apply(nic, before, after)
            for path, content in ((p["record"], want_record), (batch_path, want_batch)):
                write_or_remove(path, content)

    result = {"changed": changed, "mac": link.get("address", "")}
    if p["state"] == "present":
        result["record"] = record
    if module._diff:
        result["diff"] = {"before": {**before, **{f"{k}": sysctls[k] for k in ARP_SYSCTLS}},
                          "after": {**after, **{k: max(sysctls[k], ARP_SYSCTLS[k]) for k in ARP_SYSCTLS}}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
