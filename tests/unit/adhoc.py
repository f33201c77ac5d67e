"""Run one of the collection's modules the way a user does: `ansible localhost -m`,
the result read from the JSON callback."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]


def run_module(name: str, args: dict[str, object], *flags: str, netns: str | None = None) -> dict:
    """The module's result for localhost; inside network namespace `netns` when given."""
    where = ["ip", "netns", "exec", netns] if netns else []
    run = subprocess.run(
        [*where, "ansible", "localhost", "-m", f"dmzkit.remote_access.{name}", "-a", json.dumps(args), *flags],
        capture_output=True, text=True, check=False,
        env={"ANSIBLE_COLLECTIONS_PATH": str(TOP / ".venv/collections"), **os.environ,
             "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
             "ANSIBLE_LOCALHOST_WARNING": "0"})
    return json.loads(run.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
