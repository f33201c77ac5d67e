"""config.typed: JSON values to a settings dataclass's types, with messages in JSON's terms."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pytest

from dmzkit_remote_access.config import PARSE, ConfigError, typed


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Inner:
    count: int = 1
    argv: tuple[str, ...] = ()


def even(value: Any, name: str) -> int:
    if not isinstance(value, int) or value % 2:
        raise ConfigError(f"{name} must be even")
    return value


@dataclass(frozen=True)
class Outer:
    name: str
    ratio: float = 1.0
    flag: bool = False
    address: ipaddress.IPv4Address | None = None
    colour: Colour = Colour.RED
    tags: frozenset[str] = frozenset()
    names: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    commands: dict[str, tuple[str, ...]] = field(default_factory=dict)
    pair: int = field(default=2, metadata={PARSE: even})


def test_values_are_converted() -> None:
    outer = typed(Outer, {"name": "x", "ratio": 2, "flag": True, "address": "198.18.0.1", "colour": "blue",
                          "tags": ["a", "b", "a"], "names": ["n"], "inner": {"argv": ["/bin/true", "-q"]},
                          "commands": {"go": ["/bin/go"]}, "pair": 4})
    assert outer == Outer("x", 2.0, True, ipaddress.IPv4Address("198.18.0.1"), Colour.BLUE, frozenset("ab"), ["n"],
                          Inner(1, ("/bin/true", "-q")), {"go": ("/bin/go",)}, 4)
    assert isinstance(outer.ratio, float)
    assert typed(Outer, {"name": "x", "address": None}).address is None


@pytest.mark.parametrize(("raw", "message"), [
    ({}, "missing setting 'name'"),
    ({"name": "x", "other": 1, "more": 2}, "unknown settings: more, other"),
    ({"name": 1}, "name must be a string, got 1"),
    ({"name": "x", "ratio": "2"}, "ratio must be a number"),
    ({"name": "x", "ratio": True}, "ratio must be a number"),
    ({"name": "x", "flag": 1}, "flag must be true or false"),
    ({"name": "x", "address": "nowhere"}, "address: "),
    ({"name": "x", "address": 5}, "address must be a string"),
    ({"name": "x", "colour": "green"}, r"colour: 'green' is not a valid Colour \(one of red, blue\)"),
    ({"name": "x", "tags": "a"}, "tags must be a list"),
    ({"name": "x", "names": [1]}, r"names\[0\] must be a string"),
    ({"name": "x", "inner": []}, "inner must be an object"),
    ({"name": "x", "inner": {"count": 1.5}}, "inner.count must be an integer"),
    ({"name": "x", "inner": {"size": 1}}, "unknown settings: inner.size"),
    ({"name": "x", "commands": {"go": "/bin/go"}}, "commands.go must be a list"),
    ({"name": "x", "pair": 3}, "pair must be even"),
])
def test_bad_values_are_refused_with_their_name(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        typed(Outer, raw)


def test_several_missing_settings_are_listed() -> None:
    @dataclass
    class Two:
        a: str
        b: str

    with pytest.raises(ConfigError, match="missing settings: a, b"):
        typed(Two, {})
