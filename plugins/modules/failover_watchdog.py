#!/usr/bin/python
# Copyright: dmzkit maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: failover_watchdog
short_description: Configure the failover watchdog of a VNC backup host
version_added: 0.1.0
description:
  - Writes the watchdog's JSON configuration, by default root only (O(mode)
    C(0600)), as hooks and fence commands may name credentials files. The
    new file is never readable by others, not even for a moment, and
    replaces the old one atomically.
  - The new file is checked by the watchdog's own C(check-config) before it
    replaces the old one, also in check mode, so a value the service would
    refuse is refused here, with the service's message, and nothing changes.
    Every setting is validated there, and only there.
  - Restarting the service is the caller's business (the C(failover_watchdog)
    role notifies a handler); a restart keeps a VIP the watchdog holds.
  - The commands of O(fence) and O(hooks) are argv, and their arguments never
    come back in the result. The diff shows each command's program and its
    arguments as C(********), marked C(changed) in parentheses where one
    differs, and RV(changed_settings) names the settings that differ, so a
    run tells what it changed without showing the values. Their arguments are masked in the
    result's C(invocation) too; they are not C(no_log) options, as Ansible
    would then blank out every occurrence of each argument (C(off), C(on), a
    path) anywhere in the result, and a secret does not belong there anyway.
  - No secret belongs on a command line. The watchdog runs O(fence) and
    O(hooks) with the arguments given, so any local user sees them in C(ps)
    (C(/proc/PID/cmdline)) while the command runs, and the module's own
    invocation is logged to the host's journal as Ansible logs every
    module's. A command that needs a secret reads it from a file instead,
    one only root can read (C(0600)), named by its path in the arguments, or
    a credential of the watchdog's unit (role variable
    C(failover_watchdog_credentials), systemd C(LoadCredential)), which the
    command finds in the directory C($CREDENTIALS_DIRECTORY) it inherits from
    the watchdog.
