"""The watchdog's configuration: one JSON file, validated before anything runs.

The Ansible module `failover_watchdog` writes the file and calls
`dmzkit-failover-watchdog check-config` on it before it replaces the old one,
so a bad value is refused by the same code that would run it. The standby
NIC's file (standby.py) shares the checks of the settings both have.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..config import PARSE, ConfigError, FileSettings, check_listen, typed
from ..net.arp import unicast_mac

# The kernel's own tables are 253-255 (default, main, local).
ROUTING_TABLES = range(1, 253)


@dataclass(frozen=True)
class Profile:
    """How often to probe, how many silent probes make the primary dead, and
    how long the last probe's reply may take (ARP is answered by the kernel,
    in well under a millisecond on a LAN; the budget covers a busy host)."""

    name: str
    interval: float
    misses: int
    rtt_budget: float

    @property
    def dead_time(self) -> float:
        return self.interval * self.misses


# failover.md §8.3: conservative is VRRP-like, fast needs real-time scheduling.
PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("conservative", interval=1.0, misses=3, rtt_budget=0.05),
    Profile("default", interval=0.1, misses=3, rtt_budget=0.02),
    Profile("fast", interval=0.05, misses=3, rtt_budget=0.01),
)}
# Below this, Python's scheduling jitter alone causes false takeovers (failover.md §6).
MIN_INTERVAL = 0.02


class FenceMode(StrEnum):
    NONE = "none"
    BEST_EFFORT = "best_effort"
    REQUIRED = "required"


class Failback(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


def vip_interface(value: Any, name: str) -> ipaddress.IPv4Interface:
    """An IPv4 address with its prefix length, which must be written out:
    the prefix decides the VIP's subnet and its routes."""
    if not isinstance(value, str) or "/" not in value:
        raise ConfigError(f"{name} needs its prefix length, e.g. 198.18.1.10/24")
    try:
        return ipaddress.IPv4Interface(value)
    except ValueError as e:
        raise ConfigError(f"{name}: {e}") from None


def mac_addresses(value: Any, name: str) -> frozenset[str]:
    """The primary's MACs: the only senders whose ARP counts as its sign of
    life or makes an active backup yield the VIP (ARP is unauthenticated;
    issue 15, finding 6). An empty list is refused, never read as "trust
    any MAC". Nor are they learnt: a learnt MAC is only as good as the frame
    it was learnt from, and every frame on the DMZ may be forged; the role
    reads them from the gateway's own facts instead."""
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{name} must list the primary's MAC addresses as aa:bb:cc:dd:ee:ff")
    try:
        return frozenset(unicast_mac(m) for m in value)
    except ValueError as e:
        raise ConfigError(f"{name} must list the primary's MAC addresses as aa:bb:cc:dd:ee:ff: {e}") from None


def check_routing_table(table: int | None, name: str) -> None:
    if table is not None and table not in ROUTING_TABLES:
        raise ConfigError(f"{name} must be 1..252, got {table}")


def check_argv(argv: tuple[str, ...], name: str) -> None:
    if not all(argv):
        raise ConfigError(f"{name} must be a list of non-empty strings (argv, no shell)")


@dataclass(frozen=True)
class Fence:
    mode: FenceMode = FenceMode.NONE
    off: tuple[str, ...] = ()
    on: tuple[str, ...] = ()
    timeout: float = 5.0


@dataclass(frozen=True)
class Health:
    """The primary's VPN health agent: its port on the primary's management
    address, and the files of mutual TLS (the agent's certificate must name
    that address; the watchdog's is a host certificate of the same CA)."""
    port: int
    ca_file: str
    crl_file: str
    certificate: str
    private_key: str
    # Consecutive "down" reports that make the VPN dead: at least 2, so one
    # report never moves the address.
    down_reports: int = 2
    # An authenticated connection with no report for this long, while the
    # primary's host answers ARP, is a frozen primary (its kernel answers,
    # no process runs). Longer than the agent's systemd watchdog (1 s), so an
    # agent stalled alone is restarted (its connection lost: no verdict)
    # before it counts as a frozen host.
    silent_after: float = 2.0

    def check(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"health.port must be a TCP port, got {self.port}")
        if self.down_reports < 2:
            raise ConfigError("health.down_reports must be at least 2: one report must never move the address")
        if not 0.5 <= self.silent_after <= 60:
            raise ConfigError(f"health.silent_after must be 0.5 to 60 s, got {self.silent_after}")
        if not all((self.ca_file, self.crl_file, self.certificate, self.private_key)):
            raise ConfigError("health needs ca_file, crl_file, certificate and private_key")


@dataclass(frozen=True)
class Damping:
    max_takeovers: int = 3
    window: float = 600.0
    min_active: float = 10.0


