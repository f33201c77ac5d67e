"""Reading a service's configuration: its JSON file, typed settings and the
secrets it names; the one way every service refuses what it cannot use."""
from __future__ import annotations

import json
from dataclasses import MISSING, fields
from typing import Any, Self, TypeVar, get_type_hints

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration a service refuses to run with."""


def load_object(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return raw


def typed(cls: type[T], raw: dict[str, Any]) -> T:
    """A settings dataclass from a JSON object: no unknown or missing keys,
    each value of its field's type (an int may stand for a float)."""
    kinds = get_type_hints(cls)
    unknown = set(raw) - set(kinds)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    missing = [f.name for f in fields(cls)
               if f.default is MISSING and f.default_factory is MISSING and f.name not in raw]
    if missing:
        raise ConfigError(f"missing settings: {', '.join(missing)}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        kind = getattr(kinds[name], "__origin__", kinds[name])
        if kind is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(f"{name} must be a {kind.__name__}, got {value!r}")
        values[name] = value
    return cls(**values)


def check_url(settings: Any, name: str) -> None:
    url = getattr(settings, name)
    if not url.startswith("https://") or url.endswith("/"):
        raise ConfigError(f"{name} must be an https:// URL without a trailing slash, got {url!r}")


def check_listen(settings: Any, name: str) -> None:
    _, _, port = getattr(settings, name).rpartition(":")
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{name} must be address:port, got {getattr(settings, name)!r}")


def read_secret(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    if not value:
        raise ConfigError(f"{path} is empty")
    return value


class FileSettings:
    """A settings dataclass read from a service's JSON file: typed, then
    checked as a whole by its `check`."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Self:
        settings = typed(cls, raw)
        settings.check()
        return settings

    @classmethod
    def load(cls, path: str) -> Self:
        return cls.from_dict(load_object(path))

    def check(self) -> None:
        """Refuse, with ConfigError, values that are typed right but unusable."""
