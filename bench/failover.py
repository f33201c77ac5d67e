"""Failover figures, measured on the lab's DMZ wire with one clock.

For each configuration (our watchdog at the `default` and `fast` profiles,
keepalived with VRRPv2 defaults and with VRRPv3 adverts every 0.1 s, all on
the same hosts in the same run) it runs N drills:

1. wait a random fraction of a second (the failure lands at a random phase
   of the probe or advert cycle);
2. pull the gateway's cable (its switch port goes down);
3. failover time: from the cable pull to the first echo reply from the VIP
   sent by the backup's MAC, captured on the firewall's DMZ port (the client
   pings the VIP every 10 ms);
4. plug the cable back and hand the VIP back (our watchdog: `ctl handback`,
   the gateway's guard claims it; keepalived: preemption by priority);
5. duplicate windows: time during which two MACs answered the same ARP
   probe for the VIP (probed from the controller every 5 ms), on failover
   and on failback.

Then forged ARP, from a MAC no host of the lab has, sent on the DMZ
bridge: with the backup holding the VIP, gratuitous ARPs claiming it, 3 s
apart (every yield is a false one; the time nobody answered for the VIP is
measured); and drills as above while the stranger answers for the gateway's
management address every 50 ms (a takeover it held back is a suppressed one).

Then service-only death (issue 15, finding 7): with the gateway's link up,
`systemctl kill -s KILL ocserv` at a random phase; the time from the kill to
the first echo reply from the VIP sent by another MAC than the gateway's
(the watchdog hears the gateway's VPN health agent say "down", fences the
gateway at the lab switch, takes over), and the fence's share of it.

Then a flood of TLS handshakes at the VIP from the client container, at the
highest rate it can send (lab/flood.py, bounded in time and count, lab
addresses only), in each mode in turn: `hello` (a ClientHello,
the server's first byte, a RST), `hold` (the same, kept open), `idle`
(connect, send nothing). The watchdog runs as deployed (`fence.mode:
required` in the lab): every takeover and every fence in a flood is a false
one. Beside the flood's own figures it shows that the flood bit: ocserv's
"delaying accepts" and "reached maximum client limit", nginx's
"worker_connections are not enough", the largest accept queues, the
agent's busy reports and the largest gap between its reports.

Then a soak: the watchdog at `default`, 2 % of the DMZ frames of both hosts
dropped and both CPUs of the backup busy, for a bounded time; every
takeover in it is a false one.

Needs the lab with the failover stack deployed (`make demo`). Restores the
watchdog, the guard and the switch ports at the end. Prints a table.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import math
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))
import flood as flooder  # noqa: E402
from wire import SWITCH, VipWatch, arp, bridge_of, port_of  # noqa: E402

VIP = "198.18.1.10"
VPN_NAME = "vpn.lab.dmzkit.test"
GATEWAY, BACKUP, CLIENT, FIREWALL = "gw1", "vnc1", "client1", "fw1"
STANDBY = "standby0"
WATCHDOG = "/opt/dmzkit/venv/bin/dmzkit-failover-watchdog"
CONFIG = "/etc/dmzkit-failover-watchdog/config.json"
KEEPALIVED_CONF = "/run/dmzkit-bench-keepalived.conf"
# The hosts' own firewalls drop VRRP; keepalived's run opens it for a while.
# Both hosts keep their rules in the one table role host_firewall makes.
HOST_FIREWALL = "inet dmzkit_host"
BENCH_RULE_COMMENT = "dmzkit-bench"
ETH_P_ALL = 3
# Locally administered: no host of the lab has it.
STRANGER = "02:00:5e:10:de:ad"


def sh(host: str, command: str, check: bool = True) -> str:
    done = subprocess.run(["podman", "exec", host, "sh", "-c", command], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{host}: {command}: {done.stderr.strip()}")
    return done.stdout


def write(host: str, path: str, text: str) -> None:
    subprocess.run(["podman", "exec", "-i", host, "sh", "-c", f"cat > {path}"], input=text, text=True, check=True)


def mac_of(host: str, ifname: str) -> str:
    return str(json.loads(sh(host, f"ip -j link show dev {ifname}"))[0]["address"])


def holds(host: str) -> bool:
    return f"{VIP}/24" in sh(host, "ip -4 -o address show", check=False)


def wait_for(condition, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


class EchoReplies:
    """ICMP echo replies from the VIP seen on one bridge port, by source MAC,
    with the kernel's receive time on the monotonic clock."""

    def __init__(self, port: str) -> None:
        # ETH_P_ALL: frames the port sends towards the firewall are outgoing
        # on it, and only ETH_P_ALL sockets see outgoing frames.
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, arp.SO_TIMESTAMPNS, 1)
        self.sock.bind((port, ETH_P_ALL))
        self.sock.settimeout(0.1)
        self.vip = socket.inet_aton(VIP)
        self.seen: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        offset = time.time() - time.monotonic()
        while not self._stop.is_set():
            try:
                data, ancdata, _, _ = self.sock.recvmsg(64, socket.CMSG_SPACE(16))
            except TimeoutError:
                continue
            # Ethernet (14) + IPv4: protocol at 23, source at 26..30; ICMP type 0 after a 20-byte header.
            if len(data) >= 35 and data[12:14] == b"\x08\x00" and data[23] == 1 and data[26:30] == self.vip and data[34] == 0:
                self.seen.append((arp.receive_time(ancdata, offset), ":".join(f"{b:02x}" for b in data[6:12])))

    def first_not_from(self, mac: str, since: float) -> float | None:
        """The first reply after `since` from any MAC but `mac` (the gateway's)."""
        return next((at for at, src in list(self.seen) if at >= since and src != mac), None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@dataclass
class Figures:
    name: str
    failover: list[float] = field(default_factory=list)
    dup_failover: list[float] = field(default_factory=list)
    dup_failback: list[float] = field(default_factory=list)
    missed: int = 0

    def row(self) -> str:
        f = self.failover
        cells = (f"{statistics.median(f):.3f}", f"{percentile(f, 0.99):.3f}", f"{max(f):.3f}") if f else ("-",) * 3
        return (f"| {self.name} | {len(f)} | {self.missed} | {cells[0]} | {cells[1]} | {cells[2]} | "
                f"{1000 * max(self.dup_failover, default=0):.0f} | {1000 * max(self.dup_failback, default=0):.0f} |")


class Lab:
    def __init__(self) -> None:
        self.gw_port = port_of(GATEWAY, "eth0")
        self.gateway_mac = mac_of(GATEWAY, "eth0")
        fw_dmz = next(i["ifname"] for i in json.loads(sh(FIREWALL, "ip -j -4 address show"))
                      if any(a["local"] == "198.18.1.254" for a in i.get("addr_info", [])))
        self.fw_port = port_of(FIREWALL, fw_dmz)
        self.config = sh(BACKUP, f"cat {CONFIG}")

    def cable(self, up: bool) -> float:
        """Pull or plug the gateway's cable; the moment it happened."""
        before = time.monotonic()
        subprocess.run(["ip", "link", "set", "dev", self.gw_port, "up" if up else "down"], check=True)
        return (before + time.monotonic()) / 2

    def watchdog(self, profile: str | None) -> None:
        """Run our watchdog (at `profile`) and the gateway's guard, or neither (None)."""
        if profile is None:
            sh(BACKUP, "systemctl stop dmzkit-failover-watchdog; ip address flush dev standby0")
            sh(GATEWAY, "systemctl stop dmzkit-gateway-vip")
            return
        self.run_ours(json.dumps(json.loads(self.config) | {"profile": profile}))
        wait_for(lambda: holds(GATEWAY) and self.state() == "standby", 30)

    def run_ours(self, config: str) -> None:
        """The watchdog with this configuration, and the gateway's guard."""
        write(BACKUP, CONFIG, config)
        sh(GATEWAY, "systemctl start dmzkit-gateway-vip")
        sh(BACKUP, "systemctl restart dmzkit-failover-watchdog")

    def state(self) -> str:
        try:
            return str(json.loads(sh(BACKUP, "cat /run/dmzkit-failover-watchdog/state.json"))["state"])
        except (RuntimeError, ValueError):
            return ""

    def keepalived(self, version: int | None, advert: float = 1.0) -> None:
        for host in (GATEWAY, BACKUP):
            sh(host, "pkill -x keepalived; true")
        self.vrrp_allowed(version is not None)
        if version is None:
            return
        for host, priority, where in ((GATEWAY, 150, ""), (BACKUP, 100, " dev standby0")):
            conf = (f"global_defs {{\n  vrrp_version {version}\n}}\n"
                    f"vrrp_instance dmzkit_bench {{\n  interface eth0\n  virtual_router_id 51\n"
                    f"  priority {priority}\n  advert_int {advert}\n"
                    f"  virtual_ipaddress {{\n    {VIP}/24{where}\n  }}\n}}\n")
            write(host, KEEPALIVED_CONF, conf)
            subprocess.run(["podman", "exec", "-d", host, "keepalived", "--dont-fork", "--vrrp", "--log-console",
                            "-f", KEEPALIVED_CONF, "-p", "/run/dmzkit-bench-keepalived.pid",
                            "-r", "/run/dmzkit-bench-vrrp.pid"], check=True)
        # Both start as backups; the gateway wins the election, but the VNC
        # host may still take the VIP once if the gateway's first adverts come
        # late. Drill only after the election is over: past the backup's
        # master-down interval (3 adverts + skew), the gateway alone holds it.
        wait_for(lambda: holds(GATEWAY) and not holds(BACKUP), 30)
        time.sleep(4 * advert + 1)
        wait_for(lambda: holds(GATEWAY) and not holds(BACKUP), 30)

    def vrrp_allowed(self, allowed: bool) -> None:
        """Open (or close again) the hosts' input chains to VRRP adverts:
        without them each keepalived believes itself alone and both hold the VIP."""
        table = HOST_FIREWALL
        for host in (GATEWAY, BACKUP):
            listing = sh(host, f"nft -a list chain {table} input")
            for handle in re.findall(rf'comment "{BENCH_RULE_COMMENT}" # handle (\d+)', listing):
                sh(host, f"nft delete rule {table} input handle {handle}")
            if allowed:
                sh(host, f"nft insert rule {table} input ip protocol vrrp accept comment {BENCH_RULE_COMMENT}")

    def restore(self) -> None:
        self.keepalived(None)
        self.cable(True)
        sh(GATEWAY, "systemctl reset-failed ocserv.service; systemctl start ocserv.service nginx.service", check=False)
        self.run_ours(self.config)


@contextmanager
def pinging(seconds: int) -> Iterator[None]:
    """The client pings the VIP every 10 ms, for at most `seconds`."""
    # Bounded by timeout(1), not ping's -w: with -w, ping stops at the first
    # "host unreachable" the firewall sends while nobody holds the VIP.
    ping = subprocess.Popen(["podman", "exec", CLIENT, "timeout", str(seconds), "ping", "-q", "-i", "0.01", VIP],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        ping.terminate()
        ping.wait()
        subprocess.run(["podman", "exec", CLIENT, "pkill", "-x", "ping"], capture_output=True, check=False)


def drill(lab: Lab, figures: Figures, echo: EchoReplies, watch: VipWatch, handback: bool, timeout: float) -> None:
    time.sleep(random.uniform(0.0, 1.0))
    cut = lab.cable(False)
    took = wait_for(lambda: echo.first_not_from(lab.gateway_mac, cut) is not None, timeout)
    first = echo.first_not_from(lab.gateway_mac, cut)
    if not took or first is None:
        figures.missed += 1
        seen = [(round(at - cut, 3), src) for at, src in list(echo.seen) if at >= cut - 0.2]
        print(f"missed: watchdog {lab.state()!r}, backup holds the VIP: {holds(BACKUP)}, replies {seen[:3]}..{seen[-2:]}",
              file=sys.stderr)
    else:
        figures.failover.append(first - cut)
    figures.dup_failover.append(watch.duplicate_time(cut))
    time.sleep(0.5)
    back = lab.cable(True)
    if handback:
        time.sleep(0.5)
        sh(BACKUP, f"{WATCHDOG} ctl handback", check=False)
    wait_for(lambda: holds(GATEWAY) and not holds(BACKUP), 30)
    time.sleep(0.5)
    figures.dup_failback.append(watch.duplicate_time(back))
    if handback:
        wait_for(lambda: lab.state() == "standby", 10)
        sh(BACKUP, f"{WATCHDOG} ctl reset", check=False)
    time.sleep(0.5)


def counters() -> dict[str, float]:
    """The watchdog's metrics (its state file keeps only the last transitions)."""
    text = sh(BACKUP, "python3 -c \"import urllib.request; "
                      "print(urllib.request.urlopen('http://127.0.0.1:9468/metrics').read().decode())\"")
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines()
                                     if line and not line.startswith("#"))}


