"""The entry points rlm_python3 calls (module `dmzkit_remote_access.aaa.freeradius`).

FreeRADIUS passes each request's attribute lists as a dict of (name, value)
pairs (`pass_all_vps_dict = yes`). The site calls `authenticate` only for a
password it has not found right lately (Auth-Type dmzkit); everything else
(the NAS's type, the profile, the answer's form, remembering a password
found right) is the site's own, in unlang.
"""
from __future__ import annotations

import ipaddress
import logging
from typing import Any

import radiusd  # made by rlm_python3 inside FreeRADIUS

from ..config import ConfigError
from .password import PasswordCheck
from .settings import Settings

_check: PasswordCheck | None = None


class _Radlog(logging.Handler):
    LEVELS = {logging.ERROR: radiusd.L_ERR, logging.WARNING: radiusd.L_WARN}

    def emit(self, record: logging.LogRecord) -> None:
        radiusd.radlog(self.LEVELS.get(record.levelno, radiusd.L_INFO), self.format(record))


def source_of(calling_station: str | None) -> str | None:
    """The user's address from a Calling-Station-Id ("198.18.0.5",
    strongSwan's "198.18.0.5[4500]"), or None."""
    if not calling_station:
        return None
    try:
        return str(ipaddress.ip_address(calling_station.split("[", 1)[0]))
    except ValueError:
        return None


def instantiate(_: Any) -> int:
    global _check
    logging.getLogger("dmzkit").addHandler(_Radlog())
    logging.getLogger("dmzkit").setLevel(logging.INFO)
    try:
        check = PasswordCheck(Settings.load(radiusd.config["settings"]))
    except (ConfigError, KeyError) as e:
        radiusd.radlog(radiusd.L_ERR, f"dmzkit aaa: {e}")
        return -1
    try:
        check.prepare()
    except Exception as e:
        # The database may come later; the decoy is then made at the first attempt.
        radiusd.radlog(radiusd.L_WARN, f"dmzkit aaa: user database not reached yet: {e}")
    _check = check
    return 0


# Each at most once: the site reads the first of each, and a password checked
# under another name than the site's would let one user's password in as another.
SINGLE = ("User-Name", "User-Password", "Calling-Station-Id")


def authenticate(p: dict[str, tuple[tuple[str, str], ...]]) -> int:
    names = [name for name, _ in p["request"]]
    if any(names.count(name) > 1 for name in SINGLE):
        return radiusd.RLM_MODULE_REJECT
    request = dict(p["request"])
    control = dict(p["config"])
    # The account the site settled on: the User-Name, or inside an EAP-TTLS
    # tunnel the client certificate's (Dmzkit-User).
    username, password = control.get("Dmzkit-User"), request.get("User-Password")
    if _check is None or not username or password is None:
        return radiusd.RLM_MODULE_REJECT
    try:
        good = _check.check(username, password, source_of(request.get("Calling-Station-Id")),
                            control.get("Dmzkit-NAS", ""))
    except Exception as e:
        radiusd.radlog(radiusd.L_ERR, f"dmzkit aaa: no decision for {username}: {e!r}")
        return radiusd.RLM_MODULE_FAIL
    return radiusd.RLM_MODULE_OK if good else radiusd.RLM_MODULE_REJECT
