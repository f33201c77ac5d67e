"""Files a service writes for others to read (its state, say): replaced
whole, so a reader never sees half of one."""
from __future__ import annotations

import os
import tempfile


def write_atomically(path: str, data: bytes, mode: int = 0o644) -> None:
    """`data` into `path` with `mode`, through a temporary file in the same
    directory renamed over it; nothing is left behind on failure. Not
    synced to disk: meant for runtime state (/run), where a sync would only
    cost the writer time."""
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
