"""One user online in IM, run on a lab host with Debian's slixmpp: log in
(STARTTLS with the CA's chain, SASL PLAIN), send presence, and wait for the
buddy's, in which the IM server puts the address and port it observed
(urn:dmzkit:xmpp:client-address:0). Prints JSON: this client's own address
and port as its socket has them, and every client-address element of the
buddy's presence. "claim": an address this client puts in its own presence,
as a forger would. Input on standard input as JSON, never on a command line.

    python3 -c "$(cat xmpp_presence.py)" CA-FILE
"""
import asyncio
import json
import sys
import xml.etree.ElementTree as ET

import slixmpp

NS = "urn:dmzkit:xmpp:client-address:0"


def main():
    options = json.loads(sys.stdin.read())
    client = slixmpp.ClientXMPP(options["jid"], options["password"])
    client.ca_certs = sys.argv[1]
    result = {"own": None, "buddy": None, "why": "no presence from the buddy"}

    def session_start(_):
        address, port = client.transport.get_extra_info("sockname")[:2]
        result["own"] = {"ip": address, "port": str(port)}
        presence = client.make_presence()
        if options.get("claim"):
            presence.append(ET.Element(f"{{{NS}}}client-address", options["claim"]))
        presence.send()

    def presence(stanza):
        if stanza["from"].bare != options["buddy"] or result["buddy"] is not None:
            return
        result["buddy"] = [dict(e.attrib) for e in stanza.xml.findall(f"{{{NS}}}client-address")]
        result["why"] = "buddy seen"
        # Online a little longer, for the buddy to see this client too.
        client.loop.call_later(options["linger"], client.disconnect)

    def refused(_):
        result["why"] = "authentication failed"
        client.disconnect()

    client.add_event_handler("session_start", session_start)
    client.add_event_handler("presence_available", presence)
    client.add_event_handler("failed_all_auth", refused)
    client.connect(address=(options["address"], 5222))
    try:
        client.loop.run_until_complete(asyncio.wait_for(client.disconnected, options["timeout"]))
    except asyncio.TimeoutError:
        pass
    print(json.dumps(result))


main()
