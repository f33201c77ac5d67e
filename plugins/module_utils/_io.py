# Copyright: dmzkit maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# Private to the collection (the leading underscore): it may change at any time.
"""Files the collection's modules write, the way community.crypto writes keys.

A new version is first a 0600 temporary file beside its destination, so that
nobody can read it before it has its final mode, that the service's own check
can judge it there, and that its rename over the old file is atomic. Ansible
removes it however the module ends. The file's mode, owner and group come
from the module's file options (add_file_common_args) or from the default
the module gives.
"""
from __future__ import annotations

import os
import tempfile
import typing as t

if t.TYPE_CHECKING:
    from ansible.module_utils.basic import AnsibleModule


def read_bytes(path: str) -> bytes | None:
    """The file's content; None when there is no file."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def file_attributes(module: AnsibleModule, path: str, default_mode: int | str) -> dict[str, t.Any]:
    """What set_fs_attributes_if_different needs for `path`: the module's
    file options where it has them, else `default_mode` and no owner change."""
    attributes = module.load_file_common_arguments(module.params, path=path)
    if attributes["mode"] is None:
        attributes["mode"] = default_mode
    return attributes


class Candidate:
    """A new version of a file, written to a 0600 temporary file beside it
    (in the temporary directory while the destination directory does not
    exist: check mode on a fresh host), to be checked, then installed or
    dropped. Use it as a context manager: leaving drops what was not installed."""

    def __init__(self, module: AnsibleModule, path: str, content: bytes) -> None:
        self.module = module
        self.path = path
        directory = os.path.dirname(path)
        fd, self.name = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.",
                                         dir=directory if os.path.isdir(directory) else None)
        module.add_cleanup_file(self.name)
        with os.fdopen(fd, "wb") as f:
            f.write(content)

    def __enter__(self) -> Candidate:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if os.path.exists(self.name):
            os.unlink(self.name)

    def install(self, attributes: dict[str, t.Any]) -> None:
        """Replace the file with the candidate, with `attributes`."""
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        # atomic_move gives the new file the old one's mode, so the old one is
        # narrowed first; a file it creates gets 0666 less the umask, so the
        # umask is 077 meanwhile: the content is never readable by others.
        if os.path.exists(self.path):
            self.module.set_fs_attributes_if_different(attributes, False)
        umask = os.umask(0o077)
        try:
            self.module.atomic_move(self.name, self.path)
        finally:
            os.umask(umask)
        self.module.set_fs_attributes_if_different(attributes, False)


def write_file(module: AnsibleModule, path: str, content: bytes, default_mode: int | str = 0o600) -> bool:
    """Make `path` hold `content` with its attributes; whether anything
    changed (or would, in check mode)."""
    attributes = file_attributes(module, path, default_mode)
    if read_bytes(path) == content:
        return module.set_fs_attributes_if_different(attributes, False)
    if not module.check_mode:
        with Candidate(module, path, content) as candidate:
            candidate.install(attributes)
    return True


def remove_file(module: AnsibleModule, path: str) -> bool:
    """Remove `path` if it exists; whether it did (or would, in check mode)."""
    if not os.path.lexists(path):
        return False
    if not module.check_mode:
        os.unlink(path)
    return True
