# Copyright: dmzkit maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# Private to the collection (the leading underscore): it may change at any time.
"""Asking one of the collection's services about a file before it is used:
the service's own `check-config` (or any command of it) judges the
candidate, so a value the service would refuse is refused by the module,
in the service's words."""
from __future__ import annotations

import os
import typing as t

if t.TYPE_CHECKING:
    from ansible.module_utils.basic import AnsibleModule


def run_service(module: AnsibleModule, argv: list[str], candidate: str, path: str, role: str) -> str:
    """Run `argv` with C(%s) standing for the candidate file (as
    ansible.builtin.template's validate does) and return its output. On
    failure the module fails with the service's message, which names
    `path` (where the file will live), not the temporary candidate;
    `role` is what installs the service, for when it is missing."""
    if not os.access(argv[0], os.X_OK):
        module.fail_json(msg=f"{argv[0]} is missing: install the service first (role {role})")
    rc, out, err = module.run_command([arg.replace("%s", candidate) for arg in argv])
    if rc != 0:
        message = err.strip() or out.strip() or f"{os.path.basename(argv[0])} failed ({rc})"
        module.fail_json(msg=message.replace(candidate, path), rc=rc)
    return out
