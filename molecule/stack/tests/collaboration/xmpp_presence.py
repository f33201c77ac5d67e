"""One user online in IM, run on a lab host with Debian's slixmpp: log in
(STARTTLS with the CA's chain, SASL PLAIN), send presence, and record every
presence of the buddy's, in which the IM server puts the address and port
it observed (urn:dmzkit:xmpp:client-address:0). Prints JSON: this client's
own address and port as its socket has them, and for each presence of the
buddy's every element of that namespace found anywhere in it.

"claim": an address this client writes into its own presence, as a forger
would: in the element, in another element of the namespace, and nested in
an element of another namespace; in its broadcast presence, and again in a
presence directed to the buddy once the buddy is online. Input on standard
input as JSON, never on a command line.

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
    result = {"own": None, "buddy": [], "why": "no presence from the buddy"}

    def forged(presence):
        claim = options["claim"]
        presence.append(ET.Element(f"{{{NS}}}client-address", claim))
        presence.append(ET.Element(f"{{{NS}}}address", claim))
        wrapper = ET.Element("{urn:example:wrapper}x")
        wrapper.append(ET.Element(f"{{{NS}}}client-address", claim))
        presence.append(wrapper)
        return presence

    def session_start(_):
        address, port = client.transport.get_extra_info("sockname")[:2]
        result["own"] = {"ip": address, "port": str(port)}
        presence = client.make_presence()
        (forged(presence) if options.get("claim") else presence).send()

    def presence(stanza):
        if stanza["from"].bare != options["buddy"]:
            return
        result["buddy"].append([dict(e.attrib) for e in stanza.xml.iter() if e.tag.startswith(f"{{{NS}}}")])
        if len(result["buddy"]) == 1:
            result["why"] = "buddy seen"
            if options.get("claim"):
                forged(client.make_presence(pto=options["buddy"])).send()
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
