"""What the roles hand the agent and the watchdog, rendered by ansible-playbook
from their defaults and vars, read by the services' own settings code: a
role and a service that disagree fail here, not in the lab."""
from __future__ import annotations

import json
from pathlib import Path

import yaml
from role_render import ROLES, render, render_unit

from dmzkit_remote_access.failover_watchdog.settings import Settings as WatchdogSettings
from dmzkit_remote_access.vpn_health.settings import Settings as AgentSettings


def test_the_gateway_role_writes_settings_the_agent_accepts(tmp_path: Path) -> None:
    text = render(tmp_path, "ssl_vpn_gateway", "{{ __ssl_vpn_gateway_health_settings | to_nice_json }}",
                  inventory_hostname="gw1", ssl_vpn_gateway_vip="198.18.1.10/24",
                  __ssl_vpn_gateway_mgmt_address="198.18.1.11", ssl_vpn_gateway_health_checkers=["198.18.1.21"],
                  ssl_vpn_gateway_health_clients=["vnc1-failover-watchdog"])
    settings = AgentSettings.from_dict(json.loads(text))
    assert settings.listen == "198.18.1.11:9470"  # the gateway's own address, never the VIP, never 443
    assert settings.certificate == "/etc/dmzkit-pki/gw1-vpn-health.fullchain.pem"
    assert settings.clients == {"vnc1-failover-watchdog"}
    services = {s.unit: s for s in settings.services}
    assert services["ocserv.service"].listen == ("127.0.0.1:4443",)
    assert services["ocserv.service"].control == ("occtl", "show", "status")
    assert services["nginx.service"].listen == ("198.18.1.10:443",)


def test_the_agents_unit_is_restarted_by_systemds_watchdog_and_keeps_one_capability(tmp_path: Path) -> None:
    tasks = yaml.safe_load((ROLES / "ssl_vpn_gateway" / "tasks" / "health.yml").read_text(encoding="utf-8"))
    unit = next(task for task in tasks if task["name"] == "Run the VPN health agent")["vars"]["service_venv_unit"]
    text = render_unit(tmp_path, "ssl_vpn_gateway", unit, inventory_hostname="gw1",
                       ssl_vpn_gateway_vip="198.18.1.10/24", __ssl_vpn_gateway_mgmt_address="198.18.1.11")
    lines = set(text.splitlines())
    assert {"WatchdogSec=1", "Restart=always", "RestartSec=1", "StartLimitIntervalSec=0",
            "CapabilityBoundingSet=CAP_DAC_OVERRIDE", "AmbientCapabilities=CAP_DAC_OVERRIDE", "Nice=-10",
            "WatchdogSignal=SIGKILL", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK"} <= lines, text
    assert "ExecStart=/opt/dmzkit/venv/bin/dmzkit-vpn-health --config /etc/dmzkit-vpn-health/config.json" in lines


def test_the_watchdog_role_names_the_agent_the_watchdog_accepts(tmp_path: Path) -> None:
    health = render(tmp_path, "failover_watchdog", "{{ __failover_watchdog_health_settings }}",
                    inventory_hostname="vnc1", failover_watchdog_health_port=9470)
    # As the module hands it over (its `health` options convert the types).
    health = {**health, "port": int(health["port"]), "down_reports": int(health["down_reports"]),
              "silent_after": float(health["silent_after"])}
    settings = WatchdogSettings.from_dict({"interface": "standby0", "vip": "198.18.1.10/24",
                                           "primary_macs": ["02:00:00:00:00:0a"], "primary_mgmt": "198.18.1.11",
                                           "witness": "198.18.1.254", "health": health})
    assert settings.health is not None and settings.health.port == 9470
    assert settings.health.certificate == "/etc/dmzkit-pki/vnc1-failover-watchdog.fullchain.pem"
    assert (settings.health.down_reports, settings.health.silent_after) == (2, 2.0)
    assert render(tmp_path, "failover_watchdog", "{{ __failover_watchdog_health }}") in (False, "False")
