"""What the collaboration journey's tests share: the hosts, the lab's
secrets and the user database's audit and accounting."""
from __future__ import annotations

from pathlib import Path

CLIENT, GW, AAA, DB, APP = "client1", "gw1", "aaa1", "db1", "app1"
SECRETS = Path("/var/lib/dmzkit-lab/secrets")


def secret(name: str) -> str:
    return (SECRETS / name).read_text().strip()


def psql(lab, statement: str) -> str:
    run = lab[DB].host.run("runuser -u postgres -- psql -d dmzkit -AtX -c %s", statement)
    assert run.rc == 0, run.stderr
    return run.stdout.strip()
