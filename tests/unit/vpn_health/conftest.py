"""Fixtures of the agent's tests: a fake VPN service and a PKI (fakes.py)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import testpki
from fakes import FakeService, Pki, start_service


@pytest.fixture
def fake_service(tmp_path: Path) -> Iterator[FakeService]:
    service = start_service(str(tmp_path / "control.sock"))
    yield service
    service.stop()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca_key, ca = testpki.make_ca("vpn health test CA")
    return Pki(where=tmp_path, ca_key=ca_key, ca=ca)
