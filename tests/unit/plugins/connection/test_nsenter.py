"""The nsenter connection's file fetch and its state check, with a stand-in
nsenter that runs the command where it is, entering no namespace."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.playbook.play_context import PlayContext

from ansible_collections.dmzkit.remote_access.plugins.connection.nsenter import Connection

# Drops nsenter's options up to "--" and runs the rest.
FAKE_NSENTER = """#!/bin/sh
while [ "$1" != "--" ]; do shift; done
shift
exec "$@"
"""


@pytest.fixture
def connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Connection:
    fake = tmp_path / "nsenter"
    fake.write_text(FAKE_NSENTER)
    fake.chmod(0o755)
    conn = Connection(PlayContext())
    # Options come from the plugin loader in a play; here they are fixed.
    monkeypatch.setattr(conn, "get_option", {"remote_addr": "c1", "podman_executable": "podman"}.__getitem__)
    monkeypatch.setattr(conn, "_nsenter", str(fake))
    monkeypatch.setattr(conn, "_pid", "1")
    monkeypatch.setattr(conn, "_connected", True)
    return conn


def test_a_fetched_file_arrives_whole_and_owner_only(connection: Connection, tmp_path: Path) -> None:
    source = tmp_path / "alice.p12"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    fetched = tmp_path / "fetched.p12"
    connection.fetch_file(str(source), str(fetched))
    assert fetched.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(fetched.stat().st_mode) == 0o600


def test_a_missing_file_is_refused_with_the_reason(connection: Connection, tmp_path: Path) -> None:
    with pytest.raises(AnsibleError, match=r"failed to fetch .*/missing: .*No such file"):
        connection.fetch_file(str(tmp_path / "missing"), str(tmp_path / "out"))


def test_a_command_before_connecting_is_an_error_not_an_assertion() -> None:
    with pytest.raises(AnsibleConnectionFailure, match="before it connected"):
        Connection(PlayContext())._argv("true")