def transitions_in(c: dict[str, float], state: str) -> int:
    """Transitions to `state` in a snapshot of the metrics."""
    return int(sum(v for k, v in c.items()
                   if k.startswith("dmzkit_failover_transitions_total") and f'to="{state}"' in k))


def transitions_to(state: str) -> int:
    return transitions_in(counters(), state)


def takeovers_and_stalls() -> tuple[int, int]:
    return transitions_to("takeover"), int(counters().get("dmzkit_failover_scheduler_stall_total", 0))


@dataclass
class Forged:
    claims: int = 0
    false_yields: int = 0
    unheld: float = 0.0
    kept: bool = False
    alarms: int = 0


@contextmanager
def answering_for(sock: arp.ArpSocket, address: str, seconds: float) -> Iterator[None]:
    """The stranger says `address` is at its MAC every 50 ms, for at most `seconds`."""
    stop = threading.Event()
    reply = arp.frame(arp.OP_REPLY, STRANGER, STRANGER, ipaddress.IPv4Address(address),
                      ipaddress.IPv4Address(address), target_mac=arp.BROADCAST)

    def run() -> None:
        end = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < end:
            sock.send(reply)
            stop.wait(0.05)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def forged_arp(lab: Lab, sock: arp.ArpSocket, watch: VipWatch, echo: EchoReplies, claims: int,
               drills: int) -> tuple[Forged, Figures]:
    """Forged claims of the VIP held by the backup, then drills under forged
    signs of life for the gateway."""
    lab.watchdog("default")
    forged = Forged(claims=claims)
    lab.cable(False)
    wait_for(lambda: holds(BACKUP) and lab.state() == "active", 30)
    yields, alarms = transitions_to("yield"), counters().get('dmzkit_failover_forged_claims_total{address="vip"}', 0)
    start = time.monotonic()
    for _ in range(claims):
        for frame in arp.announcements(STRANGER, ipaddress.IPv4Address(VIP)):
            sock.send(frame)
        time.sleep(3)
    forged.unheld = sum(watch.period for _, macs in watch.holders(start) if not macs)
    forged.false_yields = transitions_to("yield") - yields
    forged.kept = holds(BACKUP) and lab.state() == "active"
    forged.alarms = int(counters().get('dmzkit_failover_forged_claims_total{address="vip"}', 0) - alarms)
    lab.cable(True)
    sh(BACKUP, f"{WATCHDOG} ctl handback", check=False)
    wait_for(lambda: holds(GATEWAY) and lab.state() == "standby", 60)
    sh(BACKUP, f"{WATCHDOG} ctl reset", check=False)

    figures = Figures("our watchdog, default, a stranger answering for the gateway's management address")
    mgmt = json.loads(lab.config)["primary_mgmt"]
    with pinging(drills * 11 + 60), answering_for(sock, mgmt, drills * 11 + 60):
        for n in range(drills):
            drill(lab, figures, echo, watch, True, 5)
            print(f"forged {n + 1}/{drills}: {figures.failover[-1] if figures.failover else float('nan'):.3f} s",
                  file=sys.stderr)
    return forged, figures


