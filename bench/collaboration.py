"""Seed 001's figures, measured in the lab. So far AAA (role `aaa`):

- Access-Requests per second through our policy (a password found right
  lately, answered by FreeRADIUS itself: the account read from the user
  database, the profile, the audit record spooled), with 32 and 64 in
  flight, p50 and p99, from the gateway's host (a real client, every
  request signed); then how many of those answers reached the audit log
  and how long after the load the last one did (the audit shipper);
- password checks per second (users FreeRADIUS has not seen: each costs an
  Argon2id check, against a decoy here), and the remembered path while they
  run, which shows rlm_python3's one-call-at-a-time limit;
- the anchor in the same run: stock FreeRADIUS (Debian's default site,
  `files` and PAP, the same users, the same client) on the same host and
  port, with the same load.

And IM (role `im`):

- presence fan-out: 50 users, all in one shared roster group, log in at
  once and announce their presence; the time until every user has seen all
  49 others, with the collection's module that puts the observed address in
  presence (mod_dmzkit_client_address) and, the anchor, the same Prosody
  without it. Both run as a bench-only Prosody on im1's loopback (its own
  configuration, accounts and port, removed after; plain TCP, since
  loopback), beside the real one, which is left alone; the clients
  (presence_load.py, slixmpp) run on im1 too.

And the IPsec gateway (role `ipsec_gateway`):

- IKE_SA setups for 100 clients behind one NAT: a charon per client on
  branch1, each on its own random ports, so nat1 gives each its own port on
  its one address; all ask at once, through nat1 and the edge firewall, a
  bench-only charon on gw1 (IKEv2 with certificates of a bench CA made on
  gw1, the role's IKE proposal, IKE_SAs only, no CHILD_SA) that stands in
  for the gateway's own, stopped meanwhile: with the role's DoS thresholds
  (ours) and with strongSwan's defaults (the anchor), in the same run. The
  time until the last client is in, each client's own time (p50, p99).

The RADIUS load generator (radius_load.py) runs on gw1; every loop is
bounded by its seconds and a count. Needs a lab with aaa1, gw1 and im1
deployed (`make demo`, or the converged `stack` configuration), and branch1
and nat1 for the IKE part. Stops AAA's FreeRADIUS while its anchor runs,
and gw1's strongSwan while the IKE part runs, and starts them again. Prints a table and a
JSON line.
"""
from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECRETS = Path("/var/lib/dmzkit-lab/secrets")
AAA_ADDRESS = "198.18.2.20"
GATEWAY_ADDRESS = "198.18.1.11"
GATEWAY = "gw1"
AAA = "aaa1"
DATABASE = "db1"
# FreeRADIUS's spool of its answers, which the audit shipper takes away.
ANSWERS = "/var/lib/dmzkit-aaa-audit/answers"
IM = "im1"
PRESENCE_DIR = "/run/dmzkit-bench-prosody"
PRESENCE_PORT = 15222
PRESENCE_UNIT = "dmzkit-bench-prosody"
PRESENCE_DOMAIN = "bench.lab.dmzkit.test"
# A Prosody for the fan-out alone: loopback, its own accounts (internal,
# plain: loopback only), one shared roster group, the module or not.
PRESENCE_CONFIG = """
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
plugin_paths = {{ "/usr/local/lib/dmzkit-prosody" }}
modules_enabled = {{ "roster"; "saslauth"; "disco"; "groups"; {module} }}
modules_disabled = {{ "s2s"; "register"; "offline"; "tls"; }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
groups_file = "{dir}/groups.txt"
log = {{ error = "{dir}/error.log" }}
VirtualHost "{domain}"
"""
USERS = ("alice", "carol")
BRANCH = "branch1"
GATEWAY_VIP = "198.18.1.10"
IKE_DIR = "/run/dmzkit-bench-ike"
IKE_UNIT = "dmzkit-bench-ike"
# charon with what IKE with certificates needs (OpenSSL for the crypto).
IKE_PLUGINS = "random nonce kdf hmac sha2 openssl pem pkcs1 pkcs8 x509 pubkey constraints kernel-netlink socket-default vici"
# No routes, routing rule or virtual address: a bench charon that stops
# must not take the host's own charon's routing rule with it.
IKE_SETTINGS = """charon {{
    load_modular = no
    load = {plugins}
    install_routes = no
    install_virtual_ip = no
    routing_table = 0
    port = {port}
    port_nat_t = {port_nat_t}
{settings}    plugins {{
        vici {{
            socket = unix://{dir}/charon.vici
        }}
    }}
}}
charon-systemd {{
    journal {{
        default = -1
    }}
}}
"""
IKE_CONNECTION = """connections {{
    bench {{
        version = 2
        proposals = {proposals}
{more}        local {{
            auth = pubkey
            certs = cert.pem
            id = {local}
        }}
        remote {{
            auth = pubkey
{remote}        }}
    }}
}}
"""
# Run on gw1 (its python3-cryptography): a bench CA, the responder's
# certificate and key into the directory given, and one per client, with
# the CA, in a tar on standard output. ECDSA P-256, valid for two hours.
IKE_CERTIFICATES = """
import datetime, io, sys, tarfile
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
directory, clients = sys.argv[1], int(sys.argv[2])
now = datetime.datetime.now(datetime.timezone.utc)
def certificate(name, key, issuer, issuer_key, ca):
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=2)))
    builder = (builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True) if ca else
               builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False))
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
def pair(name):
    key = ec.generate_private_key(ec.SECP256R1())
    return certificate(name, key, ca_name, ca_key, False), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
ca_key = ec.generate_private_key(ec.SECP256R1())
ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dmzkit bench CA")])
ca = certificate("dmzkit bench CA", ca_key, ca_name, ca_key, True)
files = {"x509ca/ca.pem": ca}
files["x509/cert.pem"], files["private/key.pem"] = pair("bench-gw.lab.dmzkit.test")
for path, content in files.items():
    with open(f"{directory}/{path}", "wb") as out:
        out.write(content)
archive = io.BytesIO()
with tarfile.open(fileobj=archive, mode="w") as tar:
    for i in range(clients):
        cert, key = pair(f"bench-client-{i}.lab.dmzkit.test")
        for path, content in ((f"c{i}/x509ca/ca.pem", ca), (f"c{i}/x509/cert.pem", cert), (f"c{i}/private/key.pem", key)):
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(content), 0o600
            tar.addfile(info, io.BytesIO(content))
sys.stdout.buffer.write(archive.getvalue())
"""
ANCHOR_DIR = "/run/dmzkit-bench-anchor"
# Debian 12's enabled modules and sites, as the freeradius package installs them.
DEBIAN_MODULES = ("always", "attr_filter", "chap", "detail", "detail.log", "digest", "dynamic_clients", "eap",
                  "echo", "exec", "expiration", "expr", "files", "linelog", "logintime", "mschap", "ntlm_auth",
                  "pap", "passwd", "preprocess", "radutmp", "realm", "replicate", "soh", "sradutmp", "unix",
                  "unpack", "utf8")
