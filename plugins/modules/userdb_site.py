#!/usr/bin/python
# Copyright: dmzkit maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: userdb_site
short_description: A site of device auto-login, its networks and business servers
version_added: 0.1.0
description:
  - Creates, updates or removes a site in the user database of the C(userdb)
    role. The registration service (role C(registration)) sends a device to
    a business server of the site whose network holds the address it sees
    the device connect from (the longest such network), never one the device
    claims.
  - The site's business servers are set exactly; a server taken out is
    taken out of every device's allowed servers too.
  - Each change writes its audit record (C(site.create), C(site.update),
    C(site.delete)).
author: dmzkit maintainers (@dmzkit)
options:
  name:
    description: The site's name, lower-case letters, digits, C(_), C(-).
    type: str
    required: true
  state:
    description: Whether the site exists.
    type: str
    choices: [present, absent]
    default: present
  networks:
    description:
      - The networks the registration service sees this site's devices come from, e.g. C(198.18.3.0/24).
      - A device's address in none of any site's networks gets no server.
    type: list
    elements: str
    default: []
  servers:
    description:
      - The site's business servers, exactly. A server may be at one site only.
    type: list
    elements: dict
    default: []
    suboptions:
      host:
        description: Its name or address, as devices will reach it.
        type: str
        required: true
      port:
        description: Its port.
        type: int
        required: true
extends_documentation_fragment:
  - dmzkit.remote_access.attributes
  - dmzkit.remote_access.userdb
"""

EXAMPLES = r"""
- name: The branch office, seen through its NAT router's public address
  dmzkit.remote_access.userdb_site:
    name: branch
    networks: [203.0.113.7/32]
    servers:
      - {host: vpn-branch.example.org, port: 443}
"""

RETURN = r"""
site:
  description: The site as stored.
  returned: when state is present
  type: dict
  sample: {"name": "branch", "networks": ["203.0.113.7/32"], "servers": [{"host": "vpn-branch.example.org", "port": 443}]}
"""

import ipaddress
import re
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dmzkit.remote_access.plugins.module_utils._userdb import (
    CONNECTION_ARGS, SERVER_ARGS, SERVERS, audit, in_transaction, server_arrays, sorted_servers)

SITE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# What the business_servers table accepts (migration 0005).
HOST = re.compile(r"^[A-Za-z0-9.:-]{1,253}$")


def read_site(cur: Any, name: str) -> tuple[int | None, dict[str, Any] | None]:
    cur.execute("SELECT id, networks::text[] FROM dmzkit.sites WHERE name = %s", (name,))
    row = cur.fetchone()
    if row is None:
        return None, None
    site_id, networks = row
    cur.execute("SELECT host, port FROM dmzkit.business_servers WHERE site_id = %s ORDER BY host, port", (site_id,))
    servers = [{"host": host, "port": port} for host, port in cur.fetchall()]
    return site_id, {"name": name, "networks": sorted(networks), "servers": servers}


def apply(module: AnsibleModule, cur: Any, networks: list[str]) -> tuple[bool, Any, Any]:
    p = module.params
    name = p["name"]
    site_id, before = read_site(cur, name)
    if p["state"] == "absent":
        if before is None:
            return False, None, None
        cur.execute("DELETE FROM dmzkit.sites WHERE id = %s", (site_id,))
        audit(cur, "site.delete", name, {})
        return True, before, None

    servers = sorted_servers(p["servers"])
    after = {"name": name, "networks": networks, "servers": servers}
    if after == before:
        return False, before, after
    if before is None:
        cur.execute("INSERT INTO dmzkit.sites (name, networks) VALUES (%s, %s::cidr[]) RETURNING id", (name, networks))
        site_id = cur.fetchone()[0]
    else:
        cur.execute("UPDATE dmzkit.sites SET networks = %s::cidr[] WHERE id = %s", (networks, site_id))
    wanted = [(server["host"], server["port"]) for server in servers]
    cur.execute("SELECT s.name, b.host, b.port FROM dmzkit.business_servers b JOIN dmzkit.sites s ON s.id = b.site_id"
                " WHERE b.site_id <> %s", (site_id,))
    elsewhere = [f"{host}:{port} (site {site})" for site, host, port in cur.fetchall() if (host, port) in wanted]
    if elsewhere:
        module.fail_json(msg=f"site {name} was not changed: these servers are at another site, take them out"
                             f" there first: {', '.join(elsewhere)}")
    cur.execute("DELETE FROM dmzkit.business_servers WHERE site_id = %s AND (host, port) NOT IN " + SERVERS,
                (site_id, *server_arrays(servers)))
    cur.executemany("INSERT INTO dmzkit.business_servers (site_id, host, port) VALUES (%s, %s, %s)"
                    " ON CONFLICT (host, port) DO NOTHING", [(site_id, host, port) for host, port in wanted])
    audit(cur, "site.update" if before else "site.create", name, {"networks": networks, "servers": servers})
    return True, before, after


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            networks=dict(type="list", elements="str", default=[]),
            servers=SERVER_ARGS,
            **CONNECTION_ARGS,
        ),
        supports_check_mode=True,
    )
    p = module.params
    if not SITE.match(p["name"]):
        module.fail_json(msg=f"a site's name is lower-case letters, digits, '_' or '-' (63 at most): {p['name']!r}")
    try:
        networks = sorted({str(ipaddress.ip_network(n, strict=True)) for n in p["networks"]})
    except ValueError as exc:
        module.fail_json(msg=f"site {p['name']}: {exc} (a network, e.g. 198.18.3.0/24, with no host bits set)")
    bad = [f"{s['host']}:{s['port']}" for s in p["servers"] if not HOST.match(s["host"]) or not 1 <= s["port"] <= 65535]
    if bad:
        module.fail_json(msg=f"site {p['name']}: not a host name or address and a port 1-65535: {bad}")

    changed, before, after = in_transaction(module, f"site {p['name']}", lambda cur: apply(module, cur, networks))
    result: dict[str, Any] = {"changed": changed}
    if after is not None:
        result["site"] = after
    if module._diff:
        result["diff"] = {"before": before or {}, "after": after or {}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