def handed_back(lab: Lab) -> None:
    """The gateway serving again after a takeover: the operator's handback
    (which unfences it first), then the damping counter cleared."""
    sh(BACKUP, f"{WATCHDOG} ctl handback", check=False)
    wait_for(lambda: holds(GATEWAY) and not holds(BACKUP), 30)
    wait_for(lambda: lab.state() == "standby", 10)
    sh(BACKUP, f"{WATCHDOG} ctl reset", check=False)


@dataclass
class Service:
    figures: Figures
    fence: list[float] = field(default_factory=list)

    def row(self) -> str:
        f = self.fence
        return (f"fence's share: p50 {statistics.median(f):.3f} s, max {max(f):.3f} s" if f
                else "fence's share: not measured")


def service_drill(lab: Lab, service: Service, echo: EchoReplies, watch: VipWatch) -> None:
    """ocserv killed on a live gateway; the first echo reply from another MAC."""
    time.sleep(random.uniform(0.0, 1.0))
    # The kill's moment on the host's monotonic clock (a container shares the kernel's).
    code = ("import subprocess, time; t = time.monotonic(); "
            "subprocess.run(['systemctl', 'kill', '-s', 'KILL', 'ocserv.service'], check=True); "
            "print(t, time.monotonic())")
    began, ended = map(float, sh(GATEWAY, f'python3 -c "{code}"').split())
    killed = (began + ended) / 2
    figures = service.figures
    took = wait_for(lambda: echo.first_not_from(lab.gateway_mac, killed) is not None, 10)
    first = echo.first_not_from(lab.gateway_mac, killed)
    if not took or first is None:
        figures.missed += 1
        print(f"missed: watchdog {lab.state()!r}, backup holds the VIP: {holds(BACKUP)}", file=sys.stderr)
    else:
        figures.failover.append(first - killed)
        fence = counters().get('dmzkit_failover_takeover_seconds{phase="fence"}')
        if fence is not None:
            service.fence.append(fence)
    figures.dup_failover.append(watch.duplicate_time(killed))
    sh(GATEWAY, "systemctl reset-failed ocserv.service; systemctl start ocserv.service")
    wait_for(lambda: sh(GATEWAY, "systemctl is-active ocserv.service", check=False).strip() == "active", 30)
    time.sleep(0.5)  # the agent's next reports say "up"
    back = time.monotonic()
    handed_back(lab)
    figures.dup_failback.append(watch.duplicate_time(back))
    time.sleep(1.0)


