from __future__ import annotations

import pytest

DEB822 = """\
Types: deb
# a comment inside the stanza
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main
"""


@pytest.fixture
def apt_dir(tmp_path, apt_mirrors, monkeypatch):
    (tmp_path / "sources.list.d").mkdir()
    monkeypatch.setattr(apt_mirrors, "APT_DIR", tmp_path)
    return tmp_path


def test_deb822_sources_give_each_suite_its_mirror(apt_dir, apt_mirrors):
    (apt_dir / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert apt_mirrors.mirrors("bookworm") == {
        "bookworm": "http://mirror.example/debian",
        "bookworm-updates": "http://mirror.example/debian",
        "bookworm-security": "http://security.example/debian-security",
    }


def test_one_line_sources_with_options_are_read(apt_dir, apt_mirrors):
    (apt_dir / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n"
        "deb http://contrib-only.example/debian bookworm-updates contrib\n"
    )
    assert apt_mirrors.mirrors("bookworm") == {"bookworm": "http://one.example/debian"}


def test_disabled_stanzas_and_other_files_are_ignored(apt_dir, apt_mirrors):
    (apt_dir / "sources.list.d" / "off.sources").write_text(
        "Enabled: no\nTypes: deb\nURIs: http://off.example/\nSuites: bookworm\nComponents: main\n"
    )
    (apt_dir / "sources.list.d" / "x.list.disabled").write_text("deb http://x.example/ bookworm main\n")
    assert apt_mirrors.mirrors("bookworm") == {}


def test_main_fails_clearly_without_a_source(apt_dir, apt_mirrors, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["apt_mirrors.py", "bookworm"])
    assert apt_mirrors.main() == 1
    assert "no apt source for 'bookworm main'" in capsys.readouterr().err