DEBIAN_SITES = ("default", "inner-tunnel")


def secret(name: str) -> str:
    return (SECRETS / name).read_text().strip()


def podman(host: str, script: str, data: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "exec", "-i", host, "bash", "-c", script], input=data, capture_output=True,
                          text=True, timeout=timeout, check=False)


def start_load(seconds: float, inflight: int, users: list[tuple[str, str]],
               count: int = 10_000_000) -> subprocess.Popen[str]:
    """radius_load.py on the gateway's host, against AAA (bounded by seconds and count)."""
    run = subprocess.Popen(
        ["podman", "exec", "-i", GATEWAY, "python3", "-c", (HERE / "radius_load.py").read_text(), AAA_ADDRESS, "1812",
         str(seconds), str(count), str(inflight), "ocserv"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert run.stdin is not None
    run.stdin.write(json.dumps({"secret": secret("aaa_gw1"), "users": users}))
    run.stdin.close()
    return run


def result(run: subprocess.Popen[str], seconds: float) -> dict:
    assert run.stdout is not None and run.stderr is not None
    out = run.stdout.read()  # one JSON line at the end; stderr stays small
    err = run.stderr.read()
    run.wait(timeout=seconds + 60)
    if run.returncode != 0:
        raise RuntimeError(f"load generator failed: {err.strip()[-500:]}")
    return json.loads(out)


def load(seconds: float, inflight: int, users: list[tuple[str, str]], count: int = 10_000_000) -> dict:
    return result(start_load(seconds, inflight, users, count), seconds)


def answers_recorded() -> int:
    run = podman(DATABASE, "runuser -u postgres -- psql -d dmzkit -AtX -c "
                           "\"SELECT count(*) FROM dmzkit.audit_log WHERE event = 'aaa.access'\"")
    if run.returncode != 0:
        raise RuntimeError(f"cannot count the audit records: {run.stderr.strip()[-300:]}")
    return int(run.stdout)


def shipped_after(timeout: float = 120) -> float:
    """Seconds until AAA's spool is empty and no file taken from it is left."""
    start = time.monotonic()
    run = podman(AAA, f"for i in $(seq {int(timeout * 10)}); do if ! test -s {ANSWERS} && ! test -e {ANSWERS}.work; "
                      "then exit 0; fi; sleep 0.1; done; exit 1", timeout=timeout + 30)
    if run.returncode != 0:
        raise RuntimeError(f"AAA's answers were not in the audit log within {timeout:.0f} s")
    return time.monotonic() - start


def make_anchor(users: list[tuple[str, str]]) -> None:
    """Debian's stock configuration in ANCHOR_DIR: its default sites and
    modules, gw1 as the one client (Message-Authenticator required, as ours),
    the users in `files`. Secrets go through standard input."""
    steps = [
        (f"rm -rf {ANCHOR_DIR}; mkdir -p {ANCHOR_DIR}; chmod 0750 {ANCHOR_DIR}; "
         f"cp -a /etc/freeradius/3.0/. {ANCHOR_DIR}/; cd {ANCHOR_DIR}; rm -f mods-enabled/* sites-enabled/*; "
         f"for m in {' '.join(DEBIAN_MODULES)}; do ln -s ../mods-available/$m mods-enabled/$m; done; "
         f"for s in {' '.join(DEBIAN_SITES)}; do ln -s ../sites-available/$s sites-enabled/$s; done; "
         ": > dictionary", None),
        (f"umask 077; cat > {ANCHOR_DIR}/clients.conf",
         f'client gw1 {{\n\tipaddr = {GATEWAY_ADDRESS}\n\tsecret = "{secret("aaa_gw1")}"\n'
         "\trequire_message_authenticator = yes\n}\n"),
        (f"umask 077; cat > {ANCHOR_DIR}/mods-config/files/authorize",
         "".join(f'{user} Cleartext-Password := "{password}"\n' for user, password in users)),
        f"chown -R freerad:freerad {ANCHOR_DIR}; freeradius -XC -d {ANCHOR_DIR} >/dev/null",
    ]
    for step in steps:
        script, data = step if isinstance(step, tuple) else (step, None)
        done = podman(AAA, "set -e; " + script, data)
        if done.returncode != 0:
            raise RuntimeError(f"stock configuration refused: {done.stdout[-800:]}{done.stderr[-800:]}")


def run_anchor(users: list[tuple[str, str]], seconds: float) -> dict[int, dict]:
    make_anchor(users)
    results: dict[int, dict] = {}
    try:
        podman(AAA, "systemctl stop freeradius.service")
        started = podman(AAA, f"(timeout {int(4 * seconds + 60)} freeradius -f -d {ANCHOR_DIR} >/dev/null 2>&1 &) ; "
                              f"sleep 2; pgrep -f '^freeradius -f -d {ANCHOR_DIR}' >/dev/null")
        if started.returncode != 0:
            raise RuntimeError("stock FreeRADIUS did not start")
        load(1, 8, users)  # warm
        for inflight in (32, 64):
            results[inflight] = load(seconds, inflight, users)
    finally:
        # Anchored: the shell running this line has the pattern in its own command line.
        podman(AAA, f"pkill -f '^freeradius -f -d {ANCHOR_DIR}'; sleep 1; rm -rf {ANCHOR_DIR}; "
                    "systemctl start freeradius.service")
        if podman(AAA, "systemctl is-active --quiet freeradius.service").returncode != 0:
            print("AAA's FreeRADIUS did not start again: systemctl start freeradius.service on aaa1", file=sys.stderr)
    return results


def start_transient(host: str, unit: str, command: str, ready: str, seconds: float, what: str) -> None:
    """Run `command` (systemd-run's options, then the program) on `host` as
    a transient unit, stopped by name and by itself after `seconds`, and
    wait up to 20 s until `ready` (a shell test) holds."""
    started = podman(host, f"systemd-run --quiet --collect --unit {unit} --property RuntimeMaxSec={int(seconds)} {command} "
                           f"&& timeout 20 sh -c \"until {ready}; do sleep 0.1; done\"")
    if started.returncode != 0:
        raise RuntimeError(f"{what} did not start on {host}: {started.stderr[-500:]}")


def presence_fanout(users: int, timeout: float) -> dict[str, dict]:
    """Presence fan-out on a bench-only Prosody on im1's loopback, with the
    collection's module and without it (the anchor), in that order."""
    config = f"{PRESENCE_DIR}/prosody.cfg.lua"
    group = "".join(f"bench{i}@{PRESENCE_DOMAIN}\n" for i in range(users))
    results: dict[str, dict] = {}
    try:
        setup = podman(IM, f"set -e; rm -rf {PRESENCE_DIR}; install -d -o prosody -g prosody -m 0750 {PRESENCE_DIR} "
                           f"{PRESENCE_DIR}/data; printf '[bench]\\n%s' '{group}' > {PRESENCE_DIR}/groups.txt")
        if setup.returncode != 0:
            raise RuntimeError(f"bench Prosody: {setup.stderr[-500:]}")
        for name, module in (("ours", '"dmzkit_client_address";'), ("anchor", "")):
            podman(IM, f"cat > {config}",
                   PRESENCE_CONFIG.format(dir=PRESENCE_DIR, port=PRESENCE_PORT, domain=PRESENCE_DOMAIN, module=module))
            podman(IM, f"chown prosody:prosody {config} {PRESENCE_DIR}/groups.txt")
            if name == "ours":
                registered = podman(IM, f"for i in $(seq 0 {users - 1}); do runuser -u prosody -- prosodyctl --config {config} "
                                        f"register bench$i {PRESENCE_DOMAIN} bench || exit 1; done", timeout=300)
                if registered.returncode != 0:
                    raise RuntimeError(f"bench accounts: {registered.stdout[-300:]}{registered.stderr[-300:]}")
            listening = f"ss -ltn | grep -qF '127.0.0.1:{PRESENCE_PORT} '"
            if podman(IM, listening).returncode == 0:
                raise RuntimeError(f"port {PRESENCE_PORT} is taken on {IM}")
            start_transient(IM, PRESENCE_UNIT, f"--uid prosody --gid prosody prosody --config {config} -F", listening,
                            timeout + 120, "bench Prosody")
            run = podman(IM, f"python3 -c \"$(cat)\" {PRESENCE_PORT} {PRESENCE_DOMAIN} {users} {timeout}",
                         (HERE / "presence_load.py").read_text(), timeout=timeout + 60)
            podman(IM, f"systemctl stop {PRESENCE_UNIT}")
            if run.returncode != 0:
                raise RuntimeError(f"presence load failed: {run.stderr[-500:]}")
            results[name] = json.loads(run.stdout.strip().splitlines()[-1])
    finally:
        podman(IM, f"systemctl stop {PRESENCE_UNIT}; rm -rf {PRESENCE_DIR}")
    return results


def role_default(name: str) -> str:
    """A default of role ipsec_gateway as the role ships it: the bench's
    gateway is set up as the role sets up the real one."""
    found = re.search(rf"^{name}: (.+)$", (HERE.parent / "roles/ipsec_gateway/defaults/main.yml").read_text(), re.M)
    if not found:
        raise RuntimeError(f"no {name} in role ipsec_gateway's defaults")
    return found.group(1).strip()


def tar_of(files: dict[str, str]) -> bytes:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for path, text in files.items():
            content = text.encode()
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(content), 0o600
            tar.addfile(info, io.BytesIO(content))
    return archive.getvalue()


def ike_setups(clients: int, timeout: float) -> dict[str, dict]:
    """IKE_SA setups from `clients` charons on branch1 (behind nat1) to a
    bench-only charon on gw1, with the role's DoS thresholds and with
    strongSwan's defaults, in that order."""
    proposals = ",".join(p.strip() for p in role_default("ipsec_gateway_ike_proposals").strip("[]").split(","))
    ours = {"block_threshold": int(role_default("ipsec_gateway_half_open_per_address")),
            "cookie_threshold": int(role_default("ipsec_gateway_cookie_threshold"))}
    gateway_id = "bench-gw.lab.dmzkit.test"
    configuration = tar_of({
        # A client does little: few threads each, or a hundred charons would
        # outgrow the container's task limit.
        **{f"c{i}/strongswan.conf": IKE_SETTINGS.format(plugins=IKE_PLUGINS, port=0, port_nat_t=0, settings="    threads = 8\n",
                                                        dir=f"{IKE_DIR}/c{i}") for i in range(clients)},
        **{f"c{i}/swanctl.conf": IKE_CONNECTION.format(
            proposals=proposals, more=f"        remote_addrs = {GATEWAY_VIP}\n        childless = force\n",
            local=f"bench-client-{i}.lab.dmzkit.test", remote=f"            id = {gateway_id}\n") for i in range(clients)}})
    vici = f"unix://{IKE_DIR}/charon.vici"
    results: dict[str, dict] = {}
    try:
        # The clients' certificates come back as a tar on standard output.
        made = subprocess.run(["podman", "exec", "-i", GATEWAY, "bash", "-c",
                               f"set -e; rm -rf {IKE_DIR}; install -d -m 0700 {IKE_DIR} {IKE_DIR}/x509 {IKE_DIR}/x509ca "
                               f"{IKE_DIR}/private; python3 -c \"$(cat)\" {IKE_DIR} {clients}"],
                              input=IKE_CERTIFICATES.encode(), capture_output=True, timeout=120, check=False)
        if made.returncode != 0:
            raise RuntimeError(f"bench certificates: {made.stderr.decode()[-500:]}")
        podman(GATEWAY, f"cat > {IKE_DIR}/swanctl.conf", IKE_CONNECTION.format(
            proposals=proposals, more="        unique = never\n", local=gateway_id, remote=""))
        podman(BRANCH, f"rm -rf {IKE_DIR}; install -d -m 0700 {IKE_DIR}")
        for archive in (made.stdout, configuration):
            if subprocess.run(["podman", "exec", "-i", BRANCH, "tar", "-x", "-C", IKE_DIR], input=archive,
                              capture_output=True, check=False).returncode != 0:
                raise RuntimeError(f"bench IKE files could not be unpacked on {BRANCH}")
        podman(GATEWAY, "systemctl stop strongswan.service")
        for name, settings in (("ours", ours), ("anchor", {})):
            podman(GATEWAY, f"cat > {IKE_DIR}/strongswan.conf", IKE_SETTINGS.format(
                plugins=IKE_PLUGINS, port=500, port_nat_t=4500, dir=IKE_DIR,
                settings="".join(f"    {key} = {value}\n" for key, value in settings.items())))
            podman(GATEWAY, f"rm -f {IKE_DIR}/charon.vici")
            start_transient(GATEWAY, IKE_UNIT, f"--setenv STRONGSWAN_CONF={IKE_DIR}/strongswan.conf /usr/sbin/charon-systemd",
                            f"[ -S {IKE_DIR}/charon.vici ]", timeout + 300, "bench gateway")
            loaded = podman(GATEWAY, f"swanctl --load-all --noprompt --file {IKE_DIR}/swanctl.conf --uri {vici}")
            if loaded.returncode != 0:
                raise RuntimeError(f"bench gateway's connection: {loaded.stderr[-500:]}")
            # (ike_load.py waits for each client's socket.)
            podman(BRANCH, f"rm -f {IKE_DIR}/c*/charon.vici")
            start_transient(BRANCH, IKE_UNIT, f"bash -c 'for d in {IKE_DIR}/c*; do STRONGSWAN_CONF=$d/strongswan.conf "
                                              f"/usr/sbin/charon-systemd & done; wait'", "true", timeout + 300, "bench clients")
            run = podman(BRANCH, f"python3 -c \"$(cat)\" {IKE_DIR} {clients} {timeout}", (HERE / "ike_load.py").read_text(),
                         timeout=timeout + 120)
            at_gateway = podman(GATEWAY, f"swanctl --list-sas --uri {vici} 2>/dev/null | grep -c ', ESTABLISHED, '").stdout
            podman(BRANCH, f"systemctl stop {IKE_UNIT}")
            podman(GATEWAY, f"systemctl stop {IKE_UNIT}")
            if run.returncode != 0:
                raise RuntimeError(f"IKE load failed: {run.stderr[-500:]}")
            results[name] = {**json.loads(run.stdout.strip().splitlines()[-1]), "settings": settings,
                             "established_at_gateway": int(at_gateway.strip() or 0)}
    finally:
        podman(BRANCH, f"systemctl stop {IKE_UNIT}; rm -rf {IKE_DIR}")
        podman(GATEWAY, f"systemctl stop {IKE_UNIT}; rm -rf {IKE_DIR}; systemctl start strongswan.service")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="each load run (at most 60)")
    parser.add_argument("--parts", default="aaa,presence,ike", help="what to measure, of aaa, presence and ike")
    parser.add_argument("--presence-users", type=int, default=50, help="users in the fan-out (2-200)")
    parser.add_argument("--ike-clients", type=int, default=100, help="IPsec clients behind the NAT (2-200)")
    args = parser.parse_args(argv)
    seconds = min(max(args.seconds, 1.0), 60.0)
    parts = set(args.parts.split(","))
    code = 0
    if "aaa" in parts:
        code = bench_aaa(seconds)
    if "presence" in parts:
        users = min(max(args.presence_users, 2), 200)
        fanout = presence_fanout(users, timeout=60)
        for name, label in (("ours", "with the observed address (our module)"), ("anchor", "Prosody without it")):
            r = fanout[name]
            figure = f"{r['seconds']:.2f} s" if r["seconds"] is not None else f"incomplete ({r['complete']} of {users} users)"
            print(f"presence fan-out, {users} users x {users - 1} buddies, {label:<40} {figure}"
                  f"  presences seen {r['presences_seen']:,}, with the address {r['with_address']:,}")
        print(json.dumps({"presence": fanout}))
        # Ours puts the address in every presence, the anchor in none.
        if (any(r["seconds"] is None for r in fanout.values()) or fanout["anchor"]["with_address"]
                or fanout["ours"]["with_address"] != fanout["ours"]["presences_seen"]):
            code = 1
    if "ike" in parts:
        clients = min(max(args.ike_clients, 2), 200)
        setups = ike_setups(clients, timeout=90)
        for name, label in (("ours", "ours ({})".format(", ".join(f"{k} {v}" for k, v in setups["ours"]["settings"].items()))),
                            ("anchor", "strongSwan's defaults")):
            r = setups[name]
            figure = (f"{r['rate']:6.1f}/s  all in {r['seconds']:6.2f} s" if r["seconds"] is not None
                      else f"incomplete: {r['established']} of {clients} in {90} s")
            print(f"IKE_SA setups, {clients} clients behind one NAT, {label:<50} {figure}  p50 {r['p50'] or 0:6.2f} s"
                  f"  p99 {r['p99'] or 0:6.2f} s  established at the gateway {r['established_at_gateway']}")
        print(json.dumps({"ike": setups}))
        if setups["ours"]["seconds"] is None:
            code = 1
    return code


def bench_aaa(seconds: float) -> int:
    users = [(user, secret(f"sso_{user}")) for user in USERS]

    for user in users:  # each password checked once, then remembered
        load(1, 1, [user], count=1)
    shipped_after()
    before = answers_recorded()
    ours = {inflight: load(seconds, inflight, users) for inflight in (32, 64)}
    # Every answer has its record, shipped after the load (the anchor keeps none).
    drained = shipped_after()
    audit = {"records": answers_recorded() - before, "drained_after": drained,
             "answers": sum(r["accepted"] + r["rejected"] for r in ours.values())}
    # Users nobody has: every request is a password check (against the decoy).
    strangers = [(f"bench-stranger-{i}", "no password") for i in range(64)]
    checks = load(min(seconds, 5.0), 4, strangers)
    # Both at once: the remembered path while password checks queue.
    both = [start_load(seconds, 32, users), start_load(seconds, 4, strangers)]
    mixed, mixed_checks = (result(run, seconds) for run in both)
    anchor = run_anchor(users, seconds)

    def row(name: str, r: dict) -> str:
        return (f"{name:<46} {r['rate']:>9,.0f}/s  p50 {1000 * (r['p50'] or 0):7.1f} ms  p99 {1000 * (r['p99'] or 0):7.1f} ms"
                f"  accepted {r['accepted']:>7,}  rejected {r['rejected']:>5,}  lost {r['lost']:>4,}")
    print(row("ours, remembered password, 32 in flight", ours[32]))
    print(row("ours, remembered password, 64 in flight", ours[64]))
    print(row("ours, password checks (unknown users), 4", checks))
    print(row("ours, remembered, 32, while checks run", mixed))
    print(row("ours, password checks, 4, at the same time", mixed_checks))
    print(row("stock FreeRADIUS (files, PAP), 32 in flight", anchor[32]))
    print(row("stock FreeRADIUS (files, PAP), 64 in flight", anchor[64]))
    print(f"{'ours, answers of the two runs in the audit log':<46} {audit['records']:>9,} of {audit['answers']:,}"
          f" answered, all in {audit['drained_after']:.1f} s after the load")
    print(json.dumps({"ours": ours, "checks": checks, "mixed": mixed, "mixed_checks": mixed_checks, "anchor": anchor,
                      "audit": audit}))
    lost = sum(r["lost"] for r in (*ours.values(), *anchor.values()))
    return 1 if lost or any(r["rejected"] for r in (*ours.values(), *anchor.values())) else 0


if __name__ == "__main__":
    sys.exit(main())
