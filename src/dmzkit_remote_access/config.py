"""Reading a service's JSON configuration file: the one way every service
refuses a file it cannot use."""
from __future__ import annotations

import json
from typing import Any


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
