"""One XMPP login, run on a lab host with Debian's slixmpp: STARTTLS with
the CA's chain, then SASL PLAIN. Prints {"logged_in": true|false, "why": ...}.
The JID, the server's address and the password come on standard input as
JSON, never on a command line.

    python3 -c "$(cat xmpp_login.py)" CA-FILE
"""
import asyncio
import json
import sys

import slixmpp


def main():
    options = json.loads(sys.stdin.read())
    client = slixmpp.ClientXMPP(options["jid"], options["password"])
    client.ca_certs = sys.argv[1]
    result = {"logged_in": False, "why": "no answer"}

    def finish(logged_in, why):
        result.update(logged_in=logged_in, why=why)
        client.disconnect()

    client.add_event_handler("session_start", lambda _: finish(True, "session started"))
    client.add_event_handler("failed_all_auth", lambda _: finish(False, "authentication failed"))
    client.add_event_handler("connection_failed", lambda e: finish(False, f"connection failed: {e}"))
    client.connect(address=(options["address"], 5222))
    try:
        client.loop.run_until_complete(asyncio.wait_for(client.disconnected, 20))
    except asyncio.TimeoutError:
        result["why"] = "timed out"
    print(json.dumps(result))


main()
