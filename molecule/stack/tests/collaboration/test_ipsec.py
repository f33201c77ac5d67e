"""The IPsec gateway: strongSwan on gw1 lets a user in with the device's
certificate AND the password, both checked by AAA (EAP-TTLS relayed by
eap-radius), into the access group AAA names: that group's pool and that
group's networks only. From client1 with swanctl."""
from __future__ import annotations

import ipaddress
import json
import re
import time

import pytest
from lab_aaa import APP, CLIENT, GW, audited, forged_answers, ipsec_sa, ipsec_tunnel, psql, secret

IDP = "idp1"
POOLS = {"staff": "198.18.9.0/25", "contractors": "198.18.9.128/25"}


def last_answer(lab, subject: str) -> str:
    return audited(lab, "SELECT outcome || ':' || (detail->>'reason') FROM dmzkit.audit_log WHERE event = 'aaa.access' "
                   f"AND subject = '{subject}' ORDER BY id DESC LIMIT 1")


@pytest.mark.parametrize(("user", "group"), [("alice", "staff"), ("bob", "contractors")])
def test_device_and_password_open_the_tunnel_of_the_group_aaa_names(lab, user: str, group: str) -> None:
    internal = {name: lab[name].address("internal") for name in (APP, IDP)}
    with ipsec_tunnel(lab, user, secret(f"sso_{user}")) as run:
        assert run.returncode == 0, run.stdout[-2000:]
        sa = ipsec_sa(lab, user)
        assert sa["state"] == "ESTABLISHED"
        assert ipaddress.ip_address(sa["vip"]) in ipaddress.ip_network(POOLS[group])
        # libipsec in the lab's containers: the SA covers everything, and the
        # gateway's firewall lets each pool reach its group's routes only.
        assert sa["remote_ts"] == ["0.0.0.0/0"]
        assert last_answer(lab, user) == "success:password checked"
        # Both groups reach the application; only staff the IdP (the edge
        # firewall lets both through; the contractors' packets are dropped
        # at the gateway).
        assert lab[CLIENT].connects(internal[APP], 8443)
        assert lab[CLIENT].connects(internal[IDP], 443) == (group == "staff")


def test_a_wrong_password_gets_no_tunnel(lab) -> None:
    with ipsec_tunnel(lab, "alice", "not her password") as run:
        assert run.returncode != 0
        assert ipsec_sa(lab, "alice")["state"] is None
    assert last_answer(lab, "alice") == "failure:password refused"
    psql(lab, "UPDATE dmzkit.credentials SET failed_attempts = 0 WHERE user_id = "
              "(SELECT id FROM dmzkit.users WHERE username = 'alice')")


def test_the_tunnel_is_accounted_at_aaa(lab) -> None:
    with ipsec_tunnel(lab, "alice", secret("sso_alice")) as run:
        assert run.returncode == 0, run.stdout[-2000:]
        vip = ipsec_sa(lab, "alice")["vip"]
    deadline = time.monotonic() + 10
    query = ("SELECT string_agg(status, ',' ORDER BY id) FROM dmzkit.radius_accounting WHERE session_id = "
             "(SELECT session_id FROM dmzkit.radius_accounting WHERE nas = 'gw1' AND status = 'start' "
             f"AND username = 'alice@lab.dmzkit.test' AND framed_address = '{vip}' ORDER BY id DESC LIMIT 1)")
    while (recorded := psql(lab, query)) != "start,stop" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert recorded == "start,stop"


@pytest.mark.parametrize(("wrong", "refusal"), [
    ("secret", "RADIUS Response-Authenticator verification failed"),
    ("message-authenticator", "RADIUS Message-Authenticator verification failed"),
])
def test_an_answer_forged_at_aaas_address_is_ignored(lab, wrong: str, refusal: str) -> None:
    """strongSwan asks AAA itself: an Access-Accept from AAA's own address
    but signed with a wrong secret, or with gw1's secret and a wrong
    Message-Authenticator, is thrown away, and nobody gets in."""
    gw = lab[GW].host
    since = gw.check_output("date +%s")
    with forged_answers(lab, wrong) as forged:
        with ipsec_tunnel(lab, "alice", secret("sso_alice")) as run:
            assert run.returncode != 0
            assert ipsec_sa(lab, "alice")["state"] is None
        assert forged() == lab[GW].address("dmz")  # strongSwan asked, the forgery reached it
    log = gw.check_output(f"journalctl -u strongswan --since @{since} --no-pager")
    assert refusal in log


def group_setting(hostvar, group: str) -> dict:
    """The IPsec group's settings as the inventory gives them to gw1."""
    return next(g for g in hostvar(GW, "ipsec_gateway_groups") if g["name"] == group)


def throughput(lab, port: int, *options: str) -> float:
    """Bytes per second from iperf3 on client1 to app1 through the tunnel,
    over 6 s after a first second left out (TCP's slow start)."""
    run = lab[CLIENT].host.run(f"timeout 30 iperf3 -J -c {lab[APP].address('internal')} -p {port} -t 6 -O 1 "
                               + " ".join(options))
    assert run.rc == 0, run.stdout[-2000:]
    return json.loads(run.stdout)["end"]["sum_received"]["bits_per_second"] / 8


