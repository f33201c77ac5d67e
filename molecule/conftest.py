"""pytest fixtures and hooks shared by the Molecule verifiers.

Each scenario's hosts are lab containers; tests reach them with testinfra's
podman backend (one `podman exec` per command) and read their lab addresses
from the scenario's inventory, so a test names hosts, never addresses.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from pathlib import PurePosixPath

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
    # One task, but mitogen's strategy may report each host's result as a
    # task of its own.
    return {host: result for task in json.loads(run.stdout)["plays"][0]["tasks"] for host, result in task["hosts"].items()}


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


@pytest.fixture(scope="session")
def hostvar() -> Callable[[str, str], Any]:
    """A variable as the scenario's inventory gives it to a host, or an
    expression of it (`aaa_clients | length`), templated by Ansible: the
    setting a test measures the lab against."""

    def value(host: str, name: str) -> Any:
        return module_results(host, "ansible.builtin.debug", f"var='{name}'", "-c", "local")[host][name]

    return value


@dataclass(frozen=True)
class PlaybookRun:
    rc: int
    output: str
    stats: dict[str, dict[str, int]]

    @property
    def changed(self) -> dict[str, int]:
        return {host: counts.get("changed", 0) for host, counts in self.stats.items()}

    @property
    def total_changed(self) -> int:
        return sum(self.changed.values())

    def hosts_with(self, *counts: str) -> dict[str, dict[str, int]]:
        """The hosts whose counts (changed, failures, ignored, ...) are not
        zero, with those counts."""
        return {
            host: {name: stats.get(name, 0) for name in counts if stats.get(name, 0)}
            for host, stats in self.stats.items()
            if any(stats.get(name, 0) for name in counts)
        }


def run_converge(extra_vars: dict | None = None, check: bool = False, limit: str | None = None,
                 playbook: str = "converge.yml") -> PlaybookRun:
    """Run one of the configuration's playbooks (converge.yml, as Molecule
    does, unless told otherwise) with extra vars (and on the hosts in limit
    only); the JSON callback gives per-host counts. Extra vars go through a
    0600 file, so values such as a test user's passphrase never stand on a
    command line."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="dmzkit-verify-") as extra:
        json.dump(extra_vars or {}, extra)
        extra.flush()
        argv = [
            "ansible-playbook",
            "-i", scenario_inventory(),
            os.path.join(os.environ["MOLECULE_SCENARIO_DIRECTORY"], playbook),
            "-e", f"@{extra.name}",
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
    # A run that passed with no recap would make every count look like 0.
    if proc.returncode == 0 and not stats:
        raise RuntimeError(f"ansible-playbook {playbook} printed no recap: {(proc.stdout + proc.stderr)[-2000:]}")
    return PlaybookRun(rc=proc.returncode, output=proc.stdout + proc.stderr, stats=stats)


@pytest.fixture(scope="session")
def converge():
    return run_converge


@dataclass(frozen=True)
class LabUser:
    name: str
    passphrase: str


@pytest.fixture
def throwaway_user(converge):
    """Issue a user certificate for one test alone, for steps that cannot be
    undone (a revocation), so the lab's own users stay as converge left them.
    The user's PKCS#12 bundle lands in the lab's secrets and, when limit
    includes the client and the playbook deploys it, on the client too."""

    def issue(name: str, group: str, limit: str, playbook: str = "converge.yml") -> LabUser:
        user = LabUser(name, secrets.token_urlsafe(18))
        run = converge({"lab_test_users": [{"name": name, "email": f"{name}@lab.dmzkit.test", "group": group,
                                            "passphrase": user.passphrase}]},
                       limit=limit, playbook=playbook)
        assert run.rc == 0, run.output[-3000:]
        return user

    return issue


def _journey(nodeid: str) -> str:
    """A journey is a directory under the configuration's tests/; tests at
    its top check the lab as a whole."""
    parts = PurePosixPath(nodeid.split("::")[0]).parts
    below = parts[parts.index("tests") + 1:]
    return below[0] if len(below) > 1 else "lab"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "irreversible: a step that cannot be undone (a revocation); runs after every other test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The lab checks first, then each journey in file order, then every
    irreversible step (a stable sort: each journey keeps its own order)."""
    items.sort(key=lambda item: (_journey(item.nodeid) != "lab", item.get_closest_marker("irreversible") is not None))


# Per journey: seconds spent (setup, call and teardown) and each test's outcome.
_journeys: dict[str, dict] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    journey = _journeys.setdefault(_journey(report.nodeid), {"seconds": 0.0, "outcomes": {}})
    journey["seconds"] += report.duration
    outcomes = journey["outcomes"]
    if report.failed:
        outcomes[report.nodeid] = "failed"
    elif report.skipped and outcomes.get(report.nodeid) != "failed":
        outcomes[report.nodeid] = "skipped"
    elif report.when == "call":
        outcomes.setdefault(report.nodeid, "passed")


def pytest_terminal_summary(terminalreporter) -> None:
    """One line per journey; tests/molecule-all.sh collects them for the budget."""
    for name, journey in _journeys.items():
        tally = Counter(journey["outcomes"].values())
        terminalreporter.write_line(
            f"journey {name}: {tally['passed']} passed, {tally['failed']} failed, {tally['skipped']} skipped"
            f" in {journey['seconds']:.0f} s")


@pytest.fixture
def transient_service(lab: Lab) -> Iterator:
    """Run a throw-away listening program on a lab host as a transient
    systemd unit, wait until its port listens, stop it afterwards."""
    started: list[tuple[LabHost, str]] = []

    def start(host_name: str, unit: str, command: str, port: int, address: str = "") -> None:
        """address: where it listens, when other programs listen on the
        same port elsewhere on the host."""
        target = lab[host_name]
        target.host.run(f"systemctl stop {unit}")
        target.host.run_expect([0], f"systemd-run --unit {unit} --collect {command}")
        target.host.run_expect([0], f"timeout 10 sh -c 'until ss -ltn | grep -qF \"{address}:{port} \"; do sleep 0.1; done'")
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
