"""Load the lab's stand-alone scripts as modules for testing."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
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
