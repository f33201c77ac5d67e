"""A fake VPN service for the agent: a process with a listener and a control
socket, run by the tests; systemd's view of it made up from the process; a
throw-away PKI shaped like the ca role's. The watchdog's namespace tests use
them too (they import this module by path)."""
from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import testpki
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dmzkit_remote_access.vpn_health.agent import UNIT_TIMEOUT
from dmzkit_remote_access.vpn_health.checks import UnitState

# ocserv's main process, as far as the agent can tell: it listens, and it
# answers a control request from its own loop. SIGUSR1 makes it hang (no
# answers, no CPU: a deadlock), SIGUSR2 makes it spin (no answers, all CPU:
# overloaded).
FAKE_MAIN = r"""
import select, signal, socket, sys
mode = "serve"
def hang(*_):
    global mode
    mode = "hang"
def spin(*_):
    global mode
    mode = "spin"
signal.signal(signal.SIGUSR1, hang)
signal.signal(signal.SIGUSR2, spin)
tcp = socket.socket()
tcp.bind(("127.0.0.1", 0))
tcp.listen(16)
control = socket.socket(socket.AF_UNIX)
control.bind(sys.argv[1])
control.listen(16)
print(tcp.getsockname()[1], flush=True)
while True:
    if mode == "hang":
        signal.pause()
        continue
    if mode == "spin":
        sum(range(100000))
        continue
    ready, _, _ = select.select([tcp, control], [], [], 0.05)
    for s in ready:
        c, _ = s.accept()
        if s is control:
            c.recv(100)
            c.sendall(b"ok\n")
        c.close()
"""
# occtl's part: ask the control socket, exit 0 on an answer.
FAKE_CONTROL = ("import socket, sys\n"
                "s = socket.socket(socket.AF_UNIX)\n"
                "s.connect(sys.argv[1])\n"
                "s.sendall(b'status\\n')\n"
                "sys.exit(0 if s.recv(10) else 1)\n")


@dataclass
class FakeService:
    process: subprocess.Popen[bytes]
    port: int
    control_socket: str

    @property
    def listener(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def control(self) -> list[str]:
        return [sys.executable, "-c", FAKE_CONTROL, self.control_socket]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def start_service(control_socket: str, prefix: Sequence[str] = ()) -> FakeService:
    """The fake main process (`prefix`: e.g. ip netns exec NAME, which execs
    it under the same pid); it prints its TCP port once it listens."""
    process = subprocess.Popen([*prefix, sys.executable, "-c", FAKE_MAIN, control_socket], stdout=subprocess.PIPE)
    assert process.stdout is not None
    return FakeService(process=process, port=int(process.stdout.readline()), control_socket=control_socket)


@dataclass
class FakeUnits:
    """systemd, as far as the agent asks: a unit is active with its process's
    pid while the process runs, failed after; `override` says otherwise."""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    override: dict[str, UnitState] = field(default_factory=dict)
    asked: int = 0
    slow: bool = False  # systemd busy: no answer within the agent's limit

    async def states(self, units: Sequence[str]) -> dict[str, UnitState]:
        self.asked += 1
        if self.slow:
            await asyncio.sleep(UNIT_TIMEOUT)
            raise TimeoutError
        states = {}
        for unit in units:
            if unit in self.override:
                states[unit] = self.override[unit]
            elif unit in self.processes:
                process = self.processes[unit]
                alive = process.poll() is None
                states[unit] = (UnitState("active", "running", False, process.pid) if alive
                                else UnitState("failed", "failed", False, 0))
        return states


@dataclass
class Pki:
    where: Path
    ca_key: object
    ca: x509.Certificate

    def __post_init__(self) -> None:
        (self.where / "ca.pem").write_bytes(testpki.pem(self.ca))
        self.crl(revoked=())

    @property
    def ca_file(self) -> str:
        return str(self.where / "ca.pem")

    @property
    def crl_file(self) -> str:
        return str(self.where / "crl.pem")

    def crl(self, revoked: Sequence[int]) -> None:
        crl = testpki.make_crl(self.ca_key, self.ca, testpki.NOW - dt.timedelta(hours=1),
                               testpki.NOW + dt.timedelta(days=1), serials=tuple(revoked) or (1234,))
        (self.where / "crl.pem").write_bytes(testpki.pem(crl))

    def leaf(self, name: str, *, common_name: str | None = None, unit: str | None = None, server: bool = False,
             address: str | None = None, ca: tuple[object, x509.Certificate] | None = None) -> tuple[str, str, int]:
        """Certificate and key files (and the serial) of a leaf of this CA
        (or of `ca`): a host's (no OU) unless `unit` is given; a server's
        names `address` as its IP SAN."""
        ca_key, ca_cert = ca or (self.ca_key, self.ca)
        if address is None:
            key, cert = testpki.make_leaf(ca_key, ca_cert, name, server=server, unit=unit, common_name=common_name)
        else:
            key, cert = ip_server(ca_key, ca_cert, name, address)
        cert_file, key_file = self.where / f"{name}.pem", self.where / f"{name}.key"
        cert_file.write_bytes(testpki.pem(cert))
        testpki.write_key(key_file, key)
        return str(cert_file), str(key_file), cert.serial_number


def ip_server(ca_key, ca_cert: x509.Certificate, name: str, address: str):  # type: ignore[no-untyped-def]
    """A server certificate naming an IP address, as the ca role issues the agent's."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(testpki.NOW - dt.timedelta(days=1)).not_valid_after(testpki.NOW + dt.timedelta(days=7))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert
