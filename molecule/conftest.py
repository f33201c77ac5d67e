"""pytest fixtures shared by the Molecule verifiers.

Each scenario's hosts are lab containers; tests reach them with testinfra's
podman backend (one `podman exec` per command) and read their lab addresses
from the scenario's inventory, so a test names hosts, never addresses.
"""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import testinfra
from testinfra.host import Host

PROBE_TIMEOUT_S = 2


def ansible_json_env() -> dict[str, str]:
    """The environment for an Ansible command whose standard output is its
    JSON callback alone: callbacks enabled in the caller's environment
    (profile_tasks, timer, ...) would print around the JSON."""
    env = {name: value for name, value in os.environ.items() if name != "ANSIBLE_CALLBACKS_ENABLED"}
    return {**env, "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
            "ANSIBLE_NOCOLOR": "1"}


def scenario_inventory() -> str:
    return os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "inventory")


def module_results(pattern: str, module: str, args: str = "", *options: str) -> dict[str, dict]:
    """Each host's result of one module, run the way a user runs it:
    `ansible <pattern> -m <module>` against the scenario's inventory."""
    run = subprocess.run(
        ["ansible", pattern, "-i", scenario_inventory(), "-m", module, *(["-a", args] if args else []), *options],
        capture_output=True, text=True, check=False, env=ansible_json_env(),
    )
    if not run.stdout.strip():  # Ansible itself failed (its own errors go to stderr)
        raise RuntimeError(f"ansible {pattern} -m {module}: {run.stderr.strip()[-2000:]}")
    return json.loads(run.stdout)["plays"][0]["tasks"][0]["hosts"]


@dataclass(frozen=True)
class LabHost:
    name: str
    addresses: dict[str, str]
    host: Host

    def address(self, network: str) -> str:
        return self.addresses[network]

    def run_with_input(self, argv: list[str], data: str) -> subprocess.CompletedProcess[str]:
        """Run argv on the host with data on standard input, so secrets stay
        out of command lines (and out of test output)."""
        return subprocess.run(
            ["podman", "exec", "-i", self.name, *argv],
            input=data, capture_output=True, text=True, check=False,
        )

    def pings(self, address: str) -> bool:
        return self.host.run(f"ping -c 1 -W {PROBE_TIMEOUT_S} {address}").rc == 0

    def connects(self, address: str, port: int) -> bool:
        """Open a TCP connection from this host; False on refusal or timeout."""
        code = (
            "import socket,sys\n"
            "try:\n"
            f"    socket.create_connection(({address!r}, {port}), timeout={PROBE_TIMEOUT_S}).close()\n"
            "except OSError:\n"
            "    sys.exit(1)\n"
        )
        return self.host.run("python3 -c %s", code).rc == 0

    def tls_refusal(self, server: str, *options: str) -> str:
        """Open TLS to server (name:port) from this host with no client
        certificate, send nothing and return what openssl s_client reports.
        A TLS 1.3 server refuses after the client's Finished; a client that
        sends a request at once may see the connection drop instead of the
        alert, so this one only waits for the server's answer."""
        name = server.rsplit(":", 1)[0]
        answer = self.host.run(
            f"timeout 10 openssl s_client -connect {server} -servername {name} -ign_eof {' '.join(options)} </dev/null"
        )
        return answer.stdout + answer.stderr


class Lab:
    """The scenario's hosts, by inventory name."""

    def __init__(self, hostvars: dict[str, dict]) -> None:
        self._hosts = {
            name: LabHost(
                name=name,
                addresses={i["network"]: i["address"] for i in hostvars[name].get("lab_interfaces", [])},
                host=testinfra.get_host(f"podman://{name}"),
            )
            for name in sorted(hostvars)
        }

    def __getitem__(self, name: str) -> LabHost:
        return self._hosts[name]

    def __iter__(self) -> Iterator[LabHost]:
        return iter(self._hosts.values())


@pytest.fixture(scope="session")
def ansible_module():
    """module_results(pattern, module, args) for a test."""
    return module_results


@pytest.fixture(scope="session")
def lab() -> Lab:
    """The scenario's hosts with their lab addresses, templated by Ansible
    itself (addresses may refer to variables such as lab_ca_address)."""
    results = module_results("all", "ansible.builtin.debug", "msg={{ lab_interfaces | default([]) }}", "-c", "local")
    return Lab({host: {"lab_interfaces": result["msg"]} for host, result in results.items()})


@dataclass(frozen=True)
class PlaybookRun:
    rc: int
    output: str
    changed: dict[str, int]

    @property
    def total_changed(self) -> int:
        return sum(self.changed.values())


def run_converge(extra_vars: dict | None = None, check: bool = False, limit: str | None = None) -> PlaybookRun:
    """Run the scenario's converge playbook again, as Molecule does, with
    extra vars (and on the hosts in limit only); the JSON callback gives
    per-host change counts."""
    argv = [
        "ansible-playbook",
        "-i", scenario_inventory(),
        os.path.join(os.environ["MOLECULE_SCENARIO_DIRECTORY"], "converge.yml"),
        "-e", json.dumps(extra_vars or {}),
    ]
    if check:
        argv.append("--check")
    if limit:
        argv += ["--limit", limit]
    proc = subprocess.run(argv, capture_output=True, text=True, env=ansible_json_env(), check=False)
    try:
        stats = json.loads(proc.stdout).get("stats", {})
    except json.JSONDecodeError:
        stats = {}
    return PlaybookRun(
        rc=proc.returncode,
        output=proc.stdout + proc.stderr,
        changed={host: counts.get("changed", 0) for host, counts in stats.items()},
    )


@pytest.fixture(scope="session")
def converge():
    return run_converge


@pytest.fixture
def transient_service(lab: Lab) -> Iterator:
    """Run a throw-away listening program on a lab host as a transient
    systemd unit, wait until its port listens, stop it afterwards."""
    started: list[tuple[LabHost, str]] = []

    def start(host_name: str, unit: str, command: str, port: int) -> None:
        target = lab[host_name]
        target.host.run(f"systemctl stop {unit}")
        target.host.run_test(f"systemd-run --unit {unit} --collect {command}")
        target.host.run_test(f"timeout 10 sh -c 'until ss -ltn | grep -q :{port}\\ ; do sleep 0.1; done'")
        started.append((target, unit))

    yield start
    for target, unit in started:
        target.host.run(f"systemctl stop {unit}")


@pytest.fixture
def tcp_listener(transient_service) -> Iterator:
    """Start a throw-away TCP listener on a lab host."""

    def start(host_name: str, port: int) -> None:
        transient_service(host_name, f"verify-listener-{port}",
                          f"python3 -m http.server --bind 0.0.0.0 {port}", port)

    yield start
