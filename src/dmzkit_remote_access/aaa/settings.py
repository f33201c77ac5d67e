"""AAA's configuration: one JSON file written by the `aaa` role and checked
with `dmzkit-aaa --check` before it replaces the old one."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import ConfigError, FileSettings

# What a profile's name may be: it travels as a RADIUS Class and names an
# ocserv group file and a strongSwan connection.
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
# How each kind of NAS reads the answer (freeradius.answer).
NAS_TYPES = ("ocserv", "strongswan", "im")


@dataclass(frozen=True)
class Profile:
    """What a user may do through a gateway: the access group (which internal
    networks) and the rate group, named together, and whether IM is allowed."""
    name: str
    # userdb groups; a member of any of them has this profile.
    groups: list[str]
    im: bool = False


@dataclass(frozen=True)
class Settings(FileSettings):
    db_host: str
    db_name: str
    db_user: str
    # libpq's password file (0600, FreeRADIUS's own): the password is never in the settings.
    db_passfile: str
    # The first profile (in this order) whose groups the user is in decides;
    # a user in none is refused.
    profiles: list[Profile]
    db_port: int = 5432
    # The CA chain and CRL that verify the database's certificate (TCP only).
    ca_chain: str = ""
    crl: str = ""
    lockout_attempts: int = 5
    lockout_seconds: float = 300.0
    # Argon2 checks at once, each holding its hash's memory (64 MiB).
    checks: int = 2
    # How long a password once checked against a stored hash is taken again
    # without a new Argon2 check (0: never), and how many are remembered.
    verified_seconds: float = 300.0
    verified_entries: int = 100000

    def check(self) -> None:
        if not self.profiles:
            raise ConfigError("profiles: at least one is needed, or nobody is let in")
        names = [p.name for p in self.profiles]
        for name in names:
            if not NAME.match(name):
                raise ConfigError(f"profiles: name {name!r} must be 1-32 of a-z, 0-9, '_', '-'")
        if len(set(names)) != len(names):
            raise ConfigError("profiles: names must be unique")
        for profile in self.profiles:
            if not profile.groups:
                raise ConfigError(f"profiles: {profile.name} names no group")
        if not self.db_host.startswith("/") and not self.ca_chain:
            raise ConfigError("ca_chain is needed to verify the database over TCP")
        if self.lockout_attempts < 1 or self.lockout_seconds <= 0:
            raise ConfigError("lockout_attempts and lockout_seconds must be positive")
        if not 1 <= self.checks <= 16:
            raise ConfigError(f"checks must be 1-16, got {self.checks}")
        if not 0 <= self.verified_seconds <= 3600:
            raise ConfigError(f"verified_seconds must be 0-3600, got {self.verified_seconds}")
        if self.verified_entries < 1:
            raise ConfigError("verified_entries must be positive")

    def profile_of(self, groups: list[str]) -> Profile | None:
        member = set(groups)
        return next((p for p in self.profiles if member.intersection(p.groups)), None)
