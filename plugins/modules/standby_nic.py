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
  - Makes ARP answers come only from the interface that holds an address
    (C(arp_ignore) >= 1, C(arp_announce) >= 2, effective values being the
    larger of C(all) and the interface's own), so the host's other NIC never
    answers for the VIP and the standby NIC never answers for the host's own
    address.
  - Adds the policy rule C(from VIP lookup table) that sends replies sourced
    from the VIP out of the standby NIC, before it removes any other rule of
    that table, so there is always one. The table's routes belong to the VIP
    (the kernel removes them with the NIC's last address), so the watchdog
    puts them back at each takeover.
  - The work is done by the failover watchdog's own command
    (C(dmzkit-failover-watchdog standby-nic)), which also validates the
    settings. It reads them from O(path), which this module writes once the
    NIC took them; C(dmzkit-standby-nic.service) runs the same command on
    that file at every boot, so the link, the sysctls and the rule survive a
    reboot.
  - Never adds or removes the VIP itself, which is the failover watchdog's job,
    and so never disturbs a takeover in progress.
author: dmzkit maintainers (@dmzkit)
options:
  interface:
    description: The standby NIC, on the same segment as the primary.
    type: str
    required: true
  vip:
    description: The primary's service address with its prefix, e.g. C(198.18.1.10/24).
    type: str
    required: true
  table:
    description: Routing table of the VIP's policy rule, 1 to 252.
    type: int
    default: 100
  priority:
    description: Priority of the policy rule, 1 to 32765.
    type: int
    default: 100
  path:
    description: The standby NIC's settings, which C(dmzkit-standby-nic.service) applies at boot.
    type: path
    default: /etc/dmzkit-failover-watchdog/standby-nic.json
  executable:
    description: The failover watchdog's command line (role C(failover_watchdog)).
    type: path
    default: /opt/dmzkit/venv/bin/dmzkit-failover-watchdog
  state:
    description: C(absent) removes the rules of O(table) and O(path); the link and the sysctls stay as they are.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - dmzkit.remote_access.attributes
notes:
  - Needs C(CAP_NET_ADMIN). Where C(/proc/sys) is read-only (containers), the
    ARP sysctls must be set when the host is created; the module then only
    checks them and says which one is missing.
seealso:
  - module: dmzkit.remote_access.failover_watchdog
"""

EXAMPLES = r"""
- name: Standby NIC of the VNC backup host
  dmzkit.remote_access.standby_nic:
    interface: standby0
    vip: 198.18.1.10/24

- name: Take the policy rule away (the link stays up)
  dmzkit.remote_access.standby_nic:
    interface: standby0
    vip: 198.18.1.10/24
    state: absent
"""

RETURN = r"""
settings:
  description: The standby NIC's settings, as written to O(path).
  returned: state is present
  type: dict
  sample: {interface: standby0, vip: 198.18.1.10/24, routing_table: 100, rule_priority: 100}
mac:
  description: The standby NIC's MAC address.
  returned: always
  type: str
  sample: 02:42:c6:12:01:99
"""

import json

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dmzkit.remote_access.plugins.module_utils._io import (
    Candidate, file_attributes, read_bytes, remove_file)
from ansible_collections.dmzkit.remote_access.plugins.module_utils._service import run_service


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            interface=dict(type="str", required=True),
            vip=dict(type="str", required=True),
            table=dict(type="int", default=100),
            priority=dict(type="int", default=100),
            path=dict(type="path", default="/etc/dmzkit-failover-watchdog/standby-nic.json"),
            executable=dict(type="path", default="/opt/dmzkit/venv/bin/dmzkit-failover-watchdog"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    present = p["state"] == "present"
    settings = {"interface": p["interface"], "vip": p["vip"], "routing_table": p["table"],
                "rule_priority": p["priority"]}
    text = json.dumps(settings, indent=2, sort_keys=True) + "\n"
    path = p["path"]
    current = read_bytes(path)
    command = [p["executable"], "standby-nic", "%s"]
    command += ["--check"] if module.check_mode else []
    command += [] if present else ["--absent"]
    with Candidate(module, path, text.encode()) as candidate:
        # The NIC first, from the candidate: the file the boot unit applies
        # is written only once the service validated it and the NIC took it.
        nic = json.loads(run_service(module, command, candidate.name, path, "failover_watchdog"))
        file_changed = present and current != text.encode()
        if file_changed and not module.check_mode:
            candidate.install(file_attributes(module, path, "0644"))
    if not present:
        file_changed = remove_file(module, path)

    result = {"changed": nic["changed"] or file_changed, "mac": nic["mac"]}
    if present:
        result["settings"] = settings
    if module._diff:
        result["diff"] = {"before": {**nic["before"], "file": (current or b"").decode(errors="replace")},
                          "after": {**nic["after"], "file": text if present else ""}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
