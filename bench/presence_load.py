"""Presence fan-out, run on the IM host against a Prosody on loopback (run
by bench/collaboration.py): N users, all in one shared roster group, log in
at once over plain TCP (loopback only) and each announces its presence; the
figure is the time from the first connection until every user has seen the
presence of every other, and how many of the presences seen carried the
address the server observed (mod_dmzkit_client_address). Bounded by its
timeout. Prints one JSON line.

    python3 -c "$(cat presence_load.py)" PORT DOMAIN USERS TIMEOUT
"""
import asyncio
import json
import logging
import sys
import time

import slixmpp

NS = "urn:dmzkit:xmpp:client-address:0"


async def main() -> None:
    port, domain, users, timeout = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    logging.disable(logging.CRITICAL)
    everyone = {f"bench{i}@{domain}" for i in range(users)}
    seen: dict[str, set[str]] = {jid: set() for jid in everyone}
    with_address = 0
    done = asyncio.Event()
    finished: dict[str, float] = {}
    start = time.monotonic()
    clients = []

    for jid in sorted(everyone):
        client = slixmpp.ClientXMPP(jid, "bench")

        def presence(stanza, jid=jid):
            nonlocal with_address
            sender = stanza["from"].bare
            if sender == jid or sender not in everyone or sender in seen[jid]:
                return
            with_address += stanza.xml.find(f"{{{NS}}}client-address") is not None
            seen[jid].add(sender)
            if len(seen[jid]) == users - 1 and jid not in finished:
                finished[jid] = time.monotonic() - start
                if len(finished) == users:
                    done.set()

        client.add_event_handler("session_start", lambda _, c=client: c.send_presence())
        client.add_event_handler("presence_available", presence)
        client["feature_mechanisms"].unencrypted_plain = True
        client.connect(address=("127.0.0.1", port), force_starttls=False, disable_starttls=True)
        clients.append(client)
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except asyncio.TimeoutError:
        pass
    elapsed = max(finished.values()) if len(finished) == users else None
    for client in clients:
        client.disconnect()
    await asyncio.sleep(0.5)
    print(json.dumps({"users": users, "complete": len(finished), "seconds": elapsed,
                      "presences_seen": sum(len(s) for s in seen.values()), "with_address": with_address}))


asyncio.run(main())
