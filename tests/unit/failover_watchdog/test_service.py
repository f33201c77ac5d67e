"""The whole watchdog against real kernels: a primary, a backup and a witness
in private network namespaces on one bridge, with real ARP between them.

Everything lives in namespaces this test makes and removes, on lab addresses.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agents import health_pki, running_agent
from role_render import ROLES, render_unit
from namespaces import (BACKUP, ENV, MGMT, VIP, WITNESS, Segment, holds_vip, mac_of, metric, ours,
                        running_watchdog, sh)


@pytest.fixture
def watchdog(segment: Segment, tmp_path: Path) -> Iterator[Segment]:
    with running_watchdog(segment, tmp_path):
        yield segment


def test_takes_over_a_dead_primary_and_yields_when_it_returns(watchdog: Segment) -> None:
    seg = watchdog
    time.sleep(0.5)  # healthy for a while: no false takeover
    assert seg.state()["state"] == "standby" and not holds_vip(seg, "backup")
    seg.ip("br", "link", "set", seg.port("p"), "down")  # power loss: the primary's port goes dark
    took = seg.wait(lambda: holds_vip(seg, "backup"), 3)
    seg.wait(lambda: seg.state().get("state") == "active", 2)  # the VIP goes first, the record after
    assert took < 1.0, f"takeover took {took:.3f} s"
    # The witness's neighbour entry for the VIP now points at the backup.
    backup_mac = json.loads(seg.ip("backup", "-j", "link", "show", "eth0"))[0]["address"]
    seg.ip("witness", "neigh", "replace", VIP, "lladdr", "02:00:00:00:00:99", "dev", "eth0", "nud", "stale")
    seg.wait(lambda: backup_mac in seg.ip("witness", "neigh", "show", VIP), 3)  # the GARP at +0.5/+1/+2 s
    # The primary comes back still holding the VIP: the backup yields at once.
    seg.ip("br", "link", "set", seg.port("p"), "up")
    yielded = seg.wait(lambda: not holds_vip(seg, "backup"), 3)
    assert yielded < 0.5, f"yield took {yielded:.3f} s"
    seg.wait(lambda: seg.state().get("state") == "standby", 2)  # the VIP goes first, the record after
    transitions = [t["to"] for t in seg.state()["transitions"]]
    assert transitions[-2:] == ["yield", "standby"]


def test_hands_back_after_hold_down_when_the_primary_returns_without_the_vip(watchdog: Segment) -> None:
    seg = watchdog
    seg.ip("br", "link", "set", seg.port("p"), "down")
    seg.wait(lambda: holds_vip(seg, "backup"), 3)
    seg.ip("primary", "addr", "del", f"{VIP}/24", "dev", "eth0")  # a guarded primary waits for the VIP
    # A neighbour that knows the VIP (a GARP updates entries, it does not create them).
    seg.ip("witness", "neigh", "replace", VIP, "lladdr", "02:00:00:00:00:99", "dev", "eth0", "nud", "stale")
    seg.ip("br", "link", "set", seg.port("p"), "up")
    seg.wait(lambda: not holds_vip(seg, "backup"), 5)
    seg.wait(lambda: seg.state().get("state") == "standby", 2)  # the VIP goes first, the record after
    assert [t["to"] for t in seg.state()["transitions"]][-2:] == ["handback", "standby"]
    # The handback announced the primary's MAC for the VIP.
    primary_mac = json.loads(seg.ip("primary", "-j", "link", "show", "eth0"))[0]["address"]
    assert primary_mac in seg.ip("witness", "neigh", "show", VIP)


def test_an_isolated_backup_never_takes_over(watchdog: Segment) -> None:
    seg = watchdog
    seg.ip("br", "link", "set", seg.port("b"), "down")  # the backup's own port: it sees nobody
    seg.wait(lambda: seg.state().get("state") == "fault", 3)
    time.sleep(1.0)
    assert not holds_vip(seg, "backup")
    assert seg.state()["state"] == "fault"


def test_its_own_nic_going_down_is_a_fault_not_a_crash(watchdog: Segment) -> None:
    """Admin-down, the standby NIC refuses every frame (ENETDOWN)."""
    seg = watchdog
    seg.ip("backup", "link", "set", "eth0", "down")
    seg.wait(lambda: seg.state().get("state") == "fault", 3)
    time.sleep(0.5)  # ticks with a dead socket
    seg.ip("backup", "link", "set", "eth0", "up")
    seg.wait(lambda: seg.state().get("state") == "standby", 6)  # fault_recovery is 3 s
    assert not holds_vip(seg, "backup")


def test_an_operator_takeover_never_takes_an_address_a_stranger_answers_for(watchdog: Segment, tmp_path: Path) -> None:
    """The confirm burst of an operator's takeover runs beside the main loop,
    which reads the same socket: a stranger's answer must reach the burst."""
    seg = watchdog
    seg.ip("br", "link", "set", seg.port("p"), "down")  # the primary is gone...
    seg.ip("witness", "addr", "add", f"{VIP}/24", "dev", "eth0")  # ...and a MAC that is not its holds the VIP

    def ctl(verb: str) -> dict[str, object]:
        run = subprocess.run(ours(seg.ns("backup"), "ctl", verb, "--config", str(tmp_path / "config.json")),
                             env=ENV, capture_output=True, text=True, check=False)
        return json.loads(run.stdout)
    seg.wait(lambda: "unknown MAC" in str(ctl("status")["reason"]), 3)
    time.sleep(1.0)  # dead_time many times over: the loop itself never goes for it
    assert "takeover" not in [t["to"] for t in seg.state()["transitions"]]
    for _ in range(10):  # the burst and the loop's tick fall differently each time
        assert ctl("takeover")["state"] == "standby"
        assert not holds_vip(seg, "backup")
        time.sleep(0.037)


