"""List files of different roles that differ only in names.

`duplicates` reads Python and shell; role task files, handlers, templates and
units are YAML, Jinja and INI, so this compares those. Each file's lines have
the role's own name (and so `__<role>_` prefixes) replaced by one placeholder;
pairs whose lines are still mostly the same are twins: one mechanism copied
into two roles instead of one role both use.
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import re
import sys
from pathlib import Path

KINDS = ("tasks", "handlers", "templates", "files")
MIN_LINES = 12  # short files (a single copy task) look alike by nature


def normalised(path: Path, role: str) -> list[str]:
    text = path.read_text(errors="replace")
    names = {role, role.replace("_", "-"), role.replace("_", " ")}
    for name in sorted(names, key=len, reverse=True):
        text = re.sub(re.escape(name), "ROLE", text, flags=re.IGNORECASE)
    return [line.strip() for line in text.splitlines() if line.strip()]


def role_files(roles: Path) -> list[tuple[str, Path, list[str]]]:
    found = []
    for role in sorted(p for p in roles.iterdir() if p.is_dir()):
        for kind in KINDS:
            for path in sorted((role / kind).rglob("*")):
                if path.is_file():
                    lines = normalised(path, role.name)
                    if len(lines) >= MIN_LINES:
                        found.append((role.name, path, lines))
    return found


def twins(roles: Path, threshold: float) -> list[tuple[float, Path, Path]]:
    pairs = []
    for (role_a, path_a, lines_a), (role_b, path_b, lines_b) in itertools.combinations(role_files(roles), 2):
        if role_a == role_b:
            continue
        matcher = difflib.SequenceMatcher(None, lines_a, lines_b, autojunk=False)
        if matcher.real_quick_ratio() < threshold or matcher.quick_ratio() < threshold:
            continue
        ratio = matcher.ratio()
        if ratio >= threshold:
            pairs.append((ratio, path_a, path_b))
    return sorted(pairs, reverse=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roles", nargs="?", default="roles", type=Path)
    parser.add_argument("--threshold", type=float, default=0.75,
                        help="similarity (0..1) from which two files count as twins (default 0.75)")
    args = parser.parse_args()
    found = twins(args.roles, args.threshold)
    for ratio, path_a, path_b in found:
        print(f"{ratio:.2f}  {path_a}  {path_b}")
    print(f"role twins: {len(found)} pair(s) at similarity >= {args.threshold}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
