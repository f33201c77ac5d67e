#!/usr/bin/python
# Copyright: dmzkit maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: userdb_user
short_description: A user of the audited user database, with groups and an Argon2id password hash
version_added: 0.1.0
description:
  - Creates, updates or removes a user in the database of the C(userdb) role.
  - The password is stored as an Argon2id hash (RFC 9106's second recommended
    setting, 64 MiB, 3 passes, 4 lanes). An existing hash that still verifies
    the given password is kept, so a run with the same password changes
    nothing; one made with other settings is replaced.
  - These settings are the collection's one Argon2 policy. The IdP (role
    C(saml_idp)) has none of its own; it refuses an unknown user after
    verifying against a decoy made with the settings of the newest stored
    hash, so that costs what a real verify costs.
  - Each change writes its audit record (C(user.create), C(user.update),
    C(user.password), C(user.delete)).
author: dmzkit maintainers (@dmzkit)
requirements:
  - argon2-cffi (Debian C(python3-argon2))
options:
  name:
    description: User name, lower-case letters, digits, C(.), C(_), C(-).
    type: str
    required: true
  state:
    description: Whether the user exists.
    type: str
    choices: [present, absent]
    default: present
  display_name:
    description: Name shown to the user and in applications; kept as it is when omitted.
    type: str
  email:
    description: E-mail address; kept as it is when omitted.
    type: str
  enabled:
    description: Whether the user may sign in.
    type: bool
    default: true
  groups:
    description:
      - The groups the user is in, exactly; missing groups are created.
      - Omit it to leave the memberships as they are.
    type: list
    elements: str
  password:
    description: The password; omit it to keep the current one (a new user then has none and cannot sign in with one).
    type: str
  update_password:
    description: C(always) sets the password when the stored hash does not verify it; C(on_create) only for a new user.
    type: str
    choices: [always, on_create]
    default: always
extends_documentation_fragment:
  - dmzkit.remote_access.attributes
  - dmzkit.remote_access.userdb
attributes:
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: full
    details: The password never appears, only whether it changes.
"""

EXAMPLES = r"""
- name: Alice, in staff
  dmzkit.remote_access.userdb_user:
    name: alice
    display_name: Alice Example
    email: alice@example.org
    groups: [staff]
    password: "{{ vault_alice_password }}"
  no_log: true

- name: Bob may no longer sign in
  dmzkit.remote_access.userdb_user:
    name: bob
    enabled: false
"""

RETURN = r"""
user:
  description: The user as stored, without the hash.
  returned: when state is present
  type: dict
  sample: {"name": "alice", "display_name": "Alice Example", "email": "alice@example.org", "enabled": true, "groups": ["staff"]}