def service_deaths(lab: Lab, echo: EchoReplies, watch: VipWatch, drills: int) -> Service:
    lab.watchdog("default")
    service = Service(Figures("service-only death (systemctl kill -s KILL ocserv, link up), default"))
    with pinging(drills * 40 + 60):
        for n in range(drills):
            service_drill(lab, service, echo, watch)
            f = service.figures.failover
            print(f"service {n + 1}/{drills}: {f[-1] if f else float('nan'):.3f} s", file=sys.stderr)
    return service


class QueueSampler:
    """The largest accept queue of each listener on the gateway, sampled
    every 100 ms inside it (`ss -ltn`: Recv-Q of a listener)."""

    def __init__(self, seconds: float) -> None:
        loop = (f"end=$(( $(date +%s) + {int(seconds) + 1} )); "
                "while [ $(date +%s) -lt $end ]; do ss -Hltn; sleep 0.1; done")
        self.process = subprocess.Popen(["podman", "exec", GATEWAY, "sh", "-c", loop], stdout=subprocess.PIPE,
                                        text=True)
        self.largest: dict[str, int] = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            fields = line.split()
            if len(fields) >= 4 and fields[0] == "LISTEN" and fields[1].isdigit():
                self.largest[fields[3]] = max(self.largest.get(fields[3], 0), int(fields[1]))

    def close(self) -> dict[str, int]:
        self.process.terminate()
        self.process.wait()
        self.thread.join(5)
        return {k: v for k, v in self.largest.items() if k in ("127.0.0.1:4443", f"{VIP}:443")}


