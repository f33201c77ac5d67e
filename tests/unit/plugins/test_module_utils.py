"""The modules' shared file writing and service checks, in this process, with
a real AnsibleModule."""
from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args

from ansible_collections.dmzkit.remote_access.plugins.module_utils._io import (
    Candidate, file_attributes, read_bytes, remove_file, write_file)
from ansible_collections.dmzkit.remote_access.plugins.module_utils._service import run_service


def make_module(check_mode: bool = False, file_args: bool = False, **params: Any) -> AnsibleModule:
    args = {"_ansible_check_mode": check_mode, **params}
    with patch_module_args(args):
        return AnsibleModule(argument_spec={"path": {"type": "path"}}, add_file_common_args=file_args,
                             supports_check_mode=True)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Path]:
    umask = os.umask(0o022)  # the usual one: what a file would get without care
    try:
        yield tmp_path / "etc" / "app.json"
    finally:
        os.umask(umask)


def test_written_0600_once_then_left_alone(target: Path) -> None:
    assert write_file(make_module(), str(target), b"one\n")
    assert target.read_bytes() == b"one\n" and mode(target) == 0o600
    assert not write_file(make_module(), str(target), b"one\n")
    assert os.listdir(target.parent) == ["app.json"]


def test_check_mode_tells_and_changes_nothing(target: Path) -> None:
    assert write_file(make_module(check_mode=True), str(target), b"one\n")
    assert not target.parent.exists()
    write_file(make_module(), str(target), b"one\n")
    target.chmod(0o644)
    assert write_file(make_module(check_mode=True), str(target), b"one\n") and mode(target) == 0o644
    assert write_file(make_module(check_mode=True), str(target), b"two\n") and target.read_bytes() == b"one\n"


def test_a_loosened_file_is_narrowed_before_its_new_content_arrives(target: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    write_file(make_module(), str(target), b"old\n")
    target.chmod(0o644)
    module = make_module()
    modes_at_move: list[int] = []
    move = module.atomic_move

    def watched_move(src: str, dest: str, *args: Any, **kwargs: Any) -> None:
        modes_at_move.append(mode(Path(dest)))
        move(src, dest, *args, **kwargs)
        modes_at_move.append(mode(Path(dest)))

    monkeypatch.setattr(module, "atomic_move", watched_move)
    assert write_file(module, str(target), b"secret\n")
    assert modes_at_move == [0o600, 0o600] and target.read_bytes() == b"secret\n"


def test_the_default_mode_and_the_module_file_options(target: Path) -> None:
    assert write_file(make_module(), str(target), b"public\n", default_mode="0644")
    assert mode(target) == 0o644
    options = make_module(file_args=True, mode="0640")
    assert file_attributes(options, str(target), "0600")["mode"] == "0640"
    assert write_file(options, str(target), b"public\n") and mode(target) == 0o640


def test_a_candidate_not_installed_leaves_nothing(target: Path) -> None:
    target.parent.mkdir()
    with Candidate(make_module(), str(target), b"maybe\n") as candidate:
        assert Path(candidate.name).parent == target.parent and mode(Path(candidate.name)) == 0o600
    assert os.listdir(target.parent) == []
    with Candidate(make_module(), str(target.parent / "new" / "x.json"), b"maybe\n") as elsewhere:
        assert Path(elsewhere.name).parent != target.parent / "new"  # no directory made for a check
    assert not Path(elsewhere.name).exists()


def test_remove_and_read(target: Path) -> None:
    assert read_bytes(str(target)) is None
    assert not remove_file(make_module(), str(target))
    write_file(make_module(), str(target), b"x")
    assert remove_file(make_module(check_mode=True), str(target)) and target.exists()
    assert remove_file(make_module(), str(target)) and not target.exists()


def failure(capsys: pytest.CaptureFixture[str], call: Callable[[AnsibleModule], object]) -> dict[str, Any]:
    """What the module reports when `call` makes it fail (the arguments stay
    patched: the module reads them again to report)."""
    with patch_module_args({}), pytest.raises(SystemExit):
        call(AnsibleModule(argument_spec={}))
    return json.loads(capsys.readouterr().out)


def test_the_service_check_speaks_of_the_real_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    check = tmp_path / "check"
    check.write_text('#!/bin/sh\necho "$1: bad value" >&2\nexit 2\n')
    check.chmod(0o755)
    result = failure(capsys, lambda m: run_service(m, [str(check), "%s"], "/tmp/.cand", "/etc/app.json", "app"))
    assert result["failed"] and result["msg"] == "/etc/app.json: bad value" and result["rc"] == 2
    missing = failure(capsys, lambda m: run_service(m, [str(tmp_path / "nope"), "%s"], "/tmp/.c", "/x", "app"))
    assert "install the service first (role app)" in missing["msg"]
    check.write_text('#!/bin/sh\necho "checked $1"\n')
    assert run_service(make_module(), [str(check), "%s"], "/tmp/.cand", "/x", "app") == "checked /tmp/.cand\n"
