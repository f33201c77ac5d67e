"""The registration service's settings: one JSON file written by the
`registration` role and checked with `dmzkit-registration --check` before it
replaces the old one."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, FileSettings, check_listen


@dataclass(frozen=True)
class Settings(FileSettings):
    # host:port the devices connect to (TLS 1.3, a certificate on each side).
    listen: str
    certificate: str
    private_key: str
    # The CA chain that issues the devices' certificates, and its CRL.
    ca_chain: str
    crl: str
    # The key that seals a pending grant's password in the user database
    # (32 bytes, hex, in a file of its own): the same on every registration server.
    seal_key_file: str
    # Redis, for the nonces seen (a Unix socket; the password in a file).
    store_socket: str
    store_user: str
    store_password_file: str
    # The user database (privilege `registration`), over TLS verified with
    # ca_chain and crl unless a local socket; the password in libpq's file.
    db_host: str
    db_name: str
    db_user: str
    db_passfile: str
    db_port: int = 5432
    # Where Prometheus scrapes the service's metrics (GET /metrics).
    metrics_listen: str = "127.0.0.1:9479"
    # Seconds a grant waits for its ack before its password is dropped.
    commit_by: int = 60
    # How far a device's clock may be from ours, and so how long a nonce is
    # kept: twice that, so a reg is either too old or its nonce is known.
    skew_seconds: int = 120
    # Registrations one device may make in a minute; beyond, `err rate`
    # says when it may again (a device registers when it starts).
    rate_per_minute: int = 12
    # Registrations past TLS under way at once; beyond, `err busy`.
    max_registrations: int = 256
    # Deadlines: one frame, and a whole registration.
    frame_seconds: float = 5.0
    session_seconds: float = 10.0

    def check(self) -> None:
        check_listen(self, "listen")
        check_listen(self, "metrics_listen")
        if not 1 <= self.commit_by <= 3600:
            raise ConfigError(f"commit_by must be 1-3600 s, got {self.commit_by}")
        if not 1 <= self.skew_seconds <= 3600:
            raise ConfigError(f"skew_seconds must be 1-3600 s, got {self.skew_seconds}")
        if not 1 <= self.rate_per_minute <= 100_000:
            raise ConfigError(f"rate_per_minute must be 1-100000, got {self.rate_per_minute}")
        if not 1 <= self.max_registrations <= 100_000:
            raise ConfigError(f"max_registrations must be 1-100000, got {self.max_registrations}")
        if not 0 < self.frame_seconds <= self.session_seconds <= 60:
            raise ConfigError("frame_seconds and session_seconds must be positive, the first no more than the"
                              " second, the second at most 60")
        if not self.db_host.startswith("/") and not (self.ca_chain and self.crl):
            raise ConfigError("ca_chain and crl are needed to verify the database over TCP")
