"""AAA's password check settings: one JSON file written by the `aaa` role
and checked with `dmzkit-aaa --check` before it replaces the old one."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, FileSettings


@dataclass(frozen=True)
class Settings(FileSettings):
    db_host: str
    db_name: str
    db_user: str
    # libpq's password file (0600, FreeRADIUS's own): the password is never in the settings.
    db_passfile: str
    db_port: int = 5432
    # The CA chain and the issuing CA's CRL that verify the database's
    # certificate (TCP only), read for each connection.
    ca_chain: str = ""
    crl: str = ""
    # The collection's password policy, as at the IdP.
    lockout_attempts: int = 5
    lockout_seconds: float = 300.0
    # How long FreeRADIUS may wait for one check (an Argon2 check, a query or two).
    timeout: float = 5.0
    # The answers' spool (FreeRADIUS's linelog dmzkit_audit), and how often
    # the audit shipper looks for it when it was empty.
    audit_spool: str = ""
    audit_interval: float = 0.5
    # FreeRADIUS's lease server (127.0.0.1) for the account listener, the
    # file with its secret, and how long a lease lasts.
    accounts_port: int = 0
    accounts_secret: str = ""
    lease_seconds: float = 2.0

    def check(self) -> None:
        if not self.db_host.startswith("/") and not (self.ca_chain and self.crl):
            raise ConfigError("ca_chain and crl are needed to verify the database over TCP")
        if self.lockout_attempts < 1 or self.lockout_seconds <= 0:
            raise ConfigError("lockout_attempts and lockout_seconds must be positive")
        if not 0 < self.timeout <= 30:
            raise ConfigError(f"timeout must be more than 0 and at most 30 s, got {self.timeout}")
        if self.audit_spool and not self.audit_spool.startswith("/"):
            raise ConfigError(f"audit_spool must be an absolute path, got {self.audit_spool!r}")
        if not 0.05 <= self.audit_interval <= 10:
            raise ConfigError(f"audit_interval must be 0.05-10 s, got {self.audit_interval}")
        if not 0 <= self.accounts_port <= 65535:
            raise ConfigError(f"accounts_port must be a UDP port, got {self.accounts_port}")
        if not 0.3 <= self.lease_seconds <= 60:
            raise ConfigError(f"lease_seconds must be 0.3-60 s, got {self.lease_seconds}")
