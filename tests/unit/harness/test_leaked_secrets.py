"""The check `make test` runs on the Molecule logs for the lab's secrets."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "leaked_secrets.py"
SECRET = "Xq3vT9mPa2LkR7wZ1bNc8dEf"


def run(secrets: Path, *logs: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(secrets), *map(str, logs)],
                          capture_output=True, text=True, timeout=30)


def lab(tmp_path: Path, log_text: str) -> tuple[Path, Path]:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "userdb_sso_idp").write_text(f"{SECRET} salt=abcdefgh\n")
    (secrets / "short").write_text("1234\n")
    log = tmp_path / "stack.log"
    log.write_text(log_text)
    return secrets, log


def test_a_password_printed_in_a_loop_item_is_found_and_not_repeated(tmp_path: Path) -> None:
    # What the check stage printed once: a failed loop item with its password.
    secrets, log = lab(tmp_path, "ok\nfailed: [db1] => (item={'name': 'sso_idp', 'password': '%s'})\n" % SECRET)
    result = run(secrets, log)
    assert result.returncode == 1
    assert f"{log}:2: the secret in userdb_sso_idp" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_clean_logs_pass_and_short_values_do_not_count(tmp_path: Path) -> None:
    secrets, log = lab(tmp_path, "port 1234 open\nchanged: [db1] => (item=sso_idp)\n")
    result = run(secrets, log)
    assert result.returncode == 0, result.stdout
    assert "0 hit(s) of 1 secret(s)" in result.stdout


def test_no_secrets_directory_is_an_error_not_a_pass(tmp_path: Path) -> None:
    assert run(tmp_path / "missing", tmp_path / "x.log").returncode == 1
