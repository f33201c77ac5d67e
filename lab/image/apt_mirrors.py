"""Print the Debian mirror URIs this machine's apt sources use for a release.

Output: "<suite> <uri>" lines for <release>, <release>-updates and
<release>-security, read from deb822 *.sources and one-line *.list files.
The lab image is built from the same mirror the host already trusts, so no
mirror host is ever written into the project.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

APT_DIR = Path("/etc/apt")
_OPTIONS = re.compile(r"\[[^\]]*\]")  # "deb [arch=amd64 signed-by=...] uri suite ..."


def _deb822_entries(text: str) -> list[tuple[list[str], list[str], list[str]]]:
    entries = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
            entries.append(
                (fields.get("uris", "").split(), fields.get("suites", "").split(),
                 fields.get("components", "").split())
            )
    return entries


def _one_line_entries(text: str) -> list[tuple[list[str], list[str], list[str]]]:
    entries = []
    for line in text.splitlines():
        words = _OPTIONS.sub(" ", line.split("#", 1)[0]).split()
        if words[:1] != ["deb"]:
            continue
        words = words[1:]
        if len(words) >= 3:
            entries.append(([words[0]], [words[1]], words[2:]))
    return entries


def mirrors(release: str) -> dict[str, str]:
    wanted = (release, f"{release}-updates", f"{release}-security")
    found: dict[str, str] = {}
    sources = [APT_DIR / "sources.list", *sorted((APT_DIR / "sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".sources":
            entries = _deb822_entries(text)
        elif path.suffix == ".list" or path.name == "sources.list":
            entries = _one_line_entries(text)
        else:
            continue
        for uris, suites, components in entries:
            if "main" not in components or not uris:
                continue
            for suite in suites:
                if suite in wanted:
                    found.setdefault(suite, uris[0])
    return found


def main() -> int:
    release = sys.argv[1] if len(sys.argv) > 1 else "bookworm"
    found = mirrors(release)
    if release not in found:
        print(f"no apt source for '{release} main' in {APT_DIR}", file=sys.stderr)
        return 1
    for suite, uri in found.items():
        print(suite, uri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