"""

import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.dmzkit.remote_access.plugins.module_utils._userdb import (
    CONNECTION_ARGS, NAME, audit, in_transaction, set_groups)

ARGON2_ERROR = None
try:
    from argon2 import PasswordHasher, Type
    from argon2.exceptions import InvalidHash, VerificationError
except ImportError:
    PasswordHasher = None
    ARGON2_ERROR = traceback.format_exc()

# The collection's one Argon2 policy: every password hash in the user
# database is made here. RFC 9106 §4, second recommended option (when 2 GiB
# per hash is too much): Argon2id, 3 passes over 64 MiB, 4 lanes.
ARGON2_POLICY = {"time_cost": 3, "memory_cost": 65536, "parallelism": 4, "hash_len": 32, "salt_len": 16}


def hasher() -> PasswordHasher:
    return PasswordHasher(type=Type.ID, **ARGON2_POLICY)


def password_needs_setting(ph: PasswordHasher, stored: str | None, password: str) -> bool:
    if stored is None:
        return True
    try:
        ph.verify(stored, password)
    except (VerificationError, InvalidHash):
        return True
    return ph.check_needs_rehash(stored)


def read_user(cur: Any, name: str) -> tuple[int | None, str | None, dict[str, Any] | None]:
    cur.execute(
        "SELECT u.id, u.display_name, u.email, u.enabled, c.password_hash,"
        " coalesce(array_agg(g.name ORDER BY g.name) FILTER (WHERE g.name IS NOT NULL), '{}')"
        " FROM dmzkit.users u"
        " LEFT JOIN dmzkit.credentials c ON c.user_id = u.id"
        " LEFT JOIN dmzkit.memberships m ON m.user_id = u.id"
        " LEFT JOIN dmzkit.groups g ON g.id = m.group_id"
        " WHERE u.username = %s GROUP BY u.id, c.password_hash",
        (name,),
    )
    row = cur.fetchone()
    if row is None:
        return None, None, None
    user_id, display_name, email, enabled, password_hash, groups = row
    return user_id, password_hash, {
        "name": name, "display_name": display_name, "email": email, "enabled": enabled, "groups": list(groups),
    }


def apply(module: AnsibleModule, cur: Any) -> tuple[bool, dict[str, Any] | None, dict[str, Any] | None]:
    p = module.params
    name = p["name"]
    user_id, stored_hash, before = read_user(cur, name)

    if p["state"] == "absent":
        if before is None:
            return False, None, None
        cur.execute("DELETE FROM dmzkit.users WHERE id = %s", (user_id,))
        audit(cur, "user.delete", name, {})
        return True, before, None

    wanted = dict(before or {"name": name, "display_name": "", "email": None, "enabled": True, "groups": []})
    for field in ("display_name", "email", "enabled", "groups"):
        if p[field] is not None:
            wanted[field] = sorted(set(p[field])) if field == "groups" else p[field]

    ph = hasher()
    new_hash = None
    if p["password"] is not None and (before is None or p["update_password"] == "always"):
        if password_needs_setting(ph, stored_hash, p["password"]):
            new_hash = ph.hash(p["password"])

    if before is None:
        cur.execute(
            "INSERT INTO dmzkit.users (username, display_name, email, enabled) VALUES (%s, %s, %s, %s) RETURNING id",
            (name, wanted["display_name"], wanted["email"], wanted["enabled"]),
        )
        user_id = cur.fetchone()[0]
        audit(cur, "user.create", name, {k: wanted[k] for k in ("display_name", "email", "enabled", "groups")})
    else:
        changed_fields = [f for f in ("display_name", "email", "enabled", "groups") if wanted[f] != before[f]]
        if changed_fields:
            cur.execute(
                "UPDATE dmzkit.users SET display_name = %s, email = %s, enabled = %s, updated_at = now() WHERE id = %s",
                (wanted["display_name"], wanted["email"], wanted["enabled"], user_id),
            )
            audit(cur, "user.update", name, {f: wanted[f] for f in changed_fields})
    if wanted["groups"] != (before or {}).get("groups", []):
        set_groups(cur, user_id, wanted["groups"])
    if new_hash is not None:
        cur.execute(
            "INSERT INTO dmzkit.credentials (user_id, password_hash) VALUES (%s, %s)"
            " ON CONFLICT (user_id) DO UPDATE SET password_hash = EXCLUDED.password_hash, changed_at = now(),"
            " failed_attempts = 0, locked_until = NULL",
            (user_id, new_hash),
        )
        audit(cur, "user.password", name, {})

    after = dict(wanted, password_changed=new_hash is not None)
    changed = before is None or new_hash is not None or any(wanted[f] != before[f] for f in wanted)
    return changed, before, after


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            display_name=dict(type="str"),
            email=dict(type="str"),
            enabled=dict(type="bool", default=True),
            groups=dict(type="list", elements="str"),
            password=dict(type="str", no_log=True),
            update_password=dict(type="str", choices=["always", "on_create"], default="always"),
            **CONNECTION_ARGS,
        ),
        supports_check_mode=True,
    )
    if PasswordHasher is None:
        module.fail_json(msg=missing_required_lib("argon2-cffi"), exception=ARGON2_ERROR)

    p = module.params
    bad = [n for n in [p["name"]] + (p["groups"] or []) if not NAME.match(n)]
    if bad:
        module.fail_json(msg=f"names must be lower-case letters, digits, '.', '_' or '-' (64 at most): {bad}")
    if p["password"] is not None and len(p["password"]) < 12:
        module.fail_json(msg="the password is shorter than 12 characters")

    changed, before, after = in_transaction(module, f"user {p['name']}", lambda cur: apply(module, cur))

    result = {"changed": changed}
    if after is not None:
        result["user"] = {k: v for k, v in after.items() if k != "password_changed"}
    if module._diff:
        result["diff"] = {"before": before or {}, "after": after or {}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
