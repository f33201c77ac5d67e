"""What the device auto-login journey's tests share: the lab's devices, their
agent, what each keeps in its sealed cache (read on the device, with its own
key, as the agent reads it), the user database's audit records of their
registrations, and the business logins at the SSL VPN and the IM server."""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

REG = ("reg1", "reg2")
DB = "db1"
AGENT = "/opt/dmzkit/venv/bin/dmzkit-device-agent"
CONFIG = "/etc/dmzkit-device-agent/agent.json"
UNIT = "dmzkit-device-agent.service"
PKI = "/etc/dmzkit-device"
# The IM server, and where the tunnels' traffic reaches it from: the gateway.
IM, IM_DOMAIN, GW = "im1", "im.lab.dmzkit.test", "gw1"
# The CA chain the gateway trusts (role ca's entry point trust).
GW_CA = "/etc/dmzkit-pki/ca-chain.pem"
# What a user's machine runs to log in to IM, shared with `make demo`'s journeys.
XMPP_LOGIN = (Path(__file__).resolve().parents[4] / "lab/journeys/xmpp_login.py").read_text()


@dataclass(frozen=True)
class Device:
    host: str
    site: str
    server: str
    # The address the registration servers see it come from.
    seen: str

    @property
    def serial(self) -> str:
        return f"dev-{self.host}"


# client1 is on the internet itself; branch1 behind the branch office's NAT
# router, whose one public address is the branch site's network.
DEVICES = (
    Device("client1", "roaming", "vpn.lab.dmzkit.test:443", "198.18.0.10"),
    Device("branch1", "branch", "vpn-branch.lab.dmzkit.test:443", "198.18.0.20"),
)

# Run on the device with the venv's Python as root: the cache's account,
# servers and passwords, unsealed with the device's own key.
READ_CACHE = """
import json, sys
from dmzkit_remote_access.registration.cache import cache_key, load
settings = json.load(open(sys.argv[1]))
cache = load(settings["cache"], settings["serial"], cache_key(open(settings["private_key"], "rb").read()))
print(json.dumps({"account": cache.account, "current": cache.kept.current, "candidate": cache.kept.candidate,
                  "servers": [f"{s.host}:{s.port}" for s in cache.servers], "cache_logins": len(cache.cache_logins)}))
"""


class Secret(str):
    """A password a device was granted: itself wherever a string goes,
    masked wherever it is shown (pytest's account of a failure prints
    arguments)."""

    def __repr__(self) -> str:
        return "Secret(***)"


class Kept(dict):
    """A device's cache as READ_CACHE tells it: `current` and `candidate`
    are (epoch, password) or None, the passwords Secrets."""


CACHE = "/var/lib/dmzkit-device/cache"


def run_agent(lab, device: Device, timeout: int = 20, config: str = CONFIG) -> subprocess.CompletedProcess[str]:
    """One start of the agent, as its unit runs it (its user, its settings)."""
    return subprocess.run(["podman", "exec", device.host, "timeout", str(timeout), "runuser", "-u", "dmzkit-device",
                           "--", AGENT, "--config", config], capture_output=True, text=True, check=False)


def kept(lab, device: Device) -> Kept:
    run = subprocess.run(["podman", "exec", device.host, "/opt/dmzkit/venv/bin/python", "-c", READ_CACHE, CONFIG],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-800:]
    cache = json.loads(run.stdout)
    for name in ("current", "candidate"):
        if cache[name] and cache[name][1] is not None:
            cache[name] = (cache[name][0], Secret(cache[name][1]))
    return Kept(cache)


def audit_verify(lab) -> subprocess.CompletedProcess[str]:
    """dmzkit-audit-verify on the database host, as its superuser over the
    socket, from this checkout (the database host has its Python packages,
    not the collection's environment)."""
    source = Path(__file__).resolve().parents[4] / "src/dmzkit_remote_access"
    lab[DB].host.run("rm -rf /run/dmzkit-verify && mkdir -p /run/dmzkit-verify")
    subprocess.run(["podman", "cp", str(source), f"{DB}:/run/dmzkit-verify/"], check=True)
    return subprocess.run(["podman", "exec", DB, "runuser", "-u", "postgres", "--", "env", "PYTHONPATH=/run/dmzkit-verify",
                           "PGHOST=/var/run/postgresql", "PGDATABASE=dmzkit", "python3", "-m",
                           "dmzkit_remote_access.audit_chain"], capture_output=True, text=True, check=False)


def psql(lab, statement: str) -> str:
    run = lab[DB].host.run("runuser -u postgres -- psql -d dmzkit -AtX -c %s", statement)
    assert run.rc == 0, run.stderr
    return run.stdout.strip()


def last_registration(lab, device: Device) -> dict:
    """The newest audit record of the device's registrations."""
    row = psql(lab, "SELECT json_build_object('source', host(source), 'outcome', outcome, 'detail', detail)"
                    f" FROM audit_log WHERE event = 'registration' AND subject = '{device.serial}'"
                    " ORDER BY id DESC LIMIT 1")
    assert row, f"no registration of {device.serial} in the audit log"
    return json.loads(row)


def vpn_login(lab, device: Device, server: str, password: str) -> bool:
    """The business login the agent makes, by hand: the SSL VPN's
    authentication with the device's certificate and this password."""
    run = lab[device.host].run_with_input(
        ["timeout", "30", "openconnect", "--authenticate", "--non-inter", "--passwd-on-stdin",
         f"--user={device.serial}", f"--certificate={PKI}/{device.serial}.crt", f"--sslkey={PKI}/{device.serial}.key",
         f"--cafile={PKI}/ca-chain.pem", f"https://{server}"], password + "\n")
    return run.returncode == 0


def im_login(lab, device: Device, password: str) -> bool:
    """The IM server's login (Prosody asks AAA) with the device's account,
    from the gateway, where the tunnels' traffic comes from."""
    run = lab[GW].run_with_input(["timeout", "30", "python3", "-c", XMPP_LOGIN, GW_CA], json.dumps(
        {"jid": f"{device.serial}@{IM_DOMAIN}", "password": password, "address": lab[IM].address("internal")}))
    assert run.returncode == 0, run.stderr[-800:]
    return json.loads(run.stdout)["logged_in"]
