"""The RADIUS relay on real sockets: a NAS that cannot sign on one side; on
the other the address AAA would answer from, played by the test so that it
can forge what an attacker would. The relay against the real FreeRADIUS, with
ocserv in front, is the collaboration journey's."""
from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dmzkit_remote_access import radius
from dmzkit_remote_access.config import ConfigError
from dmzkit_remote_access.radius_relay.relay import Relay
from dmzkit_remote_access.radius_relay.settings import Settings

LOCAL, SERVER = b"local-secret-" + b"l" * 24, b"server-secret-" + b"s" * 24
AAA = "127.0.0.2"


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


class Lab:
    def __init__(self, tmp: Path) -> None:
        (tmp / "server").write_text(SERVER.decode() + "\n")
        (tmp / "local").write_text(LOCAL.decode() + "\n")
        self.aaa = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.aaa.bind((AAA, 0))
        self.aaa.settimeout(1)
        self.acct = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.acct.bind((AAA, 0))
        self.acct.settimeout(1)
        self.settings = Settings.from_dict({
            "server": AAA, "auth_port": self.aaa.getsockname()[1], "acct_port": self.acct.getsockname()[1],
            "server_secret_file": str(tmp / "server"), "local_secret_file": str(tmp / "local"),
            "listen_auth_port": free_port(), "listen_acct_port": free_port(), "timeout": 5})
        self.nas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.nas.bind(("127.0.0.1", 0))
        self.nas.settimeout(1)

    def ask(self, packet: radius.Packet, port: int | None = None) -> None:
        self.nas.sendto(radius.encode(packet), ("127.0.0.1", port or self.settings.listen_auth_port))

    def at_aaa(self, sock: socket.socket | None = None) -> tuple[radius.Packet, tuple[str, int]]:
        data, source = (sock or self.aaa).recvfrom(4096)
        return radius.decode(data), source

    def answer_to_nas(self) -> radius.Packet | None:
        try:
            return radius.decode(self.nas.recv(4096))
        except socket.timeout:
            return None


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    loop = asyncio.new_event_loop()
    relay = Relay(lab.settings)
    task = loop.create_task(relay.run())
    thread = threading.Thread(target=loop.run_until_complete, args=(asyncio.wait([task]),), daemon=True)
    thread.start()
    # Until the relay listens (the accounting port is its last); probing the
    # port by binding it could take it from the relay.
    for _ in range(250):
        if relay.accounting.nas.transport is not None or task.done():
            break
        threading.Event().wait(0.02)
    assert relay.accounting.nas.transport is not None and not task.done(), "the relay did not start"
    yield lab
    loop.call_soon_threadsafe(task.cancel)
    thread.join(5)
    for s in (lab.aaa, lab.acct, lab.nas):
        s.close()


def unsigned_request(ident: int = 7, password: bytes = b"correct horse") -> radius.Packet:
    """As radcli sends it: no Message-Authenticator."""
    authenticator = bytes(range(16))
    return radius.Packet(radius.ACCESS_REQUEST, ident, authenticator, (
        (radius.USER_NAME, b"alice"), (radius.NAS_IDENTIFIER, b"ocserv"),
        (radius.USER_PASSWORD, radius.hide_password(password, LOCAL, authenticator))))


def test_password_hiding_is_rfc_2865s() -> None:
    # RFC 2865 section 7.1: "arctangent" with secret "xyzzy5461".
    authenticator = bytes.fromhex("0f403f9473978057bd83d5cb98f4227a")
    hidden = radius.hide_password(b"arctangent", b"xyzzy5461", authenticator)
    assert hidden.hex() == "0dbe708d93d413ce3196e43f782a0aee"
    assert radius.reveal_password(hidden, b"xyzzy5461", authenticator) == b"arctangent"


@pytest.mark.parametrize("data", [
    b"\x01\x00\x00\x14" + bytes(15),  # shorter than its header
    b"\x01\x00\x00\x20" + bytes(16),  # Length past the datagram
    b"\x01\x00\x00\x17" + bytes(16) + b"\x01\x05a",  # an attribute past Length
    b"\x01\x00\x00\x16" + bytes(16) + b"\x01\x01",  # an attribute of length 1
])
def test_malformed_packets_are_refused(data: bytes) -> None:
    with pytest.raises(radius.Malformed):
        radius.decode(data)


def test_an_unsigned_request_reaches_aaa_signed_with_the_hosts_own_secret(lab: Lab) -> None:
    request = unsigned_request()
    lab.ask(request)
    upstream, _ = lab.at_aaa()
    assert upstream.attributes[0][0] == radius.MESSAGE_AUTHENTICATOR
    assert radius.message_authenticator_valid(upstream, SERVER)
    assert upstream.authenticator != request.authenticator
    hidden = upstream.values(radius.USER_PASSWORD)
    assert len(hidden) == 1 and radius.reveal_password(hidden[0], SERVER, upstream.authenticator) == b"correct horse"
    assert upstream.values(radius.USER_NAME) == [b"alice"] and upstream.values(radius.NAS_IDENTIFIER) == [b"ocserv"]
    # The NAS's retransmission goes again as it went, not as a new request.
    lab.ask(request)
    assert lab.at_aaa()[0] == upstream


