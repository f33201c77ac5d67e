"""What every service of the collection does as a systemd unit: tell
systemd how it is (the notify protocol: one datagram to $NOTIFY_SOCKET, no
library needed) and stop cleanly on SIGTERM."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Coroutine
from typing import Any


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