def test_a_guarded_primary_claims_the_vip_only_once_the_backup_has_let_go(watchdog: Segment) -> None:
    seg = watchdog
    seg.ip("primary", "addr", "del", f"{VIP}/24", "dev", "eth0")
    guard = subprocess.Popen(ours(seg.ns("primary"), "--interface", "eth0", "--vip", f"{VIP}/24", package="vip_guard"),
                             env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        seg.wait(lambda: holds_vip(seg, "primary"), 3)  # nobody held it: claimed after one probe round
        # The carrier goes while the guard is still announcing its claim: it lets
        # go at once, long before the backup could take over, and says no more.
        seg.ip("br", "link", "set", seg.port("p"), "down")
        released = seg.wait(lambda: not holds_vip(seg, "primary"), 2)
        assert released < 0.15, f"the guard held the VIP {released:.2f} s after its carrier went"
        seg.wait(lambda: holds_vip(seg, "backup"), 3)
        seg.ip("br", "link", "set", seg.port("p"), "up")
        # The backup holds the VIP for hold_down (1 s), then hands back; the guard
        # waits for that. Sample both sides until the primary holds it again.
        both, start = 0, time.monotonic()
        while not holds_vip(seg, "primary") and time.monotonic() - start < 6:
            both += holds_vip(seg, "backup") and holds_vip(seg, "primary")
        assert holds_vip(seg, "primary"), f"the guard never claimed; watchdog state {seg.state()}"
        assert both == 0 and not holds_vip(seg, "backup")
        since_takeover = [t["to"] for t in seg.state()["transitions"]]
        since_takeover = since_takeover[len(since_takeover) - since_takeover[::-1].index("active"):]
        # Handed back, never had to yield (no conflict); a short "suspect"
        # while the VIP is between holders is fine.
        assert since_takeover[:2] == ["handback", "standby"] and "yield" not in since_takeover, since_takeover
    finally:
        guard.terminate()
        _, stderr = guard.communicate(timeout=10)
    assert "Traceback" not in stderr, stderr
    assert not holds_vip(seg, "primary"), "a stopped guard releases the VIP"


def test_a_primary_handed_back_after_its_vpn_died_is_not_fenced_again(segment: Segment, tmp_path: Path) -> None:
    """The VPN dies on a live host: its health agent says so, the watchdog
    fences (the primary's switch port down) and takes over. Repaired and
    handed back by the operator a moment after its VPN started again, the
    primary keeps the VIP: the reports of "down" it sent while it was down
    are not held against it, nor the connection that outlived the fence."""
    seg = segment
    vpn = ["ip", "netns", "exec", seg.ns("primary"), sys.executable, "-m", "http.server", "--bind", MGMT, "8443"]
    port = ["ip", "-n", seg.ns("br"), "link", "set", seg.port("p")]
    seg.ip("backup", "addr", "add", f"{BACKUP}/24", "dev", "eth0")  # the agent's client (vnc1's own NIC)
    files = health_pki(tmp_path)
    server = subprocess.Popen(vpn, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with running_agent(seg, files.agent_config(tmp_path, [f"{MGMT}:8443"])), \
                running_watchdog(seg, tmp_path, health=files.watchdog_settings(),
                                 fence={"mode": "required", "off": [*port, "down"], "on": [*port, "up"]}) as config:
            seg.wait(lambda: metric(seg, 'dmzkit_failover_health_reports_total{verdict="up"}') > 5, 5)
            assert seg.state()["state"] == "standby"
            server.terminate()
            server.wait()
            seg.wait(lambda: holds_vip(seg, "backup"), 5)
            fencing = [t for t in seg.state()["transitions"] if t["to"] == "fencing"]
            assert fencing and "reports the VPN down" in fencing[0]["reason"], seg.state()
            seg.ip("primary", "addr", "del", f"{VIP}/24", "dev", "eth0")  # a guard lets go on carrier loss
            server = subprocess.Popen(vpn, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seg.wait(lambda: f"{MGMT}:8443" in sh("ip", "netns", "exec", seg.ns("primary"), "ss", "-Hltn"), 5)
            subprocess.run(ours(seg.ns("backup"), "ctl", "handback", "--config", str(config)),
                           env=ENV, check=True, capture_output=True)
            seg.wait(lambda: not holds_vip(seg, "backup"), 2)
            time.sleep(2.5)  # more than silent_after: time for a wrong verdict
            since = [t["to"] for t in seg.state()["transitions"]]
            since = since[since.index("handback"):]
            # Nobody claims the VIP here (no guard): "suspect" is fine, a new fence is not.
            assert since[:2] == ["handback", "standby"] and "fencing" not in since, since
            assert "NO-CARRIER" not in seg.ip("primary", "link", "show", "eth0")
    finally:
        server.terminate()
        server.wait()


def test_systemd_hears_from_the_watchdog_while_a_slow_fence_runs(segment: Segment, tmp_path: Path) -> None:
    """A fence may take seconds (a switch's API); WatchdogSec is shorter.
    The VPN of a live host stops listening, its health agent says so, the
    watchdog fences, and its fence takes 2 s: the pings to systemd must go
    on meanwhile."""
    seg = segment
    vpn = subprocess.Popen(["ip", "netns", "exec", seg.ns("primary"), sys.executable, "-m", "http.server", "--bind",
                            MGMT, "8443"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seg.ip("backup", "addr", "add", f"{BACKUP}/24", "dev", "eth0")  # the agent's client
    files = health_pki(tmp_path)
    limit = 0.8  # WATCHDOG_USEC: the watchdog pings every quarter of it
    pings: list[float] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    listener.settimeout(0.2)
    done = threading.Event()

    def hear() -> None:
        while not done.is_set():
            try:
                if b"WATCHDOG=1" in listener.recv(4096).split(b"\n"):
                    pings.append(time.time())
            except TimeoutError:
                pass
    hearing = threading.Thread(target=hear)
    hearing.start()
    try:
        with running_agent(seg, files.agent_config(tmp_path, [f"{MGMT}:8443"])), \
                running_watchdog(seg, tmp_path, health=files.watchdog_settings(),
                                 environment={"NOTIFY_SOCKET": str(tmp_path / "notify"),
                                              "WATCHDOG_USEC": str(int(limit * 1e6))},
                                 fence={"mode": "required", "off": ["sleep", "2"]}):
            seg.wait(lambda: metric(seg, 'dmzkit_failover_health_reports_total{verdict="up"}') > 5, 5)
            vpn.terminate()
            seg.wait(lambda: any(t["from"] == "fencing" for t in seg.state().get("transitions", [])), 10)
            transitions = seg.state()["transitions"]
    finally:
        vpn.terminate()
        vpn.wait()
        done.set()
        hearing.join()
        listener.close()
    start = next(t["at"] for t in transitions if t["to"] == "fencing")
    end = next(t["at"] for t in transitions if t["from"] == "fencing")
    assert end - start >= 1.9, transitions  # the fence really took its time
    during = [start, *[t for t in pings if start < t < end], end]
    gaps = [b - a for a, b in zip(during, during[1:])]
    assert max(gaps) < limit, f"no ping for {max(gaps):.2f} s while fencing"


def test_a_stopped_watchdog_leaves_the_vip_where_it_is_and_says_so(segment: Segment, tmp_path: Path) -> None:
    """`systemctl stop` (SIGTERM) neither takes nor releases the VIP: a dead
    primary's VIP keeps its holder, and a guarded primary waits while the
    backup's MAC answers for it. The state file (kept by the unit's
    RuntimeDirectoryPreserve) says whether a VIP was left unwatched here."""
    seg = segment
    with running_watchdog(seg, tmp_path):
        pass
    state = seg.state()
    assert state["state"] == "stopped" and not holds_vip(seg, "backup"), state
    assert not (seg.state_dir / "control.sock").exists()
    with running_watchdog(seg, tmp_path):
        seg.ip("br", "link", "set", seg.port("p"), "down")  # the primary dies
        seg.wait(lambda: seg.state().get("state") == "active", 3)
    assert holds_vip(seg, "backup"), "a stop released the VIP of a dead primary"
    state = seg.state()
    assert state["state"] == "unmanaged" and f"{VIP}/24 on eth0" in state["reason"], state
    assert state["transitions"][-1]["from"] == "active" and state["transitions"][-1]["to"] == "unmanaged", state
    # Started again (a crash, a restart), it keeps the VIP of a primary still dead.
    with running_watchdog(seg, tmp_path, started="active"):
        time.sleep(1.0)  # verdicts: the primary is still dead
        assert holds_vip(seg, "backup") and seg.state()["state"] == "active", seg.state()
    assert seg.state()["state"] == "unmanaged" and holds_vip(seg, "backup")


def test_unusable_health_tls_files_stop_the_start_with_a_reason(tmp_path: Path) -> None:
    files = health_pki(tmp_path)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "interface": "lo", "vip": f"{VIP}/24", "primary_macs": ["02:00:00:00:00:0a"], "primary_mgmt": MGMT,
        "witness": WITNESS, "health": files.watchdog_settings(ca_file=str(tmp_path / "none.pem")),
        "state_dir": str(tmp_path / "run"),
    }), encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "dmzkit_remote_access.failover_watchdog", "run", "--config", str(config)],
                         env=ENV, capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 2 and "TLS files" in run.stderr and "Traceback" not in run.stderr, run.stderr


# -- forged ARP from the DMZ (issue 15, finding 6) ------------------------------------

def forge(seg: Segment, name: str, *claims: str, every: float = 0.0) -> None:
    """From `name`'s namespace, gratuitous ARPs saying each address of
    `claims` is at that namespace's MAC: what any host on the DMZ can send."""
    code = (
        "import ipaddress, socket, sys, time\n"
        "from dmzkit_remote_access.net import arp\n"
        "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
        "s.bind(('eth0', 0))\n"
        "mac = arp.mac_text(s.getsockname()[4])\n"
        "for n, address in enumerate(sys.argv[2:]):\n"
        "    time.sleep(float(sys.argv[1]) if n else 0)\n"
        "    s.send(arp.announcements(mac, ipaddress.IPv4Address(address))[0])\n"
    )
    subprocess.run(["ip", "netns", "exec", seg.ns(name), sys.executable, "-c", code, str(every), *claims],
                   env=ENV, check=True, timeout=30)


def test_forged_garps_never_make_an_active_backup_yield_and_are_defended(watchdog: Segment) -> None:
    """The lab's reproduction: with the backup active, one forged GARP left
    the VIP unheld, three damped the backup in standby for good."""
    seg = watchdog
    seg.ip("br", "link", "set", seg.port("p"), "down")  # the primary dies
    seg.wait(lambda: holds_vip(seg, "backup"), 3)
    time.sleep(2.2)  # the takeover's GARPs (+0, 0.5, 1, 2 s) are over: what follows is a defence
    seg.ip("witness", "neigh", "replace", VIP, "lladdr", "02:00:00:00:00:99", "dev", "eth0", "nud", "stale")
    forge(seg, "witness", VIP)  # any DMZ host: "the VIP is at my MAC"
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert holds_vip(seg, "backup"), f"the VIP went unheld: {seg.state()}"
    # Defended (RFC 5227 §2.4 (c)): one GARP of ours set the segment straight.
    assert mac_of(seg, "backup") in seg.ip("witness", "neigh", "show", VIP)
    forge(seg, "witness", VIP, VIP, VIP, every=1.0)  # three more, a second apart
    time.sleep(1.0)
    assert holds_vip(seg, "backup")
    state = seg.state()
    assert state["state"] == "active" and not state["damped"], state
    assert "yield" not in [t["to"] for t in state["transitions"]]
    assert state["defences"] == 1, state  # not one per forged frame (RFC 5227 DEFEND_INTERVAL)
    assert metric(seg, 'dmzkit_failover_forged_claims_total{address="vip"}') == 4
    assert metric(seg, "dmzkit_failover_defences_total") == 1


def test_a_forger_answering_for_a_dead_primarys_own_address_does_not_keep_it_alive(watchdog: Segment) -> None:
    seg = watchdog
    seg.ip("br", "link", "set", seg.port("p"), "down")  # the primary dies...
    seg.ip("witness", "addr", "add", f"{MGMT}/24", "dev", "eth0")  # ...and another MAC answers for its address
    took = seg.wait(lambda: holds_vip(seg, "backup"), 3)
    assert took < 1.0, f"takeover took {took:.3f} s"
    assert seg.state()["forged_claims"] > 0  # alarmed
    assert metric(seg, 'dmzkit_failover_forged_claims_total{address="mgmt"}') > 0


# -- its systemd unit (issue 15): service_venv's template, rendered by Ansible -------------------

def unit_sections(tmp_path: Path, unit: object, **variables: object) -> dict[str, dict[str, list[str]]]:
    """The shared unit template rendered by ansible-playbook for `unit`
    (service_venv_unit, templated with the watchdog role's defaults and
    vars), as {section: {key: [values]}}."""
    text = render_unit(tmp_path, "failover_watchdog", unit, **variables)
    verify(tmp_path, text)
    sections: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            sections.setdefault(section, {}).setdefault(key, []).append(value)
    return sections


def verify(tmp_path: Path, text: str) -> None:
    """systemd's own reading of the unit, where systemd-analyze is at hand:
    no unknown key, no bad value (the program and the units it needs are
    this host's stand-ins)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    unit = tmp_path / "dmzkit-verify.service"
    lines = [line for line in text.splitlines() if not line.startswith("Requires=")]
    unit.write_text("\n".join(line.replace("/opt/dmzkit/venv/bin/", "/bin/true ") if line.startswith("ExecStart=")
                              else line for line in lines) + "\n", encoding="utf-8")
    run = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60)
    complaints = [line for line in run.stderr.splitlines() if str(unit) in line]
    assert run.returncode == 0 and not complaints, run.stderr


def watchdog_unit() -> object:
    """service_venv_unit as the failover_watchdog role passes it."""
    import yaml  # only here: the service itself needs no YAML

    tasks = yaml.safe_load((ROLES / "failover_watchdog" / "tasks" / "main.yml").read_text(encoding="utf-8"))
    run = next(task for task in tasks if task["name"] == "Run the watchdog")
    return run["vars"]["service_venv_unit"]


def test_the_unit_restarts_the_watchdog_for_ever_and_keeps_its_state_after_a_stop(tmp_path: Path) -> None:
    unit = unit_sections(tmp_path, watchdog_unit(), failover_watchdog_vip="198.18.1.10/24",
                         failover_watchdog_credentials=[
                             {"name": "fence-token", "path": "/etc/dmzkit-fence/token"},
                             {"name": "switch", "path": "/etc/credstore.encrypted/switch", "encrypted": True}])
    assert unit["Unit"]["StartLimitIntervalSec"] == ["0"], unit["Unit"]  # 5 fast crashes do not leave it dead
    assert unit["Service"]["Restart"] == ["always"] and unit["Service"]["RestartSec"] == ["1"]
    assert unit["Service"]["RuntimeDirectoryPreserve"] == ["yes"], unit["Service"]  # "unmanaged" survives a stop
    assert unit["Service"]["LoadCredential"] == ["fence-token:/etc/dmzkit-fence/token"]
    assert unit["Service"]["LoadCredentialEncrypted"] == ["switch:/etc/credstore.encrypted/switch"]
    assert "dmzkit-failover-watchdog run --config" in unit["Service"]["ExecStart"][0]


def test_other_services_units_keep_systemds_defaults(tmp_path: Path) -> None:
    unit = unit_sections(tmp_path, {"name": "dmzkit-sso-idp", "description": "IdP", "command": ["dmzkit-sso", "idp"],
                                    "runtime_directory": "dmzkit-sso"})
    assert not {"StartLimitIntervalSec", "StartLimitBurst"} & set(unit["Unit"]), unit["Unit"]
    assert not {"RuntimeDirectoryPreserve", "LoadCredential", "LoadCredentialEncrypted"} & set(unit["Service"])
    assert unit["Service"]["Restart"] == ["on-failure"] and unit["Service"]["RuntimeDirectory"] == ["dmzkit-sso"]
    bounded = unit_sections(tmp_path, {"name": "x", "description": "x", "command": ["x"], "start_limit_interval_sec": 600,
                                       "start_limit_burst": 20, "runtime_directory": "x",
                                       "runtime_directory_preserve": "restart"})
    assert (bounded["Unit"]["StartLimitIntervalSec"], bounded["Unit"]["StartLimitBurst"]) == (["600"], ["20"])
    assert bounded["Service"]["RuntimeDirectoryPreserve"] == ["restart"]
