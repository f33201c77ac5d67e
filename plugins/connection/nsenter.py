# Copyright: dmzkit maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: nsenter
short_description: Run tasks in a local container's namespaces with nsenter
version_added: 0.1.0
description:
  - Runs commands inside a container on the controller by entering its
    namespaces (mount, UTS, IPC, network, PID, cgroup) with C(nsenter), after
    looking up the container's init PID once with C(podman inspect).
  - Unlike C(containers.podman.podman), which starts a C(podman exec) (about
    0.2 s here) for every step of every task, a task costs one C(nsenter)
    call, and pipelining is supported. The lab uses it so Molecule scenarios
    with many hosts stay within CI's time.
  - Commands run as the controller's root with its capabilities, like root on
    a real host, not with the container's reduced capability set.
  - Files are copied through the command's standard input and output, so paths
    resolve inside the container, symbolic links included.
requirements:
  - podman and nsenter (util-linux) on the controller, run as root.
options:
  remote_addr:
    description: Name of the container.
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
  podman_executable:
    description: The podman command used to look up the container.
    type: str
    default: podman
    vars:
      - name: ansible_nsenter_podman_executable
extends_documentation_fragment:
  - connection_pipelining
notes:
  - The remote user is ignored; commands run as root.
"""

import os
import shlex
import shutil
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

display = Display()

NAMESPACES = ("--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup")
# What a login shell on the container would have; nothing of the controller's
# environment (virtualenv PATH, ANSIBLE_*, MOLECULE_*) leaks in.
ENVIRONMENT = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}


class Connection(ConnectionBase):
    """Commands and files in a local container, through nsenter."""

    transport = "dmzkit.remote_access.nsenter"
    has_pipelining = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pid: str | None = None
        self._nsenter = shutil.which("nsenter")

    def _connect(self) -> Connection:
        if self._connected:
            return self
        if self._nsenter is None:
            raise AnsibleConnectionFailure("nsenter (util-linux) is not installed on the controller")
        name = self.get_option("remote_addr")
        podman = self.get_option("podman_executable")
        try:
            result = subprocess.run(
                [podman, "inspect", "--type", "container", "--format", "{{.State.Pid}}", name],
                capture_output=True, check=False,
            )
        except OSError as exc:
            raise AnsibleConnectionFailure(f"cannot run {podman}: {exc}") from exc
        pid = to_text(result.stdout).strip()
        if result.returncode != 0 or not pid.isdigit() or pid == "0":
            raise AnsibleConnectionFailure(
                f"container {name} is not running: {to_text(result.stderr).strip() or 'no PID'}"
            )
        self._pid = pid
        display.vvv(f"NSENTER: {name} is PID {pid}", host=name)
        self._connected = True
        return self

    def _argv(self, shell_command: str) -> list[str]:
        if self._nsenter is None or self._pid is None:
            raise AnsibleConnectionFailure("the nsenter connection was used before it connected")
        return [self._nsenter, "--target", self._pid, *NAMESPACES, "--", "/bin/sh", "-c", shell_command]

    def exec_command(self, cmd: str, in_data: bytes | None = None, sudoable: bool = True) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        self._connect()
        display.vvv(f"EXEC {cmd}", host=self.get_option("remote_addr"))
        proc = subprocess.run(self._argv(cmd), input=in_data, capture_output=True, check=False, env=ENVIRONMENT)
        return proc.returncode, proc.stdout, proc.stderr

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        self._connect()
        display.vvv(f"PUT {in_path} TO {out_path}", host=self.get_option("remote_addr"))
        if not os.path.exists(to_bytes(in_path, errors="surrogate_or_strict")):
            raise AnsibleFileNotFound(f"file or module does not exist: {in_path}")
        with open(to_bytes(in_path, errors="surrogate_or_strict"), "rb") as source:
            proc = subprocess.run(
                self._argv(f"cat > {shlex.quote(out_path)}"), stdin=source, capture_output=True, check=False,
                env=ENVIRONMENT,
            )
        if proc.returncode != 0:
            raise AnsibleError(f"failed to put {in_path} to {out_path}: {to_text(proc.stderr).strip()}")

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        self._connect()
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self.get_option("remote_addr"))
        # Made owner-only: what a play fetches is often a secret (a user's
        # PKCS#12), and the caller widens the mode when it wants to.
        fd = os.open(to_bytes(out_path, errors="surrogate_or_strict"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        # cat writes straight into the file: no copy passes through Python.
        with os.fdopen(fd, "wb") as target:
            proc = subprocess.run(self._argv(f"cat {shlex.quote(in_path)}"), stdout=target,
                                  stderr=subprocess.PIPE, check=False, env=ENVIRONMENT)
        if proc.returncode != 0:
            raise AnsibleError(f"failed to fetch {in_path}: {to_text(proc.stderr).strip()}")

    def reset(self) -> None:
        self.close()

    def close(self) -> None:
        self._pid = None
        self._connected = False
