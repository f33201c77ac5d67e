"""Reading a service's configuration: its JSON file, typed settings and the
secrets it names; the one way every service refuses what it cannot use."""
from __future__ import annotations

import dataclasses
import enum
import json
import types
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any, Self, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")
# A field's own parser, for what its type alone cannot say (an address that
# must carry its prefix, say): field(metadata={PARSE: parse}), where
# parse(value, name) returns the value or raises ConfigError.
PARSE = "parse"
Parser = Callable[[Any, str], Any]
_SCALARS: dict[type, str] = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
_LISTS = (list, tuple, frozenset)


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


def typed(cls: type[T], raw: dict[str, Any], prefix: str = "") -> T:
    """A settings dataclass from a JSON object: no unknown or missing keys,
    each value converted to its field's type (below); `prefix` names a
    nested object in messages ("fence.")."""
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.init}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(prefix + name for name in unknown)}")
    missing = [prefix + name for name, f in known.items()
               if f.default is MISSING and f.default_factory is MISSING and name not in raw]
    if len(missing) == 1:
        raise ConfigError(f"missing setting {missing[0]!r}")
    if missing:
        raise ConfigError(f"missing settings: {', '.join(missing)}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        parse: Parser | None = known[name].metadata.get(PARSE)
        values[name] = parse(value, prefix + name) if parse else converted(hints[name], value, prefix + name)
    return cls(**values)


def converted(kind: Any, value: Any, name: str) -> Any:
    """`value`, from JSON, as a `kind`: str, int, bool exactly; float from any
    number; `X | None`; list, tuple and frozenset of one element type from a
    list; dict from an object; a dataclass from an object (by `typed`); an
    enum from its value; any other class from a string (an address, say)."""
    origin, args = get_origin(kind), get_args(kind)
    if kind is Any:
        return value
    if origin in (Union, types.UnionType):
        return _optional(args, value, name)
    if origin in _LISTS or kind in _LISTS:
        return _sequence(origin or kind, args[0] if args else Any, value, name)
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be an object, got {value!r}")
        element = args[1] if args else Any
        return {key: converted(element, item, f"{name}.{key}") for key, item in value.items()}
    if dataclasses.is_dataclass(kind) and not isinstance(value, kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be an object, got {value!r}")
        return typed(kind, value, prefix=f"{name}.")
    if kind in _SCALARS:
        return _scalar(kind, value, name)
    if isinstance(value, kind):
        return value
    if issubclass(kind, enum.Enum):
        try:
            return kind(value)
        except ValueError as e:
            raise ConfigError(f"{name}: {e} (one of {', '.join(str(m.value) for m in kind)})") from None
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    try:
        return kind(value)
    except ValueError as e:
        raise ConfigError(f"{name}: {e}") from None


def _optional(kinds: tuple[Any, ...], value: Any, name: str) -> Any:
    if value is None and type(None) in kinds:
        return None
    options = [k for k in kinds if k is not type(None)]
    if len(options) != 1:
        raise TypeError(f"{name}: only X | None unions are supported")
    return converted(options[0], value, name)


def _sequence(kind: type, element: Any, value: Any, name: str) -> Any:
    if not isinstance(value, _LISTS):
        raise ConfigError(f"{name} must be a list, got {value!r}")
    return kind(converted(element, item, f"{name}[{i}]") for i, item in enumerate(value))


def _scalar(kind: type, value: Any, name: str) -> Any:
    # bool is an int to Python, never to a configuration.
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise ConfigError(f"{name} must be {_SCALARS[kind]}, got {value!r}")


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