author: dmzkit maintainers (@dmzkit)
options:
  path:
    description:
      - The configuration file.
      - Its O(mode) is C(0600) unless given.
    type: path
    default: /etc/dmzkit-failover-watchdog/config.json
  executable:
    description: The watchdog's command line, used for C(check-config).
    type: path
    default: /opt/dmzkit/venv/bin/dmzkit-failover-watchdog
  interface:
    description: The standby NIC.
    type: str
    required: true
  vip:
    description: The primary's service address with its prefix.
    type: str
    required: true
  routing_table:
    description: Table of the standby NIC's policy rule (module M(dmzkit.remote_access.standby_nic)); the watchdog puts the VIP's routes in it at each takeover.
    type: int
  gateway:
    description: Next hop for VIP-sourced replies to other networks (default route of O(routing_table)).
    type: str
  vip6:
    description: Optional IPv6 service address with its prefix, announced by unsolicited NA.
    type: str
  vip6_is_router:
    description: Set the Router flag in the unsolicited NA (the VIP is the clients' default router).
    type: bool
    default: false
  primary_macs:
    description: MACs the primary answers with.
    type: list
    elements: str
    required: true
  primary_mgmt:
    description: The primary's management address.
    type: str
    required: true
  witness:
    description: Third address that tells an isolated backup from a dead primary.
    type: str
    required: true
  profile:
    description: Probe timing, see docs/failover.md.
    type: str
    choices: [conservative, default, fast]
    default: default
  interval:
    description: Override the profile's probe interval (seconds, >= 0.02).
    type: float
  misses:
    description: Override the profile's number of unanswered probes (>= 2).
    type: int
  health:
    description:
      - The primary's VPN health agent (C(dmzkit-vpn-health)) on its management address. With a fence, a primary
        whose host answers but whose agent reports the VPN down O(health.down_reports) times in a row, or whose
        agent's connection stays silent for O(health.silent_after) seconds (a frozen host), is fenced, then taken
        over. An agent that cannot be reached is never a reason to fence.
      - Left out, no agent is heard and only a silent primary is taken over.
    type: dict
    suboptions:
      port:
        description: The agent's TCP port.
        type: int
        required: true
      ca_file:
        description: The CA chain the agent's certificate must chain to.
        type: path
        required: true
      crl_file:
        description: The issuing CA's CRL, read again at each connection.
        type: path
        required: true
      certificate:
        description: The watchdog's client certificate (with its chain), a host certificate of the same CA.
        type: path
        required: true
      private_key:
        description: Its private key.
        type: path
        required: true
      down_reports:
        description: Consecutive "down" reports that make the VPN dead, at least 2.
        type: int
        default: 2
      silent_after:
        description: Seconds of silence of an authenticated connection, the primary answering ARP, that make it frozen.
        type: float
        default: 2.0
  failback:
    description: C(auto) hands the VIP back after O(hold_down) of a healthy primary; C(manual) waits for an operator.
    type: str
    choices: [auto, manual]
    default: auto
  hold_down:
    description: Seconds the primary must be healthy before the handback.
    type: float
    default: 30
  damping:
    description: At most C(max_takeovers) in C(window) seconds, each active for at least C(min_active) seconds.
    type: dict
    default: {}
    suboptions:
      max_takeovers:
        type: int
        default: 3
        description: Takeovers allowed in the window; then the watchdog stays put until reset.
      window:
        type: float
        default: 600
        description: Seconds of the damping window.
      min_active:
        type: float
        default: 10
        description: Seconds a takeover holds before an automatic handback.
  fence:
    description: How to take the VIP from a primary that answers ARP but whose VPN is dead.
    type: dict
    default: {}
    suboptions:
      mode:
        type: str
        choices: [none, best_effort, required]
        default: none
        description: C(required) takes over only after C(off) succeeded.
      "off":
        type: list
        elements: str
        default: []
        description:
          - Command (argv, no shell) that cuts the primary off.
          - No secret in its arguments (see above); they are not returned.
      "on":
        type: list
        elements: str
        default: []
        description:
          - Command that reconnects it.
          - No secret in its arguments (see above); they are not returned.
      timeout:
        type: float
        default: 5
        description: Seconds a fence command may take.
  services:
    description: systemd units started on takeover and stopped on handback.
    type: list
    elements: str
    default: []
  hooks:
    description:
      - Commands (argv) run on C(on_takeover), C(on_handback), C(on_yield), C(on_fault), C(on_conflict),
        C(on_forged_claim).
      - No secret in their arguments (see above); they are not returned.
    type: dict
    default: {}
  metrics_listen:
    description: Address and port of the Prometheus endpoint.
    type: str
    default: 127.0.0.1:9468
extends_documentation_fragment:
  - ansible.builtin.files
  - dmzkit.remote_access.attributes
"""

EXAMPLES = r"""
- name: Watch the gateway, fence it through the lab switch when its health agent says its VPN died
  dmzkit.remote_access.failover_watchdog:
    interface: standby0
    vip: 198.18.1.10/24
    primary_macs: [02:42:c6:12:01:0b]
    primary_mgmt: 198.18.1.11
    witness: 198.18.1.254
    routing_table: 100
    gateway: 198.18.1.254
    health:
      port: 9470
      ca_file: /etc/dmzkit-pki/ca-chain.pem
      crl_file: /etc/dmzkit-pki/crl.pem
      certificate: /etc/dmzkit-pki/vnc1-failover-watchdog.fullchain.pem
      private_key: /etc/dmzkit-pki/vnc1-failover-watchdog.key
    fence:
      mode: required
      # The switch's token is read from a root-only file, not given here.
      "off": [/usr/local/sbin/dmzkit-fence, --token-file, /etc/dmzkit-fence/token, "off"]
"""

RETURN = r"""
path:
  description: The configuration file.
  returned: success
  type: str
  sample: /etc/dmzkit-failover-watchdog/config.json
changed_settings:
  description:
    - The settings whose value differs from the file's, C(fence) and C(hooks) among them when any of their
      commands changed; empty when only the file's mode or owner changed. Names only, never values.
  returned: success
  type: list
  elements: str
  sample: [fence, hold_down]
"""

import copy
import json

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dmzkit.remote_access.plugins.module_utils._io import Candidate, file_attributes, read_bytes
from ansible_collections.dmzkit.remote_access.plugins.module_utils._service import run_service

MASK = "********"
SETTINGS = ("interface", "vip", "routing_table", "gateway", "vip6", "vip6_is_router", "primary_macs", "primary_mgmt",
            "witness", "profile", "interval", "misses", "health", "failback", "hold_down", "damping", "fence", "services", "hooks", "metrics_listen")


def masked_argv(argv: object, old: object = None) -> object:
    """A command for the result: its program, and each argument as MASK.
    Compared with `old` (the command it replaces, [] for none), an argument
    that differs is "MASK (changed)"."""
    if argv == []:
        return []  # no command
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        return MASK  # not a command line: check-config refuses it, and nothing of it is shown

    def argument(n: int, value: str) -> str:
        same = old is None or (isinstance(old, list) and n < len(old) and old[n] == value)
        return MASK if same else f"{MASK} (changed)"
    return [argv[0], *(argument(n, a) for n, a in enumerate(argv[1:], 1))]


def masked(config: dict, other: dict | None = None) -> dict:
    """The configuration with the arguments of its commands (fence, hooks)
    masked; compared with `other`, an argument that differs says so."""
    shown = dict(config)
    for key, commands in (("fence", ("off", "on")), ("hooks", None)):
        value, old = config.get(key), (other or {}).get(key)
        if not isinstance(value, dict):
            continue
        old = old if isinstance(old, dict) else {}
        shown[key] = {name: masked_argv(v, old.get(name, []) if other is not None else None)
                      if commands is None or name in commands else v for name, v in value.items()}
    return shown


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/etc/dmzkit-failover-watchdog/config.json"),
            executable=dict(type="path", default="/opt/dmzkit/venv/bin/dmzkit-failover-watchdog"),
            interface=dict(type="str", required=True),
            vip=dict(type="str", required=True),
            routing_table=dict(type="int"),
            gateway=dict(type="str"),
            vip6=dict(type="str"),
            vip6_is_router=dict(type="bool", default=False),
            primary_macs=dict(type="list", elements="str", required=True),
            primary_mgmt=dict(type="str", required=True),
            witness=dict(type="str", required=True),
            profile=dict(type="str", choices=["conservative", "default", "fast"], default="default"),
            interval=dict(type="float"),
            misses=dict(type="int"),
            health=dict(type="dict", options=dict(
                port=dict(type="int", required=True),
                ca_file=dict(type="path", required=True),
                crl_file=dict(type="path", required=True),
                certificate=dict(type="path", required=True),
                private_key=dict(type="path", required=True),
                down_reports=dict(type="int", default=2),
                silent_after=dict(type="float", default=2.0),
            )),
            failback=dict(type="str", choices=["auto", "manual"], default="auto"),
            hold_down=dict(type="float", default=30.0),
            damping=dict(type="dict", default={}, options=dict(
                max_takeovers=dict(type="int", default=3),
                window=dict(type="float", default=600.0),
                min_active=dict(type="float", default=10.0),
            )),
            fence=dict(type="dict", default={}, options={
                "mode": dict(type="str", choices=["none", "best_effort", "required"], default="none"),
                "off": dict(type="list", elements="str", default=[]),
                "on": dict(type="list", elements="str", default=[]),
                "timeout": dict(type="float", default=5.0),
            }),
            services=dict(type="list", elements="str", default=[]),
            hooks=dict(type="dict", default={}),
            metrics_listen=dict(type="str", default="127.0.0.1:9468"),
        ),
        add_file_common_args=True,
        supports_check_mode=True,
    )
    p = module.params
    # An empty string is an optional setting left out.
    config = copy.deepcopy({k: p[k] for k in SETTINGS if p[k] not in (None, "")})
    config["primary_macs"] = sorted({m.lower() for m in p["primary_macs"]})
    # Every result, failures included, reports module.params as its
    # invocation: the commands' arguments are masked there from now on (as
    # ansible.builtin.copy's action censors its content).
    p.update(masked({"fence": p["fence"], "hooks": p["hooks"]}))
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    path = p["path"]
    current = read_bytes(path)
    try:
        before = json.loads(current) if current is not None else {}
    except ValueError:
        before = None
    if not isinstance(before, dict):
        before = None  # not the module's: every setting is new, and the old text is not shown
    attributes = file_attributes(module, path, "0600")
    with Candidate(module, path, text.encode()) as candidate:
        # Checked where the file will live, by the code that will run it.
        run_service(module, [p["executable"], "check-config", "%s"], candidate.name, path, "failover_watchdog")
        rewritten = current != text.encode()
        if rewritten and not module.check_mode:
            candidate.install(attributes)
    changed = rewritten or module.set_fs_attributes_if_different(attributes, False)

    # Names and masked commands only: the arguments of fence and hook commands never leave the host.
    differs = [k for k in sorted(set(config) | set(before or {})) if before is None or before.get(k) != config.get(k)]
    result = {"changed": changed, "path": path, "changed_settings": differs if rewritten else []}
    if module._diff:
        shown_before = "" if not before else json.dumps(masked(before), indent=2, sort_keys=True) + "\n"
        shown_after = json.dumps(masked(config, before or {}), indent=2, sort_keys=True) + "\n"
        result["diff"] = {"before": shown_before, "after": shown_after, "before_header": path, "after_header": path}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
