"""The watchdog's configuration: one JSON file, validated before anything runs.

The Ansible module `failover_watchdog` writes the file and calls
`dmzkit-failover-watchdog check-config` on it before it replaces the old one,
so a bad value is refused by the same code that would run it.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, fields
from enum import StrEnum
from collections.abc import Callable
from typing import Any, TypeVar

from ..config import ConfigError, load_object

T = TypeVar("T")

MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True)
class Profile:
    """How often to probe, how many silent probes make the primary dead, and
    how long the last probe's reply may take (ARP is answered by the kernel,
    in well under a millisecond on a LAN; the budget covers a busy host)."""

    interval: float
    misses: int
    rtt_budget: float

    @property
    def dead_time(self) -> float:
        return self.interval * self.misses


# failover.md §8.3: conservative is VRRP-like, fast needs real-time scheduling.
PROFILES: dict[str, Profile] = {
    "conservative": Profile(interval=1.0, misses=3, rtt_budget=0.05),
    "default": Profile(interval=0.1, misses=3, rtt_budget=0.02),
    "fast": Profile(interval=0.05, misses=3, rtt_budget=0.01),
}
# Below this, Python's scheduling jitter alone causes false takeovers (failover.md §6).
MIN_INTERVAL = 0.02


class FenceMode(StrEnum):
    NONE = "none"
    BEST_EFFORT = "best_effort"
    REQUIRED = "required"


class Failback(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


@dataclass(frozen=True)
class Fence:
    mode: FenceMode = FenceMode.NONE
    off: tuple[str, ...] = ()
    on: tuple[str, ...] = ()
    timeout: float = 5.0


@dataclass(frozen=True)
class Damping:
    max_takeovers: int = 3
    window: float = 600.0
    min_active: float = 10.0


@dataclass(frozen=True)
class Settings:
    interface: str
    vip: ipaddress.IPv4Interface
    primary_macs: frozenset[str]
    primary_mgmt: ipaddress.IPv4Address
    witness: ipaddress.IPv4Address
    profile: Profile
    profile_name: str = "default"
    # Replies from the VIP leave through the standby NIC by the policy rule
    # `from VIP lookup routing_table`; that table's routes go with the VIP
    # (the kernel drops them when the NIC's last address goes), so they are
    # put back at every takeover.
    routing_table: int | None = None
    gateway: ipaddress.IPv4Address | None = None
    vip6: ipaddress.IPv6Interface | None = None
    vip6_is_router: bool = False
    # The primary's VPN port on its management address: "host up, VPN dead"
    # only counts against the primary when a fence can take the VIP from it.
    # With app_server_name the probe is a TLS handshake (certificate checked
    # against app_ca_file), so a front end that still accepts TCP while the
    # VPN server behind it is dead or frozen does not pass for alive.
    app_port: int | None = None
    app_interval: float = 1.0
    app_server_name: str | None = None
    app_ca_file: str | None = None
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

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Settings:
        try:
            return _parse(raw)
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(_describe(e)) from None

    @classmethod
    def load(cls, path: str) -> Settings:
        return cls.from_dict(load_object(path))


HOOK_EVENTS = ("on_takeover", "on_handback", "on_yield", "on_fault", "on_conflict")


def _describe(e: Exception) -> str:
    if isinstance(e, KeyError):
        return f"missing setting {e.args[0]!r}"
    return str(e)


def _argv(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(a, str) and a for a in value):
        raise ConfigError(f"{name} must be a list of non-empty strings (argv, no shell)")
    return tuple(value)


def _parsed(parse: Callable[[Any], T], raw: dict[str, Any], name: str) -> T:
    try:
        return parse(raw[name])
    except ValueError as e:
        raise ConfigError(f"{name}: {e}") from None


def _positive(raw: dict[str, Any], name: str, default: float) -> float:
    value = float(raw.get(name, default))
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    return value


def _profile(raw: dict[str, Any]) -> tuple[str, Profile]:
    name = raw.get("profile", "default")
    if name not in PROFILES:
        raise ConfigError(f"profile must be one of {', '.join(PROFILES)}, got {name!r}")
    base = PROFILES[name]
    profile = Profile(
        interval=float(raw.get("interval", base.interval)),
        misses=int(raw.get("misses", base.misses)),
        rtt_budget=_positive(raw, "rtt_budget", base.rtt_budget),
    )
    if profile.interval < MIN_INTERVAL:
        raise ConfigError(f"interval below {MIN_INTERVAL} s is refused: scheduling jitter makes false takeovers")
    if profile.misses < 2:
        raise ConfigError("misses must be at least 2: one lost probe must never move the address")
    if profile.rtt_budget >= profile.interval:
        raise ConfigError("rtt_budget must be shorter than the interval: a reply is due before the next probe")
    return name, profile


def _parse(raw: dict[str, Any]) -> Settings:
    unknown = set(raw) - _KNOWN
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    name, profile = _profile(raw)
    vip = _parsed(ipaddress.IPv4Interface, raw, "vip")
    if vip.network.prefixlen == 32 and "/" not in raw["vip"]:
        raise ConfigError("vip needs its prefix length, e.g. 198.18.1.10/24")
    macs = frozenset(str(m).lower() for m in raw["primary_macs"])
    if not macs or not all(MAC_RE.match(m) for m in macs):
        raise ConfigError("primary_macs must list the primary's MAC addresses as aa:bb:cc:dd:ee:ff")
    mgmt = _parsed(ipaddress.IPv4Address, raw, "primary_mgmt")
    witness = _parsed(ipaddress.IPv4Address, raw, "witness")
    if vip.ip in (mgmt, witness):
        raise ConfigError("primary_mgmt and witness must differ from the vip: it cannot probe an address it may hold")
    vip6 = _parsed(ipaddress.IPv6Interface, raw, "vip6") if raw.get("vip6") else None
    gateway = _parsed(ipaddress.IPv4Address, raw, "gateway") if raw.get("gateway") else None
    if gateway is not None and gateway not in vip.network:
        raise ConfigError(f"gateway {gateway} must be in the VIP's subnet {vip.network}")
    table = raw.get("routing_table")
    if table is not None and not 1 <= int(table) <= 252:
        raise ConfigError(f"routing_table must be 1..252, got {table}")
    if gateway is not None and table is None:
        raise ConfigError("gateway needs routing_table: the default route lives in the VIP's own table")
    fence_raw = raw.get("fence", {})
    fence = Fence(
        mode=FenceMode(fence_raw.get("mode", "none")),
        off=_argv(fence_raw.get("off", []), "fence.off"),
        on=_argv(fence_raw.get("on", []), "fence.on"),
        timeout=_positive(fence_raw, "timeout", 5.0),
    )
    if fence.mode is not FenceMode.NONE and not fence.off:
        raise ConfigError(f"fence.mode {fence.mode} needs fence.off, the command that fences the primary")
    damping_raw = raw.get("damping", {})
    damping = Damping(
        max_takeovers=int(damping_raw.get("max_takeovers", 3)),
        window=_positive(damping_raw, "window", 600.0),
        min_active=float(damping_raw.get("min_active", 10.0)),
    )
    if damping.max_takeovers < 1 or damping.min_active < 0:
        raise ConfigError("damping.max_takeovers must be >= 1 and damping.min_active >= 0")
    hooks_raw = raw.get("hooks", {})
    if set(hooks_raw) - set(HOOK_EVENTS):
        raise ConfigError(f"hooks may only name {', '.join(HOOK_EVENTS)}")
    app_port = raw.get("app_port")
    if app_port is not None and not 0 < int(app_port) < 65536:
        raise ConfigError(f"app_port must be a TCP port, got {app_port}")
    app_server_name = raw.get("app_server_name") or None
    app_ca_file = raw.get("app_ca_file") or None
    if app_server_name is not None and (app_port is None or app_ca_file is None):
        raise ConfigError("app_server_name needs app_port and app_ca_file: the TLS probe checks the certificate")
    services = raw.get("services", [])
    if not isinstance(services, list) or not all(isinstance(s, str) and s for s in services):
        raise ConfigError("services must be a list of systemd unit names")
    return Settings(
        interface=str(raw["interface"]),
        vip=vip,
        vip6=vip6,
        routing_table=int(table) if table is not None else None,
        gateway=gateway,
        vip6_is_router=bool(raw.get("vip6_is_router", False)),
        primary_macs=macs,
        primary_mgmt=mgmt,
        witness=witness,
        profile=profile,
        profile_name=name,
        app_port=int(app_port) if app_port is not None else None,
        app_interval=_positive(raw, "app_interval", 1.0),
        app_server_name=app_server_name,
        app_ca_file=app_ca_file,
        witness_timeout=_positive(raw, "witness_timeout", 1.0),
        failback=Failback(raw.get("failback", "auto")),
        hold_down=_positive(raw, "hold_down", 30.0),
        fault_recovery=_positive(raw, "fault_recovery", 3.0),
        refresh_interval=_positive(raw, "refresh_interval", 60.0),
        damping=damping,
        fence=fence,
        services=tuple(services),
        hooks={event: _argv(argv, f"hooks.{event}") for event, argv in hooks_raw.items()},
        metrics_listen=str(raw.get("metrics_listen", "127.0.0.1:9468")),
        state_dir=str(raw.get("state_dir", "/run/dmzkit-failover-watchdog")),
    )


# Keys of the JSON file: the Settings fields, with the profile given by name
# and optionally tuned by interval, misses and rtt_budget.
_KNOWN = {f.name for f in fields(Settings)} - {"profile_name"} | {"interval", "misses", "rtt_budget"}