def gateway_logs(since: float) -> dict[str, int]:
    """What ocserv and nginx said about the load since `since` (Unix time)."""
    ocserv = sh(GATEWAY, f"journalctl -u ocserv.service --since @{int(since)} -o cat --no-pager", check=False)
    nginx = sh(GATEWAY, "cat /var/log/nginx/error.log", check=False)
    return {"ocserv delaying accepts": ocserv.count("delaying accepts"),
            "ocserv max clients": ocserv.count("reached maximum client limit"),
            "nginx worker_connections": nginx.count("worker_connections are not enough")}


def floods(lab: Lab, seconds: int, modes: list[str], processes: int) -> list[str]:
    """Each mode in turn with the watchdog as deployed; a line of figures each."""
    lab.watchdog("default")
    if "health" not in json.loads(lab.config):
        print("warning: the deployed watchdog hears no health agent (no `health` in its configuration)",
              file=sys.stderr)
    lines = []
    for mode in modes:
        # The log is read from a whole second on: start there, so that the
        # watchdog's own (re)start before the flood is not counted in it.
        before, since = counters(), math.ceil(time.time())
        time.sleep(max(0.0, since - time.time()))
        nginx_before = gateway_logs(since)["nginx worker_connections"]
        sampler = QueueSampler(seconds + 5)
        try:
            flood = flooder.from_container(CLIENT, VIP, VPN_NAME, mode, seconds, processes)
        finally:
            queues = sampler.close()
        conntrack = {name: Path(f"/proc/sys/net/netfilter/nf_conntrack_{name}").read_text().strip()
                     for name in ("count", "max") if Path(f"/proc/sys/net/netfilter/nf_conntrack_{name}").exists()}
        time.sleep(3.0)  # the watchdog's last verdicts on the flood
        after, logs = counters(), gateway_logs(since)
        logs["nginx worker_connections"] -= nginx_before
        # From the watchdog's log, not its counters: a watchdog restarted
        # during the flood (systemd's watchdog, a crash) starts them at 0.
        said = sh(BACKUP, f"journalctl -u dmzkit-failover-watchdog --since @{int(since)} -o cat --no-pager",
                  check=False).splitlines()
        takeovers = sum(" -> takeover: " in line for line in said)
        fences = sum(" -> fencing: " in line for line in said)
        restarts = sum(line.startswith("Started dmzkit-failover-watchdog") for line in
                       sh(BACKUP, f"journalctl -u dmzkit-failover-watchdog --since @{int(since)} -o cat --no-pager "
                                  "SYSLOG_IDENTIFIER=systemd", check=False).splitlines())
        verdicts = {v: int(after.get(f'dmzkit_failover_health_reports_total{{verdict="{v}"}}', 0)
                           - before.get(f'dmzkit_failover_health_reports_total{{verdict="{v}"}}', 0))
                    for v in ("up", "busy", "restarting", "down")}
        lost = int(after.get("dmzkit_failover_health_lost_total", 0)
                   - before.get("dmzkit_failover_health_lost_total", 0))
        gap = after.get("dmzkit_failover_health_largest_gap_seconds", float("nan"))
        carrier = "NO-CARRIER" not in sh(GATEWAY, "ip link show dev eth0", check=False)
        held = holds(GATEWAY) and not holds(BACKUP) and carrier
        lines.append(
            f"flood {seconds} s {mode}: {flood['processes']} processes, {flood['offered_per_s']:,.0f} offered/s, "
            f"{flood['answered_per_s']:,.0f} answered/s, first byte p99 {flood['first_byte_p99']} s, errors "
            f"{flood['errors']}: {takeovers} takeovers, {fences} fences (goal 0 and 0), {restarts} watchdog restarts, "
            f"gateway still serving: {held}; "
            f"agent reports {verdicts}, {lost} sessions lost, largest gap {gap:.3f} s; {logs}; "
            f"largest accept queues {queues}; the host's conntrack table at the end {conntrack}")
        print(lines[-1], file=sys.stderr)
        if not held:
            lab.cable(True)
            handed_back(lab)
        time.sleep(5.0)  # ocserv lets go of the flood's workers
    return lines


