"""The client of the primary's VPN health agent (dmzkit_remote_access.vpn_health).

One lasting mutual-TLS connection to the agent on the primary's management
address, on the agent's own port: no internet user's connection shares its
path, so a flood of the VPN cannot delay it. The agent pushes a report every
tenth of a second; each one goes into the HealthStream, which the main loop
reads (decision.py says what counts). A connection that cannot be made,
fails its handshake, breaks or stays silent twice silent_after leaves no
verdict (never a fence), and is made again after RETRY seconds. The CA's CRL
is read again at each connection.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import time

from ..vpn_health.report import MAX_LINE, Report
from .decision import HealthStream
from .metrics import Metrics
from .settings import ConfigError, Health

log = logging.getLogger("dmzkit.failover_watchdog")
RETRY = 0.5
# The primary's kernel answers a SYN at once; a handshake waits for the agent.
CONNECT_TIMEOUT = 2.0


def context(health: Health) -> ssl.SSLContext:
    """The client's TLS context: the agent's certificate must chain to the
    CA, not be revoked, and name the address connected to."""
    from ..tls import client_context  # python3-cryptography: only with an agent to hear

    try:
        return client_context(health.ca_file, health.certificate, health.private_key, crl=health.crl_file)
    except OSError as e:  # ssl.SSLError is an OSError
        raise ConfigError(f"health: the TLS files cannot be used: {e.strerror or e}") from None


class HealthClient:
    def __init__(self, address: str, health: Health, stream: HealthStream, metrics: Metrics) -> None:
        self.address = address
        self.health = health
        self.stream = stream
        self.metrics = metrics
        context(health)  # refused at start, not at the first connection
        self.writer: asyncio.StreamWriter | None = None
        self.trouble = ""  # what went wrong last, logged once until it changes
        self.restarted = False

    async def run(self) -> None:
        while True:
            try:
                await self.session()
                problem = "the agent closed the connection"
            except (OSError, TimeoutError, ValueError, ConfigError) as e:  # ssl.SSLError is an OSError
                problem = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if self.stream.session:
                self.metrics.health_lost.inc()
            self.stream.on_lost()
            self.writer = None
            if self.restarted:
                self.restarted = False
                continue  # at once, and nothing went wrong
            if problem != self.trouble:
                log.warning("no verdict on the primary's VPN from its health agent at %s:%d: %s (never a reason "
                            "to fence; trying again every %g s)", self.address, self.health.port, problem, RETRY,
                            extra={"REASON": "health agent unreachable"})
                self.trouble = problem
            await asyncio.sleep(RETRY)

    async def session(self) -> None:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(self.address, self.health.port, ssl=context(self.health),
                                                           server_hostname=self.address, limit=MAX_LINE + 1)
        self.writer = writer
        try:
            self.stream.on_session(time.monotonic())
            while True:
                # A silence twice silent_after long has been judged (a frozen
                # host is fenced by then); a connection that outlived its
                # agent (the host rebooted, nothing told us) is dropped.
                async with asyncio.timeout(2 * self.health.silent_after):
                    line = await reader.readline()
                if not line.endswith(b"\n"):
                    return  # closed (or a line cut short by the close)
                report = Report.decode(line)
                self.stream.on_report(time.monotonic(), report.seq, report.verdict.value, report.reason)
                self.metrics.health_reports.labels(report.verdict.value).inc()
                self.metrics.health_gap.set(self.stream.largest_gap)
                if self.trouble:
                    log.info("the primary's health agent at %s:%d reports again", self.address, self.health.port)
                    self.trouble = ""
        finally:
            writer.close()

    def restart(self) -> None:
        """Drop the connection: the next one starts afresh (after a handback,
        a connection that outlived a fence may be stale)."""
        if self.writer is not None:
            self.restarted = True
            self.stream.on_lost()  # lines the old connection has buffered count for nothing
            self.writer.close()
