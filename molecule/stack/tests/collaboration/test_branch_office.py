"""Seed 001's branch office: alice (branch1) and carol (branch2) sit behind
one NAT router (nat1) on the internet. Each brings up her IPsec tunnel
(device and password, checked by AAA), logs in to IM through it, and sees
the other's presence with the address and port the IM server observed: the
tunnel's own address, since the gateway routes its pools to the inside
instead of masquerading them."""
from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
from lab_aaa import GW, IM, IM_DOMAIN, SYSTEM_CA, ipsec_sa, ipsec_tunnel, secret

XMPP_PRESENCE = (Path(__file__).parent / "xmpp_presence.py").read_text()
MACHINES = {"alice": "branch1", "carol": "branch2"}
NAT = "nat1"
# What alice writes into her own presence, as a forger would.
CLAIM = {"ip": "198.18.255.254", "port": "1"}


def online(lab, user: str, buddy: str, claim: dict | None = None) -> dict:
    run = lab[MACHINES[user]].run_with_input(["timeout", "40", "python3", "-c", XMPP_PRESENCE, SYSTEM_CA], json.dumps({
        "jid": f"{user}@{IM_DOMAIN}", "password": secret(f"sso_{user}"), "address": lab[IM].address("internal"),
        "buddy": f"{buddy}@{IM_DOMAIN}", "claim": claim, "linger": 5, "timeout": 30}))
    assert run.returncode == 0, run.stderr[-800:]
    return json.loads(run.stdout)


@pytest.mark.parametrize("first", ["alice", "carol"])
def test_two_users_behind_one_nat_see_each_others_observed_address_in_presence(lab, first: str) -> None:
    """Run in both orders: the one who comes second learns the first's
    presence from the server's answer to her probe, the first from the
    second's broadcast; alice's forged presence, broadcast and then
    directed to carol, reaches carol both ways."""
    im = lab[IM].host
    since = im.check_output("date +%s")
    with ExitStack() as tunnels:
        for user, machine in MACHINES.items():
            run = tunnels.enter_context(ipsec_tunnel(lab, user, secret(f"sso_{user}"), host=machine))
            assert run.returncode == 0, run.stdout[-2000:]
        # The gateway sees both behind nat1's one address, on two ports.
        shown = lab[GW].host.check_output("swanctl --list-sas")
        outer = {user: re.search(rf"remote '{user}@lab\.dmzkit\.test' @ ([\d.]+)\[(\d+)\]", shown).groups()
                 for user in MACHINES}
        assert {address for address, _ in outer.values()} == {lab[NAT].address("internet")}
        assert len({port for _, port in outer.values()}) == 2
        vips = {user: ipsec_sa(lab, user, host=machine)["vip"] for user, machine in MACHINES.items()}
        second = "carol" if first == "alice" else "alice"
        with ThreadPoolExecutor(2) as pool:
            went = {first: pool.submit(online, lab, first, second, CLAIM if first == "alice" else None)}
            time.sleep(2)
            went[second] = pool.submit(online, lab, second, first, CLAIM if second == "alice" else None)
            alice, carol = went["alice"].result(), went["carol"].result()
    # Each client's own socket is the tunnel's address (nothing rewrites it
    # on the way in), and the other sees exactly that in every presence:
    # alice's claims were taken out.
    assert alice["own"]["ip"] == vips["alice"] and carol["own"]["ip"] == vips["carol"]
    assert len(carol["buddy"]) >= 2 and all(seen == [alice["own"]] for seen in carol["buddy"]), carol
    assert alice["buddy"] and all(seen == [carol["own"]] for seen in alice["buddy"]), alice
    # The IM server recorded the same for each session.
    log = im.check_output(f"journalctl -u prosody --since @{since} --no-pager")
    for user, seen in (("alice", alice["own"]), ("carol", carol["own"])):
        assert re.search(rf"{user}@{IM_DOMAIN}/\S+ connected from {re.escape(seen['ip'])} port {seen['port']}\b", log), log
