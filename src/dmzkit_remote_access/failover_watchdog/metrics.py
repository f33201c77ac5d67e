"""The watchdog's Prometheus metrics, served as text on a local HTTP port."""
from __future__ import annotations

import asyncio
import bisect
from collections import Counter
from dataclasses import dataclass, field

RTT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
PREFIX = "dmzkit_failover"


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(RTT_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(RTT_BUCKETS, value)] += 1
        self.total += value

    def lines(self, name: str, labels: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*RTT_BUCKETS, float("inf")), self.counts):
            running += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            out.append(f'{name}_bucket{{{labels},le="{le}"}} {running}')
        out.append(f"{name}_sum{{{labels}}} {self.total:.6f}")
        out.append(f"{name}_count{{{labels}}} {running}")
        return out


@dataclass
class Metrics:
    state: str = "init"
    last_transition: float = 0.0
    transitions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    misses: Counter[str] = field(default_factory=Counter)
    rtt: dict[str, Histogram] = field(default_factory=dict)
    takeover_phases: dict[str, float] = field(default_factory=dict)
    conflicts: int = 0
    stalls: int = 0
    garps: int = 0
    # Fences run beside a takeover (of a silent primary) that failed.
    fence_failures: int = 0

    def observe_rtt(self, probe: str, seconds: float) -> None:
        self.rtt.setdefault(probe, Histogram()).observe(seconds)

    def render(self, states: list[str]) -> str:
        lines = [f"# TYPE {PREFIX}_state gauge"]
        lines += [f'{PREFIX}_state{{state="{s}"}} {int(s == self.state)}' for s in states]
        lines.append(f"# TYPE {PREFIX}_transitions_total counter")
        lines += [f'{PREFIX}_transitions_total{{from="{a}",to="{b}",reason="{r}"}} {n}'
                  for (a, b, r), n in sorted(self.transitions.items())]
        lines.append(f"# TYPE {PREFIX}_probe_miss_total counter")
        lines += [f'{PREFIX}_probe_miss_total{{probe="{p}"}} {n}' for p, n in sorted(self.misses.items())]
        lines.append(f"# TYPE {PREFIX}_probe_rtt_seconds histogram")
        for probe, histogram in sorted(self.rtt.items()):
            lines += histogram.lines(f"{PREFIX}_probe_rtt_seconds", f'probe="{probe}"')
        lines.append(f"# TYPE {PREFIX}_takeover_seconds gauge")
        lines += [f'{PREFIX}_takeover_seconds{{phase="{p}"}} {v:.6f}' for p, v in self.takeover_phases.items()]
        for name, value in (("conflicts_total", self.conflicts), ("scheduler_stall_total", self.stalls),
                            ("garp_sent_total", self.garps), ("fence_failures_total", self.fence_failures)):
            lines += [f"# TYPE {PREFIX}_{name} counter", f"{PREFIX}_{name} {value}"]
        lines += [f"# TYPE {PREFIX}_last_transition_timestamp gauge",
                  f"{PREFIX}_last_transition_timestamp {self.last_transition:.3f}"]
        return "\n".join(lines) + "\n"


async def serve(metrics: Metrics, states: list[str], host: str, port: int) -> asyncio.AbstractServer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 2)
            if request.startswith(b"GET /metrics "):
                body, status = metrics.render(states).encode(), "200 OK"
            else:
                body, status = b"not found\n", "404 Not Found"
            writer.write(f"HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port)