def test_only_an_authentic_answer_from_aaa_reaches_the_nas(lab: Lab) -> None:
    request = unsigned_request()
    lab.ask(request)
    upstream, relay_address = lab.at_aaa()
    accept = radius.reply(radius.ACCESS_ACCEPT, upstream, ((25, b"OU=staff"),), SERVER)
    # Forgeries: the wrong secret; no Message-Authenticator; the right packet from another address.
    wrong_secret = radius.reply(radius.ACCESS_ACCEPT, upstream, ((25, b"OU=staff"),), b"guess" * 8)
    unsigned = replace(accept, attributes=accept.without(radius.MESSAGE_AUTHENTICATOR))
    unsigned = replace(unsigned, authenticator=radius._digest(unsigned, upstream.authenticator, SERVER))
    for forged in (wrong_secret, unsigned):
        lab.aaa.sendto(radius.encode(forged), relay_address)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as elsewhere:
        elsewhere.bind(("127.0.0.3", 0))
        elsewhere.sendto(radius.encode(accept), relay_address)
    assert lab.answer_to_nas() is None
    lab.aaa.sendto(radius.encode(accept), relay_address)
    answer = lab.answer_to_nas()
    assert answer is not None and answer.code == radius.ACCESS_ACCEPT
    assert radius.reply_valid(answer, request, LOCAL) and answer.values(25) == [b"OU=staff"]
    # Answered once: the same answer again is not passed twice.
    lab.aaa.sendto(radius.encode(accept), relay_address)
    assert lab.answer_to_nas() is None
    # A retransmission that crossed the answer gets the answer again, and AAA
    # no second request (which it would count as a second login).
    lab.ask(request)
    again = lab.answer_to_nas()
    assert again is not None and again == answer
    with pytest.raises(socket.timeout):
        lab.at_aaa()


@pytest.mark.parametrize("attributes", [
    ((radius.USER_NAME, b"alice"),),  # no password
    ((radius.USER_NAME, b"alice"), (radius.USER_PASSWORD, bytes(16)), (radius.USER_PASSWORD, bytes(16))),
    ((radius.USER_NAME, b"alice"), (radius.CHAP_PASSWORD, bytes(17))),
    ((radius.USER_NAME, b"alice"), (radius.USER_PASSWORD, bytes(16)), (radius.MESSAGE_AUTHENTICATOR, bytes(16))),
])
def test_requests_it_cannot_pass_faithfully_go_nowhere(lab: Lab, attributes: tuple) -> None:
    lab.ask(radius.Packet(radius.ACCESS_REQUEST, 9, bytes(16), attributes))
    with pytest.raises(socket.timeout):
        lab.at_aaa()


def test_accounting_is_passed_only_with_the_local_secret(lab: Lab) -> None:
    attributes = ((radius.USER_NAME, b"alice"), (40, struct.pack("!I", 1)), (44, b"s1"))
    lab.ask(radius.accounting_request(3, attributes, b"not the local secret" * 2), lab.settings.listen_acct_port)
    with pytest.raises(socket.timeout):
        lab.at_aaa(lab.acct)
    request = radius.accounting_request(4, attributes, LOCAL)
    lab.ask(request, lab.settings.listen_acct_port)
    upstream, relay_address = lab.at_aaa(lab.acct)
    assert radius.accounting_request_valid(upstream, SERVER) and upstream.attributes == attributes
    lab.acct.sendto(radius.encode(radius.reply(radius.ACCOUNTING_RESPONSE, upstream, (), SERVER)), relay_address)
    answer = lab.answer_to_nas()
    assert answer is not None and radius.reply_valid(answer, request, LOCAL)


@pytest.mark.parametrize("change, message", [
    ({"listen_address": "198.18.1.10"}, "loopback"),
    ({"server": "aaa.example"}, "IPv4"),
    ({"listen_acct_port": 1812}, "differ"),
    ({"timeout": 0}, "timeout"),
])
def test_settings_it_refuses(tmp_path: Path, change: dict, message: str) -> None:
    raw = {"server": AAA, "server_secret_file": "s", "local_secret_file": "l", **change}
    with pytest.raises(ConfigError, match=message):
        Settings.from_dict(raw)


def test_check_refuses_an_empty_secret(tmp_path: Path) -> None:
    from dmzkit_remote_access.radius_relay.__main__ import main
    (tmp_path / "s").write_text("")
    (tmp_path / "l").write_text("x" * 32)
    (tmp_path / "settings.json").write_text(json.dumps(
        {"server": AAA, "server_secret_file": str(tmp_path / "s"), "local_secret_file": str(tmp_path / "l")}))
    assert main(["--check", "--config", str(tmp_path / "settings.json")]) == 2
