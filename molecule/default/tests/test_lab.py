"""The lab harness: systemd everywhere, and the edge firewall's policy
observed from the hosts on each side of it."""
from __future__ import annotations

import pytest


def test_systemd_is_running_on_every_host(lab):
    for member in lab:
        state = member.host.run("systemctl is-system-running").stdout.strip()
        assert state == "running", f"{member.name}: {state}"


def test_firewall_policy_is_loaded(lab):
    ruleset = lab["fw1"].host.run_test("nft list table inet edge_firewall").stdout
    assert "policy drop" in ruleset
    assert lab["fw1"].host.service("nftables").is_enabled


def test_internet_reaches_the_dmz_services(lab, tcp_listener):
    tcp_listener("gw1", 443)
    gateway = lab["gw1"].address("dmz")
    assert lab["client1"].pings(gateway)
    assert lab["client1"].connects(gateway, 443)


def test_internet_cannot_reach_other_dmz_ports(lab, tcp_listener):
    tcp_listener("gw1", 8080)
    gateway = lab["gw1"].address("dmz")
    # The listener answers on the gateway itself, so only the firewall stops the client.
    assert lab["gw1"].connects(gateway, 8080)
    assert not lab["client1"].connects(gateway, 8080)


@pytest.fixture
def client_route_to_internal(lab):
    """A client that sends internal-bound traffic to the firewall anyway."""
    client = lab["client1"].host
    route = f"{lab['app1'].address('internal').rsplit('.', 1)[0]}.0/24 via {lab['fw1'].address('internet')}"
    client.run_test(f"ip route replace {route}")
    yield
    client.run(f"ip route del {route}")


def test_internet_cannot_reach_the_internal_network(lab, client_route_to_internal):
    app = lab["app1"].address("internal")
    assert not lab["client1"].pings(app)
    assert not lab["client1"].connects(app, 22)


def test_dmz_and_internal_ping_each_other(lab):
    assert lab["gw1"].pings(lab["app1"].address("internal"))
    assert lab["app1"].pings(lab["gw1"].address("dmz"))


def test_firewall_itself_answers_only_the_management_zone(lab):
    assert lab["app1"].pings(lab["fw1"].address("internal"))
    assert not lab["client1"].pings(lab["fw1"].address("internet"))
