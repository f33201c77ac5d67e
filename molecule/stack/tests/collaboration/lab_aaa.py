"""What the collaboration journey's tests share: the hosts, the lab's
secrets, the user database's audit and accounting, and a user's SSL VPN
tunnel from client1 (certificate and password)."""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CLIENT, GW, AAA, DB, APP, IM = "client1", "gw1", "aaa1", "db1", "app1", "im1"
SECRETS = Path("/var/lib/dmzkit-lab/secrets")
VPN = "https://vpn.lab.dmzkit.test/"


def secret(name: str) -> str:
    return (SECRETS / name).read_text().strip()


def psql(lab, statement: str) -> str:
    run = lab[DB].host.run("runuser -u postgres -- psql -d dmzkit -AtX -c %s", statement)
    assert run.rc == 0, run.stderr
    return run.stdout.strip()


def openconnect(lab, interface: str, user: str, password: str, certificate: str) -> subprocess.CompletedProcess[str]:
    return lab[CLIENT].run_with_input(
        ["timeout", "40", "openconnect", "--background", f"--pid-file=/run/{interface}.pid", f"--interface={interface}",
         "--non-inter", f"--user={user}", "--passwd-on-stdin", "-c", f"/root/dmzkit/{certificate}.pem", VPN],
        password + "\n")


@contextmanager
def tunnel(lab, user: str, password: str, certificate: str | None = None) -> Iterator[subprocess.CompletedProcess[str]]:
    interface = f"tun-{user}"
    try:
        yield openconnect(lab, interface, user, password, certificate or user)
    finally:
        lab[CLIENT].host.run(f"test -f /run/{interface}.pid && kill $(cat /run/{interface}.pid); rm -f /run/{interface}.pid")
