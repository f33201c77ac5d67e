"""Files a service writes for others to read (its state, say): replaced
whole, so a reader never sees half of one."""
from __future__ import annotations

import os
import tempfile


def write_atomically(path: str, data: bytes, mode: int = 0o644, sync: bool = False) -> None:
    """`data` into `path` with `mode`, through a temporary file in the same
    directory renamed over it; nothing is left behind on failure. `sync`:
    the file and then its directory are synced, so that after a crash the
    path holds the old data or the new, whole; without it (runtime state in
    /run, where a sync would only cost the writer time) it may hold
    neither. When the directory's sync fails, the new data is in place
    already, but may not last a crash: the error says so to the caller."""
    directory = os.path.dirname(path) or "."
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    if sync:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
