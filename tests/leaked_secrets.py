"""Fail when a secret of the lab appears in a log.

The lab's secrets (passwords Ansible's password lookup made, one file each)
are in one directory; every Molecule log of the run is read for each of them.
A hit names the log, the line and the secret's file, never the secret.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# A value this short could turn up in a log by chance (a word, a number);
# the lab's secrets are 24 characters long.
MIN_LENGTH = 12


def secrets(directory: Path) -> dict[str, str]:
    """Secret value -> the name of its file. A password lookup's file holds
    the value, then optionally ` salt=...`."""
    found = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            words = path.read_text(errors="replace").split()
            if words and len(words[0]) >= MIN_LENGTH:
                found[words[0]] = str(path.relative_to(directory))
    return found


def hits(known: dict[str, str], logs: list[Path]) -> list[str]:
    found = []
    for log in logs:
        with log.open(errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                found += [f"{log}:{number}: the secret in {name}" for value, name in known.items() if value in line]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("secrets", type=Path, help="the lab's secrets directory")
    parser.add_argument("logs", nargs="+", type=Path)
    args = parser.parse_args()
    if not args.secrets.is_dir():
        print(f"leaked secrets: no secrets directory {args.secrets}", file=sys.stderr)
        return 1
    known = secrets(args.secrets)
    found = hits(known, [log for log in args.logs if log.is_file()])
    for line in found:
        print(line)
    print(f"leaked secrets: {len(found)} hit(s) of {len(known)} secret(s) in {len(args.logs)} log(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
