"""The entry points FreeRADIUS calls: the settings named in the module's
config, the answer each kind of NAS reads, and no answer but a refusal for
what the site did not prepare. FreeRADIUS itself runs them in the lab
(journey collaboration)."""
from __future__ import annotations

import importlib
import json

import pytest

import local_servers
from test_check import CHEAP, PASSWORD, PROFILES


@pytest.fixture
def entry(radiusd, userdb, tmp_path):
    secret = tmp_path / "userdb.pgpass"
    secret.write_text(f"*:*:*:{userdb['user']}:{userdb['password']}\n")
    secret.chmod(0o600)
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"db_host": userdb["host"], "db_name": userdb["database"],
                                  "db_user": userdb["user"], "db_passfile": str(secret),
                                  "profiles": PROFILES}))
    radiusd.config = {"settings": str(config)}
    module = importlib.import_module("dmzkit_remote_access.aaa.freeradius")
    assert module.instantiate(None) == 0
    local_servers.add_user(userdb, "entry-eng", CHEAP.hash(PASSWORD), ("engineers",))
    local_servers.add_user(userdb, "entry-con", CHEAP.hash(PASSWORD), ("contractors",))
    yield module
    local_servers.remove_user(userdb, "entry-eng")
    local_servers.remove_user(userdb, "entry-con")


def request(user: str, password: str | None, nas_type: str | None, allowed: str = "ocserv strongswan im") -> dict:
    pairs = [("User-Name", user), ("Calling-Station-Id", "198.18.0.5[4500]")]
    if password is not None:
        pairs.append(("User-Password", password))
    if nas_type is not None:
        pairs.append(("NAS-Identifier", nas_type))
    control = [("Dmzkit-NAS", "gw1"), ("Dmzkit-NAS-Types", allowed)]
    return {"request": tuple(pairs), "config": tuple(control), "reply": ()}


def test_each_nas_type_gets_the_profile_in_its_own_form(entry, radiusd) -> None:
    assert entry.authenticate(request("entry-eng", PASSWORD, "ocserv")) == (
        radiusd.RLM_MODULE_OK, {"reply": (("Class", ":=", "OU=engineering"),)})
    assert entry.authenticate(request("entry-eng", PASSWORD, "strongswan")) == (
        radiusd.RLM_MODULE_OK, {"reply": (("Class", ":=", "engineering"),)})
    assert entry.authenticate(request("entry-eng", PASSWORD, "im")) == (radiusd.RLM_MODULE_OK, {"reply": ()})
    assert entry.authenticate(request("entry-con", PASSWORD, "im")) == radiusd.RLM_MODULE_REJECT


@pytest.mark.parametrize(("password", "nas_type"), [
    ("wrong", "ocserv"), (None, "ocserv"), (PASSWORD, None), (PASSWORD, "radius-proxy")])
def test_anything_else_is_refused(entry, radiusd, password, nas_type) -> None:
    assert entry.authenticate(request("entry-eng", password, nas_type)) == radiusd.RLM_MODULE_REJECT


def test_a_nas_is_answered_only_as_a_type_its_client_entry_allows(entry, radiusd) -> None:
    """The gateway's host may ask as ocserv or strongSwan, never as the IM
    server (whose refusal of a user without IM it could then skip)."""
    assert entry.authenticate(request("entry-con", PASSWORD, "im", allowed="ocserv strongswan")) == (
        radiusd.RLM_MODULE_REJECT)
    assert entry.authenticate(request("entry-con", PASSWORD, "ocserv", allowed="im")) == radiusd.RLM_MODULE_REJECT
    assert entry.authenticate(request("entry-con", PASSWORD, "ocserv", allowed="ocserv")) == (
        radiusd.RLM_MODULE_OK, {"reply": (("Class", ":=", "OU=contractors"),)})


def test_a_database_failure_is_a_failure_not_a_refusal(entry, radiusd, monkeypatch) -> None:
    def broken(*args: object) -> None:
        raise OSError("connection refused")
    monkeypatch.setattr(entry._check, "decide", broken)
    assert entry.authenticate(request("entry-eng", PASSWORD, "ocserv")) == radiusd.RLM_MODULE_FAIL
    assert any("no decision for entry-eng" in message for _, message in radiusd.logged)


def test_settings_it_cannot_use_stop_freeradius_from_starting(radiusd, tmp_path) -> None:
    (tmp_path / "settings.json").write_text(json.dumps({"db_host": "/run/postgresql"}))
    radiusd.config = {"settings": str(tmp_path / "settings.json")}
    module = importlib.import_module("dmzkit_remote_access.aaa.freeradius")
    assert module.instantiate(None) == -1
    assert any("missing settings" in message for _, message in radiusd.logged)
