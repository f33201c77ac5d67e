"""Address changes over rtnetlink, inside the peer's private namespace."""
from __future__ import annotations

import json
from typing import Any

ADD_AND_REMOVE = """
import ipaddress, json
from dmzkit_remote_access.net.netlink import Rtnetlink, carrier
nl = Rtnetlink()
v4 = ipaddress.IPv4Interface("198.18.99.20/24")
v6 = ipaddress.IPv6Interface("2001:db8:99::20/64")
steps = [nl.add("{dev}", v4), nl.add("{dev}", v4), nl.add("{dev}", v6)]
held = sorted(str(a) for a in nl.addresses("{dev}"))
steps += [nl.delete("{dev}", v4), nl.delete("{dev}", v4)]
print(json.dumps({{"steps": steps, "held": held, "carrier": carrier("{dev}"), "absent": carrier("nope0")}}))
"""


def test_add_list_delete(peer: Any) -> None:
    run = peer.python(ADD_AND_REMOVE.format(dev=peer.theirs))
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["steps"] == [True, False, True, True, False]
    assert "198.18.99.20/24" in result["held"] and f"{peer.vip}/24" in result["held"]
    assert "2001:db8:99::20/64" in result["held"]
    assert result["carrier"] is True and result["absent"] is False
    # Added with nodad: usable at once, never "tentative".
    shown = peer.ip("-6", "addr", "show", "dev", peer.theirs).splitlines()
    line = next(line for line in shown if "2001:db8:99::20/64" in line)
    assert "tentative" not in line
    assert "198.18.99.20" not in peer.ip("-4", "addr", "show", "dev", peer.theirs)


def test_a_missing_interface_is_an_os_error(peer: Any) -> None:
    run = peer.python(
        "import ipaddress\n"
        "from dmzkit_remote_access.net.netlink import Rtnetlink\n"
        "try:\n"
        "    Rtnetlink().add('nope0', ipaddress.ip_interface('198.18.99.30/24'))\n"
        "except OSError as e:\n"
        "    print('refused:', e)\n"
    )
    assert run.returncode == 0, run.stderr
    assert "refused: no interface with this name" in run.stdout


def test_routes_of_the_vip_table(peer: Any) -> None:
    run = peer.python(
        "import ipaddress\n"
        "from dmzkit_remote_access.net.netlink import Rtnetlink\n"
        "nl = Rtnetlink()\n"
        f"dev = {peer.theirs!r}\n"
        "for _ in range(2):  # replace: the second time changes nothing\n"
        "    nl.replace_route(100, dev, destination=ipaddress.IPv4Network('198.18.99.0/24'))\n"
        "    nl.replace_route(100, dev, gateway=ipaddress.IPv4Address('198.18.99.254'))\n"
    )
    assert run.returncode == 0, run.stderr
    routes = peer.ip("-4", "route", "show", "table", "100").splitlines()
    assert sorted(line.split(" proto")[0].strip() for line in routes) == [
        f"198.18.99.0/24 dev {peer.theirs}", f"default via 198.18.99.254 dev {peer.theirs}"]
    assert all("onlink" in line for line in routes if line.startswith("default"))
