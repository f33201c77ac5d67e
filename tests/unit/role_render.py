"""A Jinja expression templated by ansible-playbook with a role's defaults
and vars (and service_venv's defaults), as the role would template it: the
tests that hold a role and the service it configures to one contract."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

TOP = Path(__file__).resolve().parents[2]
ROLES = TOP / "roles"
UNIT_TEMPLATE = ROLES / "service_venv" / "templates" / "service.service.j2"


def render(tmp_path: Path, role: str, expression: str, **variables: Any) -> Any:
    playbook = tmp_path / "render.yml"
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "gather_facts": False,
        "vars_files": [str(ROLES / role / f) for f in ("defaults/main.yml", "vars/main.yml")]
        + [str(ROLES / "service_venv" / "defaults" / "main.yml")],
        "tasks": [{"ansible.builtin.debug": {"msg": expression}, "vars": variables}],
    }]), encoding="utf-8")
    run = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", str(playbook)],
                         capture_output=True, text=True, check=False, timeout=120,
                         env={"ANSIBLE_COLLECTIONS_PATH": str(TOP / ".venv/collections"), **os.environ,
                              "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
                              "ANSIBLE_LOCALHOST_WARNING": "0"})
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]["msg"]


def render_unit(tmp_path: Path, role: str, unit: object, **variables: Any) -> str:
    """service_venv's unit template for `unit` (service_venv_unit), with `role`'s defaults and vars."""
    return str(render(tmp_path, role, "{{ lookup('ansible.builtin.template', '%s') }}" % UNIT_TEMPLATE,
                      service_venv_unit=unit, **variables))
