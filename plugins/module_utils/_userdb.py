# Copyright: dmzkit maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# Private to the collection (the leading underscore): it may change at any time.
"""What the modules that edit the user database (role C(userdb)) share: the
connection, as C(postgres) over the local socket; one transaction per task,
rolled back in check mode and on any error, so nothing is half applied; and
the audit record each change writes in that transaction."""
from __future__ import annotations

import os
import re
import traceback
import typing as t

from ansible.module_utils.basic import missing_required_lib

PSYCOPG2_ERROR = None
try:
    import psycopg2
    import psycopg2.extras
except ImportError:
    psycopg2 = None
    PSYCOPG2_ERROR = traceback.format_exc()

if t.TYPE_CHECKING:
    from ansible.module_utils.basic import AnsibleModule

# Users', groups' and sites' names.
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

# The options every such module takes, for its argument_spec.
CONNECTION_ARGS = dict(
    database=dict(type="str", default="dmzkit"),
    login_unix_socket=dict(type="path", default="/var/run/postgresql"),
    port=dict(type="int", default=5432),
)

# The option that lists business servers, {host, port} each.
SERVER_ARGS = dict(type="list", elements="dict", default=[], options=dict(
    host=dict(type="str", required=True),
    port=dict(type="int", required=True),
))

# Business servers ({host, port}) in a query: "(host, port) IN " SERVERS,
# with the two arrays server_arrays() makes.
SERVERS = "(SELECT * FROM unnest(%s::text[], %s::int[]))"


def sorted_servers(servers: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
    """The {host, port} options as stored and returned: sorted, nothing else."""
    return sorted(({"host": s["host"], "port": s["port"]} for s in servers), key=lambda s: (s["host"], s["port"]))


def server_arrays(servers: list[dict[str, t.Any]]) -> tuple[list[str], list[int]]:
    return [server["host"] for server in servers], [server["port"] for server in servers]


Apply = t.Callable[[t.Any], t.Tuple[bool, t.Any, t.Any]]


def audit(cur: t.Any, event: str, subject: str, detail: dict[str, t.Any]) -> None:
    cur.execute(
        # The database sets the actor (the role signed in) and the time.
        "INSERT INTO dmzkit.audit_log (subject, event, outcome, detail) VALUES (%s, %s, 'success', %s)",
        (subject, event, psycopg2.extras.Json(detail)),
    )


def set_groups(cur: t.Any, user_id: int, groups: list[str]) -> None:
    for group in groups:
        cur.execute("INSERT INTO dmzkit.groups (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (group,))
    cur.execute("DELETE FROM dmzkit.memberships WHERE user_id = %s"
                " AND group_id NOT IN (SELECT id FROM dmzkit.groups WHERE name = ANY(%s))", (user_id, groups))
    cur.execute("INSERT INTO dmzkit.memberships (user_id, group_id) SELECT %s, id FROM dmzkit.groups"
                " WHERE name = ANY(%s) ON CONFLICT DO NOTHING", (user_id, groups))


def not_made_yet(params: dict[str, t.Any], error: Exception) -> bool:
    """Whether the database, or PostgreSQL itself, is not there at all (as
    opposed to refusing us)."""
    socket = os.path.join(params["login_unix_socket"], f".s.PGSQL.{params['port']}")
    return not os.path.exists(socket) or f'database "{params["database"]}" does not exist' in str(error)


def in_transaction(module: AnsibleModule, what: str, apply: Apply) -> tuple[bool, t.Any, t.Any]:
    """Run apply(cursor) in one transaction, committed unless in check mode;
    fail the module, with nothing changed, on a database error. `what` names
    the object in the messages ("device 0042")."""
    if psycopg2 is None:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=PSYCOPG2_ERROR)
    p = module.params
    try:
        conn = psycopg2.connect(
            dbname=p["database"], user="postgres", host=p["login_unix_socket"], port=p["port"],
            application_name=f"ansible {module._name}",
        )
    except psycopg2.Error as exc:
        if module.check_mode and not_made_yet(p, exc):
            # In check mode on a fresh host, the userdb role's play (in
            # check mode too) has not made the database this run would make.
            message = f"database {p['database']} does not exist yet: {what} would be made with it"
            module.warn(message)
            module.exit_json(changed=True, msg=message)
        module.fail_json(msg=f"cannot connect to database {p['database']}: {str(exc).strip()}")
    try:
        with conn.cursor() as cur:
            outcome = apply(cur)
        if module.check_mode:
            conn.rollback()
        else:
            conn.commit()
    except psycopg2.Error as exc:
        conn.rollback()
        module.fail_json(msg=f"{what} was not changed: {str(exc).strip()}")
    finally:
        conn.close()
    return outcome
