#!/usr/bin/python
# Copyright: dmzkit maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: failover_watchdog_info
short_description: State, last transitions and metrics of a failover watchdog
version_added: 0.1.0
description:
  - Reads the state file the watchdog rewrites on every transition and when
    the health agent's state changes (a second late at most), and its
    Prometheus endpoint on the host's loopback. Changes nothing.
author: dmzkit maintainers (@dmzkit)
options:
  state_dir:
    description: The watchdog's runtime directory.
    type: path
    default: /run/dmzkit-failover-watchdog
  metrics_url:
    description: Where the watchdog serves its metrics; C(none) skips them.
    type: str
    default: http://127.0.0.1:9468/metrics
extends_documentation_fragment:
  - dmzkit.remote_access.attributes.info_module
"""

EXAMPLES = r"""
- name: Where is the VIP?
  dmzkit.remote_access.failover_watchdog_info:
  register: watchdog

- name: Show it
  ansible.builtin.debug:
    msg: "{{ watchdog.state }} since {{ watchdog.transitions[-1].at | default('start') }}"
"""

RETURN = r"""
running:
  description: Whether the watchdog has written its state (it runs, or ran since boot).
  returned: always
  type: bool
state:
  description: C(standby), C(suspect), C(fencing), C(confirm), C(takeover), C(active), C(handback), C(yield) or C(fault).
  returned: when running
  type: str
reason:
  description: Why it is in that state.
  returned: when running
  type: str
damped:
  description: True when the damping limit holds further takeovers back.
  returned: when running
  type: bool
transitions:
  description: The last transitions, oldest first, each with C(at) (Unix time), C(from), C(to) and C(reason).
  returned: when running
  type: list
  elements: dict
forged_claims:
  description: >-
    ARP claims of the VIP, or answers for the gateway's management address, from a MAC that is not the
    gateway's, since the watchdog started (ignored and alarmed; a watchdog of an older version reports 0).
  returned: when running
  type: int
defences:
  description: Gratuitous ARPs sent to defend the VIP against such claims since the watchdog started.
  returned: when running
  type: int
metrics:
  description: Every sample of the Prometheus endpoint, by metric name with its labels, e.g. C(dmzkit_failover_garp_sent_total).
  returned: when the endpoint answered
  type: dict
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url


def parse_metrics(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            state_dir=dict(type="path", default="/run/dmzkit-failover-watchdog"),
            metrics_url=dict(type="str", default="http://127.0.0.1:9468/metrics"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    result: dict = {"changed": False, "running": False}
    try:
        with open(os.path.join(p["state_dir"], "state.json"), encoding="utf-8") as f:
            state = json.load(f)
        result.update(running=True, state=state["state"], reason=state["reason"], damped=state["damped"],
                      transitions=state["transitions"], profile=state["profile"],
                      takeovers_in_window=state["takeovers_in_window"], conflicts=state["conflicts"],
                      scheduler_stalls=state["scheduler_stalls"],
                      forged_claims=state.get("forged_claims", 0), defences=state.get("defences", 0))
    except FileNotFoundError:
        module.exit_json(**result)
    except (OSError, ValueError, KeyError) as e:
        module.fail_json(msg=f"cannot read the watchdog's state: {e}")
    if p["metrics_url"] != "none":
        try:
            result["metrics"] = parse_metrics(open_url(p["metrics_url"], timeout=5).read().decode())
        except Exception as e:  # noqa: BLE001 - any failure to fetch is reported, not raised
            module.warn(f"metrics not read from {p['metrics_url']}: {e}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
