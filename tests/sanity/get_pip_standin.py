"""Stand-in for the get-pip script ansible-test runs to put pip into a sanity venv.

ansible-test creates each sanity test's venv without pip and runs
~/.ansible/test/cache/get_pip_<version>.py in it, downloading that script from
ci-files.testing.ansible.com when it is missing. The lab machines cannot reach
that host, so tests/sanity.sh installs this file there instead. It takes the
same arguments as get-pip (``--disable-pip-version-check pip==24.2
--no-setuptools --no-wheel``): pip comes from the interpreter's own ensurepip,
and that pip then installs the requested one from the configured index.
"""

from __future__ import annotations

import subprocess
import sys

# dmzkit.remote_access get-pip stand-in: tests/sanity.sh replaces a cached
# script only if it carries this line, so a real get-pip is kept.

# get-pip's own flags, not pip install's: each names a package to leave out.
GET_PIP_FLAGS = {"--no-setuptools": "setuptools", "--no-wheel": "wheel"}


def split_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """Return pip install's arguments and the packages get-pip was told to leave out."""
    install = [arg for arg in argv if arg not in GET_PIP_FLAGS]
    leave_out = [GET_PIP_FLAGS[arg] for arg in argv if arg in GET_PIP_FLAGS]
    return install, leave_out


def run(*args: str) -> None:
    """Run the interpreter with these arguments; a failure ends the bootstrap."""
    subprocess.run([sys.executable, *args], check=True)


def main(argv: list[str]) -> int:
    """Install pip as get-pip would."""
    install, leave_out = split_arguments(argv)
    # A child process: ensurepip clears the PIP_* settings of the process it
    # runs in, and the pip install below needs them (index, certificates).
    run("-m", "ensurepip")
    run("-m", "pip", "install", *install)
    if leave_out:
        # ensurepip of Python 3.11 also installs setuptools.
        run("-m", "pip", "uninstall", "--yes", *leave_out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
