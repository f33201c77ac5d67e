"""Fixtures of the AAA tests: a stand-in for the `radiusd` module that
rlm_python3 makes inside FreeRADIUS (the real one runs in the lab). The user
database is the shared `userdb` fixture (tests/unit/conftest.py)."""
from __future__ import annotations

import sys
import types

import pytest


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
