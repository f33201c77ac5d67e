"""Fixtures of the AAA tests: a real PostgreSQL with the user database's
schema (local_servers.py), and a stand-in for the `radiusd` module that
rlm_python3 makes inside FreeRADIUS (the real one runs in the lab)."""
from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

import local_servers

DB_PASSWORD = "aaa-role-password-for-the-unit-tests-only"


@pytest.fixture(scope="session")
def userdb() -> Iterator[dict[str, str]]:
    if not local_servers.have_postgres():
        pytest.skip("PostgreSQL 15 (Debian package) is not installed")
    with local_servers.userdb_cluster(DB_PASSWORD) as connection:
        yield connection


@pytest.fixture
def radiusd(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """rlm_python3's `radiusd` module: its result codes and log levels as in
    FreeRADIUS 3.2's radiusd.py, its log calls recorded, its config settable."""
    module = types.ModuleType("radiusd")
    for i, name in enumerate(("REJECT", "FAIL", "OK", "HANDLED", "INVALID", "USERLOCK", "NOTFOUND", "NOOP",
                              "UPDATED")):
        setattr(module, f"RLM_MODULE_{name}", i)
    module.L_INFO, module.L_ERR, module.L_WARN = 3, 4, 5
    module.config = {}
    module.logged = []
    module.radlog = lambda level, message: module.logged.append((level, message))
    monkeypatch.setitem(sys.modules, "radiusd", module)
    monkeypatch.delitem(sys.modules, "dmzkit_remote_access.aaa.freeradius", raising=False)
    return module
