"""The agent's JSON settings, written by the ssl_vpn_gateway role and
checked by `dmzkit-vpn-health --check` before they are written."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..config import ConfigError, FileSettings

UNIT = re.compile(r"[A-Za-z0-9@._:-]+\.service")


def address_port(value: str, name: str) -> tuple[ipaddress.IPv4Address, int]:
    address, _, port = value.rpartition(":")
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        raise ConfigError(f"{name} must be an IPv4 address:port, got {value!r}") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name} must be an IPv4 address:port, got {value!r}")
    return ip, int(port)


@dataclass(frozen=True)
class Service:
    """A systemd unit the VPN needs (ocserv, nginx)."""
    unit: str
    # address:port it must listen on (TCP, IPv4).
    listen: tuple[str, ...] = ()
    # A request its main process answers from its own loop, as argv (ocserv:
    # `occtl show status`); empty for none. Left unanswered for hang_after
    # while the unit's processes make no CPU progress, the service is hung.
    control: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings(FileSettings):
    # The management address and the agent's own port: never the VIP, never 443.
    listen: str
    certificate: str
    private_key: str
    ca_file: str
    crl_file: str
    # Common names of the host certificates (no OU: tls.host_name) that may
    # read the verdicts: the failover watchdogs'.
    clients: frozenset[str]
    services: tuple[Service, ...]
    # Seconds between checks, each sent as one report.
    interval: float = 0.1
    # How long systemd may be starting, stopping or reloading a unit before
    # that counts as down.
    restart_grace: float = 5.0
    # How long a control request may go unanswered, the unit's processes
    # making no CPU progress in its second half, before the service is hung.
    hang_after: float = 2.0

    def check(self) -> None:
        address_port(self.listen, "listen")
        if not self.clients or not all(self.clients):
            raise ConfigError("clients must name the certificates (their CN) of the watchdogs that may connect")
        if not self.services:
            raise ConfigError("services must name at least one systemd unit")
        for n, service in enumerate(self.services):
            if not UNIT.fullmatch(service.unit):
                raise ConfigError(f"services[{n}].unit must be a systemd service name, got {service.unit!r}")
            for m, listener in enumerate(service.listen):
                address_port(listener, f"services[{n}].listen[{m}]")
            if not all(service.control):
                raise ConfigError(f"services[{n}].control must be a list of non-empty strings (argv, no shell)")
        if len({s.unit for s in self.services}) != len(self.services):
            raise ConfigError("services must name each unit once")
        if not 0.02 <= self.interval <= 1.0:
            raise ConfigError(f"interval must be 0.02 to 1 s, got {self.interval}")
        if self.restart_grace <= 0:
            raise ConfigError(f"restart_grace must be positive, got {self.restart_grace}")
        if self.hang_after < 0.5:
            raise ConfigError(f"hang_after must be at least 0.5 s, got {self.hang_after}")
