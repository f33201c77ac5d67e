#!/usr/bin/python
# Copyright: dmzkit maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: userdb_device
short_description: A device of device auto-login, its business account and the servers it may use
version_added: 0.1.0
description:
  - Records, in the user database of the C(userdb) role, a device that
    registers with the registration service (role C(registration)); whose it
    is, the public key of its certificate (the service knows a device by it,
    and checks the certificate's common name is the serial), the account it
    logs in to business servers with, and those servers.
  - The account is the device's own, made by this module (each registration
    gives it a new password; it has none until the first). Any other
    existing user is refused, since it may be a person's.
  - C(revoked) revokes the device for good, in one transaction with the
    removal of its account's password and of any pending grant (the
    database's own trigger). Enrol a replacement under another serial.
  - C(absent) removes the device and its account (the account's password
    only, should the account have become a person's since).
  - A new certificate key (a re-keyed device) replaces the old one, removes
    the account's password and starts the rotation again, so the old key
    and what it was given log in no more.
  - Each change writes its audit record (C(device.enrol), C(device.update),
    C(device.revoke), C(device.delete)).
author: dmzkit maintainers (@dmzkit)
requirements:
  - cryptography (Debian C(python3-cryptography))
options:
  serial:
    description: The device's serial, the common name of its certificate.
    type: str
    required: true
  state:
    description: Whether the device is enrolled, revoked, or not recorded.
    type: str
    choices: [present, revoked, absent]
    default: present
  owner:
    description: The user whose device it is (an existing user). Required when I(state=present).
    type: str
  certificate:
    description:
      - The device's certificate (PEM), issued by the CA the registration service trusts.
      - Only its public key is kept; a new key (a re-keyed device) replaces the old one (see above).
      - Required when I(state=present).
    type: str
  account:
    description: The device's business account; C(device-) and the serial in lower case when omitted.
    type: str
  groups:
    description: The account's groups, exactly (AAA decides the services by them); missing groups are created.
    type: list
    elements: str
    default: []
  servers:
    description:
      - The business servers the device may be sent to, exactly; each must be a site's (module C(userdb_site)).
    type: list
    elements: dict
    default: []
    suboptions:
      host:
        description: The server's name or address.
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
- name: Read the device's certificate
  ansible.builtin.slurp:
    src: /etc/dmzkit-device/SN-0042.crt
  delegate_to: kiosk42
  register: kiosk42_certificate

- name: Enrol the kiosk, Alice's, which may log in to the branch's VPN
  dmzkit.remote_access.userdb_device:
    serial: SN-0042
    owner: alice
    certificate: "{{ kiosk42_certificate.content | b64decode }}"
    groups: [staff]
    servers:
      - {host: vpn-branch.example.org, port: 443}
  delegate_to: db1

- name: The kiosk was stolen
  dmzkit.remote_access.userdb_device:
    serial: SN-0042
    state: revoked
  delegate_to: db1
"""

RETURN = r"""
device:
  description: The device as stored.
  returned: when state is not absent
  type: dict
  sample: {"serial": "SN-0042", "owner": "alice", "spki_sha256": "9f86d0...", "account": "device-sn-0042",
           "groups": ["staff"], "servers": [{"host": "vpn-branch.example.org", "port": 443}], "revoked": false}
"""

import hashlib
import re
import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.dmzkit.remote_access.plugins.module_utils._userdb import (
    CONNECTION_ARGS, SERVER_ARGS, NAME, SERVERS, audit, in_transaction, server_arrays, set_groups, sorted_servers)

CRYPTOGRAPHY_ERROR = None
try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
except ImportError:
    x509 = None
    CRYPTOGRAPHY_ERROR = traceback.format_exc()

# What the registration protocol accepts as a serial.
SERIAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

DEVICE = (
    "SELECT d.id, d.spki_sha256, d.revoked_at IS NOT NULL, a.username, l.account_id,"
    " coalesce(array_agg(b.host || ' ' || b.port ORDER BY b.host, b.port) FILTER (WHERE b.id IS NOT NULL), '{}')"
    " FROM dmzkit.devices d JOIN dmzkit.users o ON o.id = d.user_id"
    " LEFT JOIN dmzkit.device_logins l ON l.device_id = d.id LEFT JOIN dmzkit.users a ON a.id = l.account_id"
    " LEFT JOIN dmzkit.device_servers s ON s.device_id = d.id LEFT JOIN dmzkit.business_servers b ON b.id = s.server_id"
    " WHERE d.serial = %s GROUP BY d.id, o.username, a.username, l.account_id"
)


def refuse(module: AnsibleModule, why: str) -> None:
    module.fail_json(msg=f"device {module.params['serial']} was not changed: {why}")


def spki_of(pem: str) -> tuple[str, str]:
    """The certificate's SubjectPublicKeyInfo SHA-256 (hex) and common name."""
    certificate = x509.load_pem_x509_certificate(pem.encode())
    der = certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return hashlib.sha256(der).hexdigest(), str(names[0].value) if names else ""


def user_id(cur: Any, name: str) -> int | None:
    cur.execute("SELECT id FROM dmzkit.users WHERE username = %s", (name,))
    row = cur.fetchone()
    return row[0] if row else None


def groups_of(cur: Any, account_id: int) -> list[str]:
    cur.execute("SELECT g.name FROM dmzkit.memberships m JOIN dmzkit.groups g ON g.id = m.group_id"
                " WHERE m.user_id = %s ORDER BY g.name", (account_id,))
    return [name for name, in cur.fetchall()]


def read_device(module: AnsibleModule, cur: Any, serial: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    cur.execute("SELECT o.username FROM dmzkit.devices d JOIN dmzkit.users o ON o.id = d.user_id WHERE d.serial = %s",
                (serial,))
    owners = [owner for owner, in cur.fetchall()]
    if not owners:
        return None
    if len(owners) > 1:
        refuse(module, f"devices of {', '.join(owners)} have this serial: the registration service cannot tell"
                       " them apart")
    cur.execute(DEVICE, (serial,))
    device_id, spki, revoked, account, account_id, servers = cur.fetchone()
    ids = {"device": device_id, "account": account_id}
    return ids, {
        "serial": serial, "owner": owners[0], "spki_sha256": spki, "account": account,
        "groups": groups_of(cur, account_id) if account_id else [],
        "servers": [{"host": s.rsplit(" ", 1)[0], "port": int(s.rsplit(" ", 1)[1])} for s in servers],
        "revoked": revoked,
    }


def drop_device_password(cur: Any, account_id: int) -> None:
    """The account's device password (a $sha256$ hash), if it has one."""
    cur.execute("DELETE FROM dmzkit.credentials WHERE user_id = %s AND password_hash LIKE '$sha256$%%'", (account_id,))


def account_for(module: AnsibleModule, cur: Any, name: str, device_id: int | None) -> int:
    """The device's account: made here, or already this device's. Any other
    user may be a person (whose sign-in may be a certificate alone), and the
    registration service would set its password."""
    account_id = user_id(cur, name)
    if account_id is None:
        cur.execute("INSERT INTO dmzkit.users (username, display_name) VALUES (%s, %s) RETURNING id",
                    (name, f"device {module.params['serial']}"))
        return cur.fetchone()[0]
    cur.execute("SELECT 1 FROM dmzkit.device_logins WHERE account_id = %s AND device_id = %s", (account_id, device_id))
    if cur.fetchone() is None:
        refuse(module, f"user {name} exists and is not this device's account: a device needs an account of its own,"
                       " made by this module")
    return account_id


def present(module: AnsibleModule, cur: Any, found: Any, spki: str) -> tuple[bool, Any, Any]:
    p = module.params
    before = found[1] if found else None
    if before and before["revoked"]:
        refuse(module, "it is revoked; enrol a replacement under another serial, or remove it (state=absent)")
    owner_id = user_id(cur, p["owner"])
    if owner_id is None:
        refuse(module, f"no user {p['owner']} to own it (module userdb_user)")
    cur.execute("SELECT serial FROM dmzkit.devices WHERE spki_sha256 = %s AND serial IS DISTINCT FROM %s",
                (spki, p["serial"]))
    other = cur.fetchone()
    if other:
        refuse(module, f"its certificate's key is device {other[0]}'s")
    servers = sorted_servers(p["servers"])
    after = {"serial": p["serial"], "owner": p["owner"], "spki_sha256": spki, "account": p["account"],
             "groups": sorted(set(p["groups"])), "servers": servers, "revoked": False}
    if after == before:
        return False, before, after
    if before and before["owner"] != p["owner"]:
        refuse(module, f"it is {before['owner']}'s; remove it (state=absent) to give it to {p['owner']}")
    if before and before["account"] not in (None, p["account"]):
        refuse(module, f"its account is {before['account']}; remove it (state=absent) to give it another")

    account_id = account_for(module, cur, p["account"], found[0]["device"] if found else None)
    if before is None:
        cur.execute("INSERT INTO dmzkit.devices (user_id, name, spki_sha256, serial) VALUES (%s, %s, %s, %s)"
                    " RETURNING id", (owner_id, p["serial"], spki, p["serial"]))
        device_id = cur.fetchone()[0]
    else:
        device_id = found[0]["device"]
        if before["spki_sha256"] != spki:
            # A new key: whoever holds the old one (with the password it
            # was given) logs in no more, and the device, whose cache the
            # old key sealed, starts its rotation again from nothing.
            cur.execute("UPDATE dmzkit.devices SET spki_sha256 = %s WHERE id = %s", (spki, device_id))
            cur.execute("UPDATE dmzkit.device_logins SET committed = 0, issued = 0, pending_epoch = NULL,"
                        " pending_password = NULL, pending_expires = NULL WHERE device_id = %s", (device_id,))
            drop_device_password(cur, found[0]["account"])
    cur.execute("INSERT INTO dmzkit.device_logins (device_id, account_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (device_id, account_id))
    set_groups(cur, account_id, after["groups"])
    cur.execute("SELECT host, port FROM dmzkit.business_servers WHERE (host, port) IN " + SERVERS, server_arrays(servers))
    unknown = {(s["host"], s["port"]) for s in servers} - set(cur.fetchall())
    if unknown:
        refuse(module, f"no site has these servers (module userdb_site): {sorted(f'{h}:{port}' for h, port in unknown)}")
    cur.execute("DELETE FROM dmzkit.device_servers WHERE device_id = %s", (device_id,))
    cur.execute("INSERT INTO dmzkit.device_servers (device_id, server_id) SELECT %s, id FROM dmzkit.business_servers"
                " WHERE (host, port) IN " + SERVERS, (device_id, *server_arrays(servers)))
    changed = {k: v for k, v in after.items() if before is None or before[k] != v}
    audit(cur, "device.update" if before else "device.enrol", p["serial"], changed)
    return True, before, after


def apply(module: AnsibleModule, cur: Any, spki: str | None) -> tuple[bool, Any, Any]:
    p = module.params
    found = read_device(module, cur, p["serial"])
    before = found[1] if found else None
    if p["state"] == "present":
        return present(module, cur, found, spki)
    if before is None:
        if p["state"] == "revoked":
            refuse(module, "it is not enrolled, so there is nothing to revoke")
        return False, None, None
    if p["state"] == "revoked":
        if before["revoked"]:
            return False, before, before
        # The database's triggers (migration 0007) remove the account's password and pending grant.
        cur.execute("UPDATE dmzkit.devices SET revoked_at = now() WHERE id = %s", (found[0]["device"],))
        audit(cur, "device.revoke", p["serial"], {})
        return True, before, dict(before, revoked=True)
    # The device first: its delete waits for a registration under way (which
    # holds its rows), so the password that one commits is seen below.
    cur.execute("DELETE FROM dmzkit.devices WHERE id = %s", (found[0]["device"],))
    if found[0]["account"] is not None:
        # Its account goes too (this module made it), unless it has become
        # a person's since; then only the device's password goes.
        cur.execute("DELETE FROM dmzkit.users u WHERE u.id = %s"
                    " AND NOT EXISTS (SELECT 1 FROM dmzkit.devices d WHERE d.user_id = u.id)"
                    " AND NOT EXISTS (SELECT 1 FROM dmzkit.credentials c WHERE c.user_id = u.id"
                    "                 AND c.password_hash NOT LIKE '$sha256$%%')", (found[0]["account"],))
        drop_device_password(cur, found[0]["account"])
    audit(cur, "device.delete", p["serial"], {})
    return True, before, None


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            serial=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "revoked", "absent"], default="present"),
            owner=dict(type="str"),
            certificate=dict(type="str"),
            account=dict(type="str"),
            groups=dict(type="list", elements="str", default=[]),
            servers=SERVER_ARGS,
            **CONNECTION_ARGS,
        ),
        required_if=[("state", "present", ("owner", "certificate"))],
        supports_check_mode=True,
    )
    p = module.params
    if not SERIAL.match(p["serial"]):
        module.fail_json(msg=f"a serial is letters, digits, '.', '_' or '-' (64 at most): {p['serial']!r}")
    if p["account"] is None:
        p["account"] = f"device-{p['serial'].lower()}"[:64]
    bad = [n for n in [p["account"], p["owner"] or "x"] + p["groups"] if not NAME.match(n)]
    if bad:
        module.fail_json(msg=f"names must be lower-case letters, digits, '.', '_' or '-' (64 at most): {bad}")
    spki = None
    if p["state"] == "present":
        if x509 is None:
            module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_ERROR)
        try:
            spki, common_name = spki_of(p["certificate"])
        except ValueError as exc:
            module.fail_json(msg=f"device {p['serial']}: the certificate is not a PEM certificate: {exc}")
        if common_name != p["serial"]:
            module.fail_json(msg=f"device {p['serial']}: its certificate is {common_name!r}'s; the registration"
                                 " service checks the common name is the serial")

    changed, before, after = in_transaction(module, f"device {p['serial']}", lambda cur: apply(module, cur, spki))
    result: dict[str, Any] = {"changed": changed}
    if after is not None:
        result["device"] = after
    if module._diff:
        result["diff"] = {"before": before or {}, "after": after or {}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
