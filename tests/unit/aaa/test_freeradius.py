"""The entry points FreeRADIUS calls: the settings named in the module's
config, and OK, REJECT or FAIL for the password check. FreeRADIUS itself
runs them in the lab (journey collaboration)."""
from __future__ import annotations

import importlib
import json

import pytest

import local_servers
from test_password import CHEAP, PASSWORD, passfile


@pytest.fixture
def entry(radiusd, userdb, tmp_path):
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"db_host": userdb["host"], "db_name": userdb["database"],
                                  "db_user": userdb["user"], "db_passfile": passfile(userdb, tmp_path)}))
    radiusd.config = {"settings": str(config)}
    module = importlib.import_module("dmzkit_remote_access.aaa.freeradius")
    assert module.instantiate(None) == 0
    local_servers.add_user(userdb, "entry-user", CHEAP.hash(PASSWORD), ("staff",))
    yield module
    local_servers.remove_user(userdb, "entry-user")


def request(user: str, password: str | None, account: str | None = None) -> dict:
    """An Access-Request as the site hands it over: the account it settled
    on in Dmzkit-User (the User-Name, or in an EAP-TTLS tunnel the client
    certificate's)."""
    pairs = [("User-Name", user), ("Calling-Station-Id", "198.18.0.5[4500]")]
    if password is not None:
        pairs.append(("User-Password", password))
    control = (("Dmzkit-NAS", "gw1"),) + ((("Dmzkit-User", account or user),) if account != "" else ())
    return {"request": tuple(pairs), "config": control, "reply": ()}


def test_the_check_answers_ok_or_reject(entry, radiusd) -> None:
    assert entry.authenticate(request("entry-user", PASSWORD)) == radiusd.RLM_MODULE_OK
    assert entry.authenticate(request("entry-user", "wrong")) == radiusd.RLM_MODULE_REJECT
    assert entry.authenticate(request("entry-user", None)) == radiusd.RLM_MODULE_REJECT


def test_the_password_is_checked_for_the_account_the_site_settled_on(entry, radiusd) -> None:
    """Inside EAP-TTLS the User-Name is the certificate's e-mail address and
    the account its CN: the check takes the account, and none is no account."""
    assert entry.authenticate(request("entry-user@lab.dmzkit.test", PASSWORD, "entry-user")) == radiusd.RLM_MODULE_OK
    assert entry.authenticate(request("entry-user", PASSWORD, "")) == radiusd.RLM_MODULE_REJECT


@pytest.mark.parametrize("repeated", [("User-Name", "someone-else"), ("User-Password", PASSWORD)])
def test_a_repeated_name_or_password_is_refused(entry, radiusd, repeated) -> None:
    """The site reads the first User-Name, a dict the last: a second name
    would have one user's password checked for another's account."""
    asked = request("entry-user", PASSWORD)
    asked["request"] = (*asked["request"], repeated)
    assert entry.authenticate(asked) == radiusd.RLM_MODULE_REJECT


def test_a_database_failure_is_a_failure_not_a_refusal(entry, radiusd, monkeypatch) -> None:
    def broken(*args: object) -> bool:
        raise OSError("connection refused")
    monkeypatch.setattr(entry._check, "check", broken)
    assert entry.authenticate(request("entry-user", PASSWORD)) == radiusd.RLM_MODULE_FAIL
    assert any("no decision for entry-user" in message for _, message in radiusd.logged)


def test_settings_it_cannot_use_stop_freeradius_from_starting(radiusd, tmp_path) -> None:
    (tmp_path / "settings.json").write_text(json.dumps({"db_host": "/run/postgresql"}))
    radiusd.config = {"settings": str(tmp_path / "settings.json")}
    module = importlib.import_module("dmzkit_remote_access.aaa.freeradius")
    assert module.instantiate(None) == -1
    assert any("missing settings" in message for _, message in radiusd.logged)


@pytest.mark.parametrize(("station", "source"), [
    ("198.18.0.5", "198.18.0.5"), ("198.18.0.5[4500]", "198.18.0.5"), ("2001:db8::1", "2001:db8::1"),
    ("00-11-22-33-44-55", None), ("", None), (None, None)])
def test_the_source_is_the_calling_stations_address(radiusd, station, source) -> None:
    module = importlib.import_module("dmzkit_remote_access.aaa.freeradius")
    assert module.source_of(station) == source
