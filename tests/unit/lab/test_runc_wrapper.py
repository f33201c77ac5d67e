from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize(
    ("argv", "bundle"),
    [
        (["create", "--bundle", "/b1", "id"], "/b1"),
        (["create", "-b", "/b2", "id"], "/b2"),
        (["--root", "/r", "create", "--bundle=/b3", "id"], "/b3"),
        (["delete", "id"], None),
        (["create", "--bundle"], None),
    ],
)
def test_bundle_is_found_in_every_spelling(runc_wrapper, argv, bundle):
    assert runc_wrapper.bundle_dir(argv) == bundle


def test_rlimits_are_dropped_and_the_rest_kept(runc_wrapper, tmp_path):
    config = {
        "ociVersion": "1.0.2",
        "process": {"args": ["/sbin/init"], "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1, "soft": 1}]},
        "linux": {"cgroupsPath": "machine.slice:libpod:x"},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    runc_wrapper.drop_rlimits(str(tmp_path))
    rewritten = json.loads((tmp_path / "config.json").read_text())
    assert "rlimits" not in rewritten["process"]
    assert rewritten["process"]["args"] == ["/sbin/init"]
    assert rewritten["linux"] == config["linux"]
    assert list(tmp_path.iterdir()) == [tmp_path / "config.json"]


def test_config_without_rlimits_is_not_rewritten(runc_wrapper, tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"process": {"args": []}}')
    before = path.stat().st_mtime_ns
    runc_wrapper.drop_rlimits(str(tmp_path))
    assert path.stat().st_mtime_ns == before


def test_real_runc_gets_the_same_arguments(runc_wrapper, tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text('{"process": {"rlimits": []}}')
    calls = []
    monkeypatch.setattr(runc_wrapper.os, "execv", lambda path, args: calls.append((path, args)))
    monkeypatch.setattr("sys.argv", ["runc", "create", "--bundle", str(tmp_path), "c1"])
    runc_wrapper.main()
    assert calls == [("/usr/bin/runc", ["/usr/bin/runc", "create", "--bundle", str(tmp_path), "c1"])]
    assert json.loads((tmp_path / "config.json").read_text()) == {"process": {}}
