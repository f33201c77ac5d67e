"""The watchdog's Prometheus metrics, served by prometheus_client on a local port.

The loop counts events in the client's own (thread-safe) metrics; what other
objects already count (the machine's conflicts, the probes' stalls) and the
current state are read when a scrape asks. The scrape is answered by the
client's WSGI application on a thread of its own, so a slow scraper never
holds up the loop.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import metrics_http

RTT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
PREFIX = "dmzkit_failover"


class Metrics:
    def __init__(self, states: Iterable[str], conflicts: Callable[[], int], stalls: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.states = tuple(states)
        self.state = "init"  # set by the loop, read by scrapes: one reference, replaced whole
        self.conflicts = conflicts
        self.stalls = stalls
        r = self.registry
        self.transitions = Counter(f"{PREFIX}_transitions", "State changes", ["from", "to", "reason"], registry=r)
        self.probe_misses = Counter(f"{PREFIX}_probe_miss", "Probes sent while the last reply was overdue",
                                    ["probe"], registry=r)
        self.rtt = Histogram(f"{PREFIX}_probe_rtt_seconds", "Seconds from a probe to its reply", ["probe"],
                             buckets=RTT_BUCKETS, registry=r)
        self.takeover_phases = Gauge(f"{PREFIX}_takeover_seconds", "Seconds each action of the last step took",
                                     ["phase"], registry=r)
        self.garps = Counter(f"{PREFIX}_garp_sent", "Gratuitous ARP frames sent", registry=r)
        self.forged_claims = Counter(f"{PREFIX}_forged_claims",
                                     "ARP frames of MACs not the primary's that claimed the VIP or answered for "
                                     "the primary's management address: ignored", ["address"], registry=r)
        self.defences = Counter(f"{PREFIX}_defences",
                                "Gratuitous ARPs defending the held VIP against an unknown MAC's claim "
                                "(RFC 5227, at most one per 10 s)", registry=r)
        self.fence_failures = Counter(f"{PREFIX}_fence_failures",
                                      "Fences run beside a takeover (of a silent primary) that failed", registry=r)
        self.health_reports = Counter(f"{PREFIX}_health_reports",
                                      "Reports of the primary's VPN health agent, by verdict", ["verdict"], registry=r)
        self.health_lost = Counter(f"{PREFIX}_health_lost",
                                   "Sessions with the primary's VPN health agent that ended (no verdict until the "
                                   "next one)", registry=r)
        self.health_gap = Gauge(f"{PREFIX}_health_largest_gap_seconds",
                                "The longest silence between two reports of the health agent since the start",
                                registry=r)
        self.last_transition = Gauge(f"{PREFIX}_last_transition_timestamp", "Unix time of the last state change",
                                     registry=r)
        r.register(_Current(self))

    def observe_rtt(self, probe: str, seconds: float) -> None:
        self.rtt.labels(probe).observe(seconds)


class _Current(Collector):
    """What the watchdog holds elsewhere, read at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        state = GaugeMetricFamily(f"{PREFIX}_state", "1 for the state the watchdog is in", labels=["state"])
        current = m.state
        for name in m.states:
            state.add_metric([name], int(name == current))
        yield state
        yield CounterMetricFamily(f"{PREFIX}_conflicts", "Claims of the VIP by the primary while active (yields)",
                                  value=m.conflicts())
        yield CounterMetricFamily(f"{PREFIX}_scheduler_stall", "Ticks the loop woke up late for", value=m.stalls())


def serve(metrics: Metrics, host: str, port: int) -> ThreadingWSGIServer:
    """The watchdog's metrics on host:port (metrics_http.serve)."""
    return metrics_http.serve(metrics.registry, host, port)