@dataclass(frozen=True)
class Timing:
    """The keys that choose the probe timing: a profile by name, each of its
    values overridden when given."""
    profile: str = "default"
    interval: float | None = None
    misses: int | None = None
    rtt_budget: float | None = None

    def resolved(self) -> Profile:
        if self.profile not in PROFILES:
            raise ConfigError(f"profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        base = PROFILES[self.profile]
        profile = Profile(
            name=base.name,
            interval=base.interval if self.interval is None else self.interval,
            misses=base.misses if self.misses is None else self.misses,
            rtt_budget=base.rtt_budget if self.rtt_budget is None else self.rtt_budget,
        )
        if profile.interval < MIN_INTERVAL:
            raise ConfigError(f"interval below {MIN_INTERVAL} s is refused: scheduling jitter makes false takeovers")
        if profile.misses < 2:
            raise ConfigError("misses must be at least 2: one lost probe must never move the address")
        if profile.rtt_budget <= 0:
            raise ConfigError(f"rtt_budget must be positive, got {profile.rtt_budget}")
        if profile.rtt_budget >= profile.interval:
            raise ConfigError("rtt_budget must be shorter than the interval: a reply is due before the next probe")
        return profile


TIMING = frozenset(f for f in Timing.__dataclass_fields__)
# on_forged_claim: an unknown MAC claimed the VIP or answered for the primary's
# management address (at most once per DEFEND_INTERVAL).
HOOK_EVENTS = ("on_takeover", "on_handback", "on_yield", "on_fault", "on_conflict", "on_forged_claim")
# Seconds that must be more than zero.
POSITIVE = ("witness_timeout", "hold_down", "fault_recovery", "refresh_interval",
            "fence.timeout", "damping.window")


@dataclass(frozen=True)
class Settings(FileSettings):
    interface: str
    vip: ipaddress.IPv4Interface = field(metadata={PARSE: vip_interface})
    primary_macs: frozenset[str] = field(metadata={PARSE: mac_addresses})
    primary_mgmt: ipaddress.IPv4Address
    witness: ipaddress.IPv4Address
    # From the keys of Timing (from_dict).
    profile: Profile = PROFILES["default"]
    # Replies from the VIP leave through the standby NIC by the policy rule
    # `from VIP lookup routing_table`; that table's routes go with the VIP
    # (the kernel drops them when the NIC's last address goes), so they are
    # put back at every takeover.
    routing_table: int | None = None
    gateway: ipaddress.IPv4Address | None = None
    vip6: ipaddress.IPv6Interface | None = None
    vip6_is_router: bool = False
    # The primary's VPN health agent (vpn_health) on its management address:
    # "host up, VPN dead" counts against the primary only on the agent's
    # positive evidence, and only when a fence can take the VIP from it.
    health: Health | None = None
    witness_timeout: float = 1.0
    failback: Failback = Failback.AUTO
    hold_down: float = 30.0
    fault_recovery: float = 3.0
    refresh_interval: float = 60.0
    damping: Damping = field(default_factory=Damping)
    fence: Fence = field(default_factory=Fence)
    services: tuple[str, ...] = ()
    hooks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    metrics_listen: str = "127.0.0.1:9468"
    state_dir: str = "/run/dmzkit-failover-watchdog"

    @property
    def profile_name(self) -> str:
        return self.profile.name

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Settings:
        timing = typed(Timing, {k: v for k, v in raw.items() if k in TIMING})
        settings = typed(cls, {k: v for k, v in raw.items() if k not in TIMING} | {"profile": timing.resolved()})
        settings.check()
        return settings

    def check(self) -> None:
        for name in POSITIVE:
            owner, _, key = name.rpartition(".")
            value = getattr(getattr(self, owner) if owner else self, key)
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        if self.vip.ip in (self.primary_mgmt, self.witness):
            raise ConfigError("primary_mgmt and witness must differ from the vip: it cannot probe an address it may hold")
        for name in ("primary_mgmt", "witness"):
            # ARP probes reach the segment only.
            if getattr(self, name) not in self.vip.network:
                raise ConfigError(f"{name} {getattr(self, name)} is not in the VIP's subnet {self.vip.network}")
        check_routing_table(self.routing_table, "routing_table")
        if self.gateway is not None and self.gateway not in self.vip.network:
            raise ConfigError(f"gateway {self.gateway} must be in the VIP's subnet {self.vip.network}")
        if self.gateway is not None and self.routing_table is None:
            raise ConfigError("gateway needs routing_table: the default route lives in the VIP's own table")
        check_argv(self.fence.off, "fence.off")
        check_argv(self.fence.on, "fence.on")
        if self.fence.mode is not FenceMode.NONE and not self.fence.off:
            raise ConfigError(f"fence.mode {self.fence.mode} needs fence.off, the command that fences the primary")
        if self.damping.max_takeovers < 1 or self.damping.min_active < 0:
            raise ConfigError("damping.max_takeovers must be >= 1 and damping.min_active >= 0")
        if set(self.hooks) - set(HOOK_EVENTS):
            raise ConfigError(f"hooks may only name {', '.join(HOOK_EVENTS)}")
        for event, argv in self.hooks.items():
            check_argv(argv, f"hooks.{event}")
        if self.health is not None:
            self.health.check()
        if not all(self.services):
            raise ConfigError("services must be a list of systemd unit names")
        check_listen(self, "metrics_listen")
