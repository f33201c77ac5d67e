"""The get-pip stand-in tests/sanity.sh gives ansible-test: it takes get-pip's
arguments and leaves a venv made without pip with pip and nothing else."""
from __future__ import annotations

import ensurepip
import importlib.util
import re
import subprocess
import venv
from pathlib import Path
from types import ModuleType

import pytest

TOP = Path(__file__).resolve().parents[3]
STANDIN = TOP / "tests/sanity/get_pip_standin.py"


def standin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("get_pip_standin", STANDIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("argv", "install", "leave_out"), [
    (["--disable-pip-version-check", "pip==24.2", "--no-setuptools", "--no-wheel"],
     ["--disable-pip-version-check", "pip==24.2"], ["setuptools", "wheel"]),
    (["pip==23.1.2", "setuptools==67.7.2", "wheel==0.37.1"],
     ["pip==23.1.2", "setuptools==67.7.2", "wheel==0.37.1"], []),
])
def test_get_pips_own_flags_become_packages_to_leave_out(argv: list[str], install: list[str],
                                                         leave_out: list[str]) -> None:
    assert standin().split_arguments(argv) == (install, leave_out)


@pytest.fixture(scope="module")
def python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A venv made as ansible-test makes one: without pip."""
    where = tmp_path_factory.mktemp("venv")
    venv.create(where, with_pip=False)
    return str(where / "bin/python")


def test_a_venv_without_pip_gets_the_requested_pip_and_no_setuptools(python: str) -> None:
    # The pip ensurepip brings: asked for, it is already there, so no index is needed.
    wanted = f"pip=={ensurepip.version()}"
    subprocess.run([python, str(STANDIN), "--disable-pip-version-check", wanted, "--no-setuptools",
                    "--no-wheel"], check=True, capture_output=True)
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
                            check=True, capture_output=True, text=True).stdout.split()
    assert listed == [wanted], listed


def test_a_failing_step_fails_the_bootstrap(python: str) -> None:
    run = subprocess.run([python, str(STANDIN), "--no-such-option"], capture_output=True, text=True)
    assert run.returncode != 0 and "no such option" in run.stderr, run.stderr


def test_the_stand_in_carries_the_line_the_script_replaces_it_by() -> None:
    marker = re.search(r'grep -qF "([^"]+)"', (TOP / "tests/sanity.sh").read_text())
    assert marker and marker.group(1) in STANDIN.read_text()
