"""Load the lab's stand-alone scripts as modules for testing."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

TOP = Path(__file__).resolve().parents[2]


def load_script(relative: str) -> ModuleType:
    path = TOP / relative
    loader = importlib.machinery.SourceFileLoader(path.stem.replace("-", "_"), str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first, as an import would, so dataclasses can resolve the module.
    sys.modules[loader.name] = module
    loader.exec_module(module)
    return module


@pytest.fixture
def apt_mirrors() -> ModuleType:
    return load_script("lab/image/apt_mirrors.py")


@pytest.fixture
def runc_wrapper() -> ModuleType:
    return load_script("lab/runtime/runc")


@pytest.fixture
def dmzkit_crl() -> ModuleType:
    return load_script("roles/ca/files/dmzkit-crl")


# The user database with its schema as the userdb role builds it, and a login
# role with the `authn` privilege (local_servers.py), for the whole session.
USERDB_LOGIN_PASSWORD = "authn-role-password-for-the-unit-tests-only"


@pytest.fixture(scope="session")
def userdb() -> Iterator[dict[str, str]]:
    import local_servers

    if not local_servers.have_postgres():
        pytest.skip("PostgreSQL 15 (Debian package) is not installed")
    with local_servers.userdb_cluster(USERDB_LOGIN_PASSWORD) as connection:
        yield connection
