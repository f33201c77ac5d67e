# Copyright: dmzkit maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pack the services' source (pyproject.toml and the package's Python files)
into a gzip'd tar that is byte-for-byte the same for the same files.

The service_venv role runs this on the controller: the archive's checksum
tells each host whether its installed code is current, so nothing in the
archive may depend on when, where or by whom it was packed.

usage: pack_source.py <collection root> <archive>
"""
from __future__ import annotations

import gzip
import io
import sys
import tarfile
from pathlib import Path

TOP = "dmzkit-remote-access"
# Wheels (zip) cannot hold times before 1980; pip builds one from this tree.
FIXED_MTIME = 315532800


def pack(root: Path, archive: Path) -> None:
    files = [root / "pyproject.toml", *sorted((root / "src").rglob("*.py"))]
    with open(archive, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as zipped, \
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            data = path.read_bytes()
            info = tarfile.TarInfo(f"{TOP}/{path.relative_to(root).as_posix()}")
            info.size, info.mode, info.mtime = len(data), 0o644, FIXED_MTIME
            tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    pack(Path(sys.argv[1]), Path(sys.argv[2]))
