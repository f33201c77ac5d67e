"""The entry points rlm_python3 calls (module `dmzkit_remote_access.aaa.freeradius`).

FreeRADIUS passes each request's attribute lists as a dict of (name, value)
pairs (`pass_all_vps_dict = yes`) and takes back a result code and the
attributes to add. The site puts the client's name and the NAS types its
entry allows (Dmzkit-NAS, Dmzkit-NAS-Types) in the control list before it
calls `authenticate`. A NAS names its type in NAS-Identifier: one host (a
gateway with ocserv and strongSwan) is one client, with one address and one
secret, and each of its NASes is answered in its own form.

The answer per NAS type:
- ocserv: Class "OU=<profile>", the form ocserv reads (the first Class only);
- strongswan: Class "<profile>", which eap-radius's class_group makes a group;
- im: nothing beyond Access-Accept, and a user whose profile does not allow
  IM is refused.
"""
from __future__ import annotations

import logging
from typing import Any

import radiusd  # made by rlm_python3 inside FreeRADIUS

from ..config import ConfigError
from .check import Decision, PasswordCheck, source_of
from .settings import NAS_TYPES, Settings

_check: PasswordCheck | None = None


class _Radlog(logging.Handler):
    LEVELS = {logging.ERROR: radiusd.L_ERR, logging.WARNING: radiusd.L_WARN}

    def emit(self, record: logging.LogRecord) -> None:
        radiusd.radlog(self.LEVELS.get(record.levelno, radiusd.L_INFO), self.format(record))


def connector(settings: Settings) -> Any:
    import psycopg2

    options: dict[str, Any] = {"host": settings.db_host, "port": settings.db_port, "dbname": settings.db_name,
                               "user": settings.db_user, "passfile": settings.db_passfile, "connect_timeout": 5,
                               "application_name": "dmzkit-aaa"}
    if not settings.db_host.startswith("/"):
        options |= {"sslmode": "verify-full", "sslrootcert": settings.ca_chain}
        if settings.crl:
            options["sslcrl"] = settings.crl

    def connect() -> Any:
        connection = psycopg2.connect(**options)
        connection.autocommit = True
        return connection
    return connect


def instantiate(_: Any) -> int:
    global _check
    logging.getLogger("dmzkit").addHandler(_Radlog())
    logging.getLogger("dmzkit").setLevel(logging.INFO)
    try:
        settings = Settings.load(radiusd.config["settings"])
        check = PasswordCheck(settings, connector(settings))
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


def answer(decision: Decision, nas_type: str) -> tuple[tuple[str, str, str], ...]:
    """The reply attributes that carry an accepted user's profile to this NAS type."""
    if decision.profile is None:
        return ()
    if nas_type == "ocserv":
        return (("Class", ":=", f"OU={decision.profile.name}"),)
    if nas_type == "strongswan":
        return (("Class", ":=", decision.profile.name),)
    return ()


def authenticate(p: dict[str, tuple[tuple[str, str], ...]]) -> Any:
    request = dict(p["request"])
    control = dict(p["config"])
    username, password = request.get("User-Name"), request.get("User-Password")
    nas_type = request.get("NAS-Identifier", "")
    allowed = control.get("Dmzkit-NAS-Types", "").split()
    if _check is None or not username or password is None or nas_type not in NAS_TYPES or nas_type not in allowed:
        return radiusd.RLM_MODULE_REJECT
    try:
        decision = _check.decide(username, password, control.get("Dmzkit-NAS", ""), nas_type,
                                 source_of(request.get("Calling-Station-Id")))
    except Exception as e:
        radiusd.radlog(radiusd.L_ERR, f"dmzkit aaa: no decision for {username}: {e}")
        return radiusd.RLM_MODULE_FAIL
    if not decision.accepted:
        return radiusd.RLM_MODULE_REJECT
    return radiusd.RLM_MODULE_OK, {"reply": answer(decision, nas_type)}
