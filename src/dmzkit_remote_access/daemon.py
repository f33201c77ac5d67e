"""What every service of the collection does as a systemd unit: tell
systemd how it is (the notify protocol: one datagram to $NOTIFY_SOCKET, no
library needed) and stop cleanly on SIGTERM."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from .config import ConfigError


class Notifier:
    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        # A leading "@" names an abstract socket.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if self.address else None
        watchdog_usec = os.environ.get("WATCHDOG_USEC", "")
        # Ping at a quarter of the limit, so one late tick is not a kill.
        self.watchdog_interval = int(watchdog_usec) / 4e6 if watchdog_usec.isdigit() else None

    def notify(self, **fields: str | int) -> None:
        if self.sock is None:
            return
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            self.sock.sendto(message.encode(), self.address)
        except OSError:
            pass  # systemd gone (shutting down); nothing to tell


async def until_stopped(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` until SIGTERM or SIGINT, then cancel it so its `finally` cleans up."""
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass


class StartupError(Exception):
    """What a service needs at start is not there (its database refuses it,
    say): said in one line, exit status 1, and systemd tries again."""


class Service(Protocol):
    async def run(self) -> None:
        """Serve until cancelled."""


def service_main(prog: str, doc: str, build: Callable[[str], Service], argv: list[str] | None,
                 default_config: str | None = None) -> int:
    """The command line of a service run from one settings file:
    `--config FILE`, and `--check` to validate it (and what it names) and stop.
    `build` reads the file and refuses what it cannot use with ConfigError."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.strip().splitlines()[0])
    parser.add_argument("--config", default=default_config, required=default_config is None)
    parser.add_argument("--check", action="store_true", help="validate the settings and the files they name, and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        service = build(args.config)
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config}: ok")
        return 0
    try:
        asyncio.run(until_stopped(service.run()))
    except StartupError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    return 0
