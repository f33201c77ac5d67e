"""A RADIUS client built from RFC 2865/2866/3579, run on a lab host: sends
one Access-Request or Accounting-Request exactly as asked (with, without or
with a wrong Message-Authenticator; with the right or a wrong secret) and
prints what came back, checked the way a NAS checks it. The secret and the
password come on standard input as JSON, never on a command line.

    python3 -c "$(cat radius_probe.py)" access|accounting SERVER PORT JSON-OPTIONS
"""
import hashlib
import hmac
import json
import os
import socket
import struct
import sys

ACCESS_REQUEST, ACCESS_ACCEPT, ACCESS_REJECT, ACCOUNTING_REQUEST, ACCOUNTING_RESPONSE = 1, 2, 3, 4, 5
USER_NAME, USER_PASSWORD, CLASS, CALLING_STATION_ID, NAS_IDENTIFIER = 1, 2, 25, 31, 32
ACCT_STATUS_TYPE, ACCT_SESSION_ID, FRAMED_IP_ADDRESS, MESSAGE_AUTHENTICATOR = 40, 44, 8, 80
EVENT_TIMESTAMP = 55


def attribute(kind, value):
    return struct.pack("!BB", kind, len(value) + 2) + value


def hidden(password, secret, authenticator):
    """User-Password as RFC 2865 section 5.2 hides it."""
    data = password + b"\0" * (-len(password) % 16 or (16 if not password else 0))
    out, last = b"", authenticator
    for i in range(0, len(data), 16):
        block = bytes(a ^ b for a, b in zip(data[i:i + 16], hashlib.md5(secret + last).digest()))
        out, last = out + block, block
    return out


def attributes_of(packet):
    found, i = [], 20
    while i + 2 <= len(packet):
        kind, length = packet[i], packet[i + 1]
        if length < 2:
            break
        found.append((kind, packet[i + 2:i + length]))
        i += length
    return found


def main():
    kind, server, port, options = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    secrets = json.loads(sys.stdin.read())
    secret = secrets["secret"].encode()
    ident = os.urandom(1)[0]
    attrs = b""
    for name, value in options.get("strings", {}).items():
        attrs += attribute({"User-Name": USER_NAME, "NAS-Identifier": NAS_IDENTIFIER,
                            "Calling-Station-Id": CALLING_STATION_ID, "Acct-Session-Id": ACCT_SESSION_ID}[name],
                           value.encode())
    for name, value in options.get("integers", {}).items():
        attrs += attribute({"Event-Timestamp": EVENT_TIMESTAMP}[name], struct.pack("!I", value))
    if kind == "access":
        code, authenticator = ACCESS_REQUEST, os.urandom(16)
        attrs += attribute(USER_PASSWORD, hidden(secrets["password"].encode(), secret, authenticator))
        # Attributes sent a second time, after the first of their kind.
        for name, value in options.get("again", []):
            if name == "User-Password":
                attrs += attribute(USER_PASSWORD, hidden(secrets["again_password"].encode(), secret, authenticator))
            else:
                attrs += attribute({"User-Name": USER_NAME, "NAS-Identifier": NAS_IDENTIFIER}[name], value.encode())
        authenticator_mode = options.get("message_authenticator", "right")
        if authenticator_mode != "none":
            attrs += attribute(MESSAGE_AUTHENTICATOR, b"\0" * 16)
            header = struct.pack("!BBH", code, ident, 20 + len(attrs)) + authenticator
            mac = hmac.new(secret, header + attrs, hashlib.md5).digest()
            if authenticator_mode == "wrong":
                mac = bytes(16)
            attrs = attrs[:-16] + mac
        packet = struct.pack("!BBH", code, ident, 20 + len(attrs)) + authenticator + attrs
    else:
        code = ACCOUNTING_REQUEST
        attrs += attribute(ACCT_STATUS_TYPE, struct.pack("!I", options["status"]))
        if "framed_address" in options:
            attrs += attribute(FRAMED_IP_ADDRESS, socket.inet_aton(options["framed_address"]))
        header = struct.pack("!BBH", code, ident, 20 + len(attrs))
        authenticator = hashlib.md5(header + bytes(16) + attrs + secret).digest()
        packet = header + authenticator + attrs
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(options.get("timeout", 3.0))
    sock.sendto(packet, (server, port))
    try:
        reply = sock.recv(4096)
    except socket.timeout:
        print(json.dumps({"answered": False}))
        return
    # As a NAS checks an answer: the Response Authenticator, then (RFC 3579)
    # the Message-Authenticator over the reply with the request's authenticator.
    expected = hashlib.md5(reply[:4] + authenticator + reply[20:] + secret).digest()
    authentic = reply[1] == ident and hmac.compare_digest(reply[4:20], expected)
    found = attributes_of(reply)
    for kind_found, value in found:
        if kind_found == MESSAGE_AUTHENTICATOR:
            at = reply.index(attribute(MESSAGE_AUTHENTICATOR, value), 20)
            zeroed = reply[:4] + authenticator + reply[20:at + 2] + bytes(16) + reply[at + 18:]
            authentic = authentic and hmac.compare_digest(value, hmac.new(secret, zeroed, hashlib.md5).digest())
    print(json.dumps({"answered": True, "code": reply[0], "authentic": authentic,
                      "classes": [v.decode(errors="replace") for k, v in found if k == CLASS],
                      "message_authenticator": any(k == MESSAGE_AUTHENTICATOR for k, _ in found)}))


main()
