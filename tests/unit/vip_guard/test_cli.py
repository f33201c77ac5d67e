"""dmzkit-vip-guard's command line: bad input is refused with a message, never a traceback."""
from __future__ import annotations

import pytest

from dmzkit_remote_access.vip_guard.__main__ import main


@pytest.mark.parametrize("argv, message", [
    (["--interface", "eth0", "--vip", "198.18.1.10/24", "--interval", "0"], "--interval must be positive"),
    (["--interface", "eth0", "--vip", "198.18.1.10/24", "--probes", "0"], "--probes at least 1"),
    (["--interface", "eth0", "--vip", "not-an-address"], "--vip"),
    (["--interface", "eth0", "--vip", "2001:db8::1/64"], "--vip"),
    (["--vip", "198.18.1.10/24"], "--interface"),
    (["--interface", "eth0", "--vip", "198.18.1.10/24", "--peer-mac", "02:00:00:00:00"], "--peer-mac"),
    (["--interface", "eth0", "--vip", "198.18.1.10/24", "--peer-mac", "ff:ff:ff:ff:ff:ff"], "group or all-zero"),
    (["--interface", "eth0", "--vip", "198.18.1.10/24", "--patience", "-1"], "--patience must be"),
    (["--interface", "eth0", "--vip", "198.18.1.10/24", "--patience", "inf"], "--patience must be"),
])
def test_bad_arguments_are_refused(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_interface_that_cannot_be_opened_is_an_error_not_a_crash(capsys: pytest.CaptureFixture[str]) -> None:
    # No such interface (ENODEV), or no CAP_NET_RAW (EPERM): either way a message.
    assert main(["--interface", "dmzkit-none0", "--vip", "198.18.1.10/24"]) == 1
    assert "dmzkit-vip-guard: cannot open dmzkit-none0" in capsys.readouterr().err