def soak(lab: Lab, seconds: int, loss: int) -> tuple[int, int]:
    """Takeovers and stalls while frames are lost and the backup's CPUs are busy."""
    lab.watchdog("default")
    before = takeovers_and_stalls()
    ports = [lab.gw_port, port_of(BACKUP, STANDBY)]
    rules = "".join(f"        iifname \"{p}\" numgen random mod 100 < {loss} drop\n" for p in ports)
    table = f"table bridge dmzkit_bench_loss {{\n    chain forward {{\n        type filter hook forward priority filter;\n{rules}    }}\n}}\n"
    subprocess.run(["nft", "-f", "-"], input=table, text=True, check=True)
    burners = [subprocess.Popen(["podman", "exec", BACKUP, "timeout", str(seconds), "python3", "-c", "while True: pass"])
               for _ in range(2)]
    try:
        time.sleep(seconds)
    finally:
        for b in burners:
            b.wait()
        subprocess.run(["nft", "delete", "table", "bridge", "dmzkit_bench_loss"], check=False)
    after = takeovers_and_stalls()
    return after[0] - before[0], after[1] - before[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drills", type=int, default=50, help="drills per configuration (default 50)")
    parser.add_argument("--soak", type=int, default=600, help="soak seconds (default 600, 0 = none)")
    parser.add_argument("--loss", type=int, default=2, help="percent of frames dropped in the soak (default 2)")
    parser.add_argument("--only", nargs="*", default=["default", "fast", "vrrp2", "vrrp3"],
                        help="configurations to run (default, fast, vrrp2, vrrp3)")
    parser.add_argument("--forged", type=int, default=5,
                        help="forged claims of the held VIP, and drills under forged signs of life (default 5, 0 = none)")
    parser.add_argument("--service", type=int, default=20,
                        help="service-only deaths: ocserv killed with the gateway's link up (default 20, 0 = none)")
    parser.add_argument("--flood", type=int, default=60,
                        help="seconds of handshake flood from the client per mode (default 60, at most 120, 0 = none)")
    parser.add_argument("--flood-modes", nargs="+", choices=flooder.MODES, default=list(flooder.MODES),
                        help="flood modes, run in turn (default: hello hold idle)")
    parser.add_argument("--flood-processes", type=int, default=0,
                        help="flooding processes in the client (default 0: one per CPU it has)")
    args = parser.parse_args()
    if (not 0 < args.drills <= 500 or not 0 <= args.soak <= 3600 or not 0 <= args.loss <= 50
            or not 0 <= args.forged <= 100 or not 0 <= args.service <= 200 or not 0 <= args.flood <= 120
            or not 0 <= args.flood_processes <= 64):
        parser.error("--drills 1..500, --soak 0..3600 s, --loss 0..50 %, --forged 0..100, --service 0..200, "
                     "--flood 0..120 s, --flood-processes 0..64")
    if not SWITCH.exists():
        parser.error(f"{SWITCH} is missing")

    lab = Lab()
    results: list[Figures] = []
    configurations = {
        "default": ("our watchdog, profile default (100 ms x 3)", lambda: lab.watchdog("default"), True, 5),
        "fast": ("our watchdog, profile fast (50 ms x 3)", lambda: lab.watchdog("fast"), True, 5),
        "vrrp2": ("keepalived VRRPv2 defaults (advert 1 s)", lambda: (lab.watchdog(None), lab.keepalived(2, 1)), False, 10),
        "vrrp3": ("keepalived VRRPv3, advert 0.1 s", lambda: (lab.watchdog(None), lab.keepalived(3, 0.1)), False, 5),
    }
    echo = EchoReplies(lab.fw_port)
    soak_figures = forged = service = None
    flood_lines: list[str] = []
    try:
        with VipWatch(bridge_of("dmzkit-dmz"), VIP) as watch:
            for key in args.only:
                name, setup, handback, timeout = configurations[key]
                setup()
                figures = Figures(name)
                with pinging(int(args.drills * (timeout + 6) + 60)):
                    for n in range(args.drills):
                        drill(lab, figures, echo, watch, handback, timeout)
                        print(f"{key} {n + 1}/{args.drills}: "
                              f"{figures.failover[-1] if figures.failover else float('nan'):.3f} s", file=sys.stderr)
                results.append(figures)
                lab.keepalived(None)
            if args.forged:
                forged, under_forgery = forged_arp(lab, watch.sock, watch, echo, args.forged, args.forged)
                results.append(under_forgery)
            if args.service:
                service = service_deaths(lab, echo, watch, args.service)
                results.append(service.figures)
            if args.flood:
                flood_lines = floods(lab, args.flood, args.flood_modes, args.flood_processes)
            if args.soak:
                soak_figures = soak(lab, args.soak, args.loss)
    finally:
        echo.close()
        lab.restore()

    print("| configuration | drills | missed | failover p50 s | p99 s | max s | duplicate on failover ms | duplicate on failback ms |")
    print("|---|---|---|---|---|---|---|---|")
    for figures in results:
        print(figures.row())
    if forged is not None:
        print(f"\nforged ARP: {forged.claims} claims of the VIP the backup held, 3 s apart: "
              f"{forged.false_yields} yields (false), VIP unanswered {forged.unheld:.3f} s, "
              f"backup still active: {forged.kept}, {forged.alarms} counted as forged")
    if service is not None:
        print(f"\nservice-only death: {service.row()}")
    for line in flood_lines:
        print(f"\n{line}")
    if soak_figures is not None:
        print(f"\nsoak {args.soak} s, {args.loss} % loss on both DMZ ports, backup CPUs busy: "
              f"{soak_figures[0]} takeovers (false), {soak_figures[1]} scheduler stalls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
