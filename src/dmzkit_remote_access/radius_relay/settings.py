"""The relay's JSON settings, written by the radius_relay role and checked by
`dmzkit-radius-relay --check` before they are written."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..config import ConfigError, FileSettings


@dataclass(frozen=True)
class Settings(FileSettings):
    # AAA, and the ports it answers on.
    server: str
    # Files holding the secrets (the relay's own, 0600): AAA's for this host,
    # and the one the NAS on this host shares with the relay.
    server_secret_file: str
    local_secret_file: str
    auth_port: int = 1812
    acct_port: int = 1813
    # Where the NAS sends: the loopback only.
    listen_address: str = "127.0.0.1"
    listen_auth_port: int = 1812
    listen_acct_port: int = 1813
    # How long an unanswered request is kept for the NAS's retransmissions.
    timeout: float = 10.0

    def check(self) -> None:
        try:
            ipaddress.IPv4Address(self.server)
            listen = ipaddress.IPv4Address(self.listen_address)
        except ValueError as e:
            raise ConfigError(f"server and listen_address must be IPv4 addresses: {e}") from None
        if not listen.is_loopback:
            raise ConfigError(f"listen_address must be a loopback address, got {self.listen_address}")
        ports = (self.auth_port, self.acct_port, self.listen_auth_port, self.listen_acct_port)
        if not all(0 < port < 65536 for port in ports) or self.listen_auth_port == self.listen_acct_port:
            raise ConfigError("ports must be 1-65535, and the two listening ports differ")
        if not 0 < self.timeout <= 60:
            raise ConfigError(f"timeout must be more than 0 and at most 60 s, got {self.timeout}")