def sent_by_class(lab, device: str) -> dict[str, int]:
    """Bytes each HTB class on the gateway's device has sent."""
    shown = lab[GW].host.check_output(f"tc -s class show dev {device}")
    return {handle: int(sent) for handle, sent in re.findall(r"^class htb (\S+) .*\n Sent (\d+) bytes", shown, re.M)}


def busy_classes(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """Classes that sent more than 1 MB between two readings."""
    return [handle for handle, sent in after.items() if sent - before.get(handle, 0) > 1_000_000]


def test_each_user_of_a_group_with_a_rate_gets_it_both_ways(lab, hostvar, transient_service) -> None:
    """The gateway shapes each contractor to the group's rate, what they
    send and what they receive, measured with iperf3 through the tunnel, in
    the class of the user's own address; staff, without a rate, go faster
    than that both ways on the same path."""
    port = int(hostvar(GW, "lab_rate_probe_port"))
    transient_service(APP, "verify-iperf3", f"iperf3 -s -p {port}", port)
    groups = hostvar(GW, "ipsec_gateway_groups")
    index, contractors = next((i, g) for i, g in enumerate(groups, 1) if g["name"] == "contractors")
    devices = ("ipsec0", "ipsec0-in")
    with ipsec_tunnel(lab, "bob", secret("sso_bob")) as run:
        assert run.returncode == 0, run.stdout[-2000:]
        offset = int(ipaddress.ip_address(ipsec_sa(lab, "bob")["vip"])) - int(ipaddress.ip_network(contractors["pool"])[0])
        before = {device: sent_by_class(lab, device) for device in devices}
        sends = throughput(lab, port)
        receives = throughput(lab, port, "-R")
        after = {device: sent_by_class(lab, device) for device in devices}
    with ipsec_tunnel(lab, "alice", secret("sso_alice")) as run:
        assert run.returncode == 0, run.stdout[-2000:]
        staff = {"sends": throughput(lab, port), "receives": throughput(lab, port, "-R")}
    print(f"contractor: sends {sends:.0f} B/s (limit {contractors['rx_bytes_per_sec']}), receives {receives:.0f} B/s "
          f"(limit {contractors['tx_bytes_per_sec']}); staff sends {staff['sends']:.0f}, receives {staff['receives']:.0f} B/s")
    assert sends == pytest.approx(int(contractors["rx_bytes_per_sec"]), rel=0.15)
    assert receives == pytest.approx(int(contractors["tx_bytes_per_sec"]), rel=0.15)
    own_class = f"1:{index * 4096 + offset:x}"
    assert all(busy_classes(before[device], after[device]) == [own_class] for device in devices), (own_class, after)
    assert min(staff.values()) > 1.5 * int(contractors["tx_bytes_per_sec"])


def test_the_rates_come_back_when_strongswan_restarts_after_a_crash(lab) -> None:
    """libipsec's TUN device is made anew with each charon; strongSwan's unit
    puts the rates on it again after an automatic restart."""
    gw = lab[GW].host
    counts = {device: len(sent_by_class(lab, device)) for device in ("ipsec0", "ipsec0-in")}
    assert min(counts.values()) > 0
    started = gw.check_output("systemctl show -P ExecMainStartTimestampMonotonic strongswan")
    gw.run_test("systemctl kill -s SEGV strongswan")
    gw.run_test(f"timeout 30 sh -c 'until [ \"$(systemctl show -P ExecMainStartTimestampMonotonic strongswan)\" != {started} ] "
                "&& systemctl is-active --quiet strongswan; do sleep 0.2; done'")
    assert {device: len(sent_by_class(lab, device)) for device in counts} == counts


def test_a_user_has_one_tunnel_even_from_a_client_that_asks_for_two(lab) -> None:
    """alice's second tunnel, from branch1 while client1's is up, replaces
    the first at the gateway (`unique = replace`), even though branch1's
    connection says `unique = never` and so sends no INITIAL_CONTACT, as
    a user who wanted two tunnels would set it."""
    override = "/etc/swanctl/conf.d/zz-test-unique-alice.conf"
    branch = lab["branch1"].host
    branch.run_test(f"printf 'connections {{\\n\\talice {{\\n\\t\\tunique = never\\n\\t}}\\n}}\\n' > {override} "
                    "&& swanctl --load-conns")
    try:
        with ipsec_tunnel(lab, "alice", secret("sso_alice")) as first:
            assert first.returncode == 0, first.stdout[-2000:]
            with ipsec_tunnel(lab, "alice", secret("sso_alice"), host="branch1") as second:
                assert second.returncode == 0, second.stdout[-2000:]
                time.sleep(1)
                shown = lab[GW].host.check_output("swanctl --list-sas")
                outer = re.findall(r"remote 'alice@lab\.dmzkit\.test' @ ([\d.]+)\[\d+\]", shown)
                assert outer == [lab["nat1"].address("internet")]
    finally:
        branch.run_test(f"rm -f {override} && swanctl --load-conns")
