# Copyright: dmzkit maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the modules that edit the user database of role C(userdb) share: where
it is (module_utils/_userdb.py connects), and how a change is applied."""
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
description:
  - Runs on the database host, as C(postgres) over the local socket.
  - Each change is one transaction with its audit record, so nothing is half
    applied. In check mode the transaction runs and is rolled back.
requirements:
  - psycopg2 (Debian C(python3-psycopg2))
options:
  database:
    description: The user database.
    type: str
    default: dmzkit
  login_unix_socket:
    description: Directory of PostgreSQL's socket.
    type: path
    default: /var/run/postgresql
  port:
    description: PostgreSQL's port (names the socket).
    type: int
    default: 5432
"""
