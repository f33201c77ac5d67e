"""Fixtures of the registration tests: the lab of reglab.py, once per session."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from reglab import Lab, built


@pytest.fixture(scope="session")
def lab(userdb: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with built(userdb, tmp_path_factory.mktemp("registration")) as made:
        yield made
