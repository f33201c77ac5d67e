"""What the module tests share: the failover watchdog's command line from this
checkout, standing where the role installs it for the modules that run it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[3]


@pytest.fixture
def watchdog_command(tmp_path: Path) -> str:
    path = tmp_path / "bin" / "dmzkit-failover-watchdog"
    path.parent.mkdir()
    path.write_text(f"#!/bin/sh\nPYTHONPATH={TOP / 'src'} exec {sys.executable} "
                    "-m dmzkit_remote_access.failover_watchdog \"$@\"\n")
    path.chmod(0o755)
    return str(path)
