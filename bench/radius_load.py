"""A bounded RADIUS load generator, run on a lab host (the gateway, a known
client): Access-Requests signed with a Message-Authenticator, PAP
passwords, `inflight` outstanding at once over several sockets, for at most
`seconds` or `count` requests. Prints one JSON line: counts, rate, p50/p99.

    python3 -c "$(cat radius_load.py)" SERVER PORT SECONDS COUNT INFLIGHT NAS < secrets.json

Standard input: {"secret": ..., "users": [[name, password], ...]}.
"""
import hashlib
import hmac
import json
import os
import selectors
import socket
import struct
import sys
import time

SOCKETS = 4


def packet(ident, user, password, secret, nas):
    authenticator = os.urandom(16)
    padded = password + b"\0" * (-len(password) % 16 or (0 if password else 16))
    hidden, last = b"", authenticator
    for i in range(0, len(padded), 16):
        block = bytes(a ^ b for a, b in zip(padded[i:i + 16], hashlib.md5(secret + last).digest()))
        hidden, last = hidden + block, block
    attrs = (struct.pack("!BB", 1, len(user) + 2) + user + struct.pack("!BB", 2, len(hidden) + 2) + hidden
             + struct.pack("!BB", 32, len(nas) + 2) + nas + b"\x50\x12" + bytes(16))
    header = struct.pack("!BBH", 1, ident, 20 + len(attrs)) + authenticator
    mac = hmac.new(secret, header + attrs, hashlib.md5).digest()
    return header + attrs[:-16] + mac


def main():
    server, port, seconds, count, inflight, nas = (sys.argv[1], int(sys.argv[2]), float(sys.argv[3]),
                                                   int(sys.argv[4]), int(sys.argv[5]), sys.argv[6].encode())
    given = json.loads(sys.stdin.read())
    secret = given["secret"].encode()
    users = [(u.encode(), p.encode()) for u, p in given["users"]]
    per_socket = max(1, inflight // SOCKETS)
    selector = selectors.DefaultSelector()
    socks = []
    for _ in range(SOCKETS):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((server, port))
        s.setblocking(False)
        socks.append(s)
        selector.register(s, selectors.EVENT_READ)
    pending = {s: {} for s in socks}  # id -> sent at
    next_id = {s: 0 for s in socks}
    latencies, codes, lost, sent = [], {}, 0, 0
    began = time.monotonic()
    stop_sending = began + seconds

    def send(s):
        nonlocal sent
        ident = next_id[s]
        while ident in pending[s]:
            ident = (ident + 1) % 256
        next_id[s] = (ident + 1) % 256
        user, password = users[sent % len(users)]
        s.send(packet(ident, user, password, secret, nas))
        pending[s][ident] = time.monotonic()
        sent += 1

    for s in socks:
        for _ in range(per_socket):
            if sent < count:
                send(s)
    while any(pending.values()):
        now = time.monotonic()
        for s in socks:
            for ident, at in list(pending[s].items()):
                if now - at > 2.0:
                    del pending[s][ident]
                    lost += 1
                    if now < stop_sending and sent < count:
                        send(s)
        for key, _ in selector.select(timeout=0.1):
            s = key.fileobj
            while True:
                try:
                    reply = s.recv(4096)
                except BlockingIOError:
                    break
                at = pending[s].pop(reply[1], None)
                if at is None:
                    continue
                latencies.append(time.monotonic() - at)
                codes[reply[0]] = codes.get(reply[0], 0) + 1
                if time.monotonic() < stop_sending and sent < count:
                    send(s)
    wall = time.monotonic() - began
    latencies.sort()

    def pct(f):
        return latencies[min(len(latencies) - 1, int(f * (len(latencies) - 1)))] if latencies else None
    print(json.dumps({"sent": sent, "accepted": codes.get(2, 0), "rejected": codes.get(3, 0), "lost": lost,
                      "seconds": wall, "rate": len(latencies) / wall if wall else 0.0,
                      "p50": pct(0.5), "p99": pct(0.99)}))


main()
