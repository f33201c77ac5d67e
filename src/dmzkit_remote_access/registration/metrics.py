"""The registration service's Prometheus metrics, served by metrics_http on
a port of their own (settings.metrics_listen)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "dmzkit_registration"
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        # One per connection past TLS, as its audit record says (the
        # reasons are the service's own words, a short fixed list).
        self.connections = Counter(f"{PREFIX}_connections", "Connections past TLS, by outcome and reason",
                                   ["outcome", "reason"], registry=r)
        self.seconds = Histogram(f"{PREFIX}_seconds", "From the end of the TLS handshake to the audit record",
                                 buckets=SECONDS_BUCKETS, registry=r)
        self.handshaking = Gauge(f"{PREFIX}_handshakes_in_progress", "TLS handshakes under way", registry=r)
        self.refused = Counter(f"{PREFIX}_handshakes_refused", "Connections closed before TLS, over a cap",
                               ["cap"], registry=r)
        self.handshake_failures = Counter(f"{PREFIX}_handshake_failures", "TLS handshakes failed or too slow",
                                          registry=r)
        self.audit_failures = Counter(f"{PREFIX}_audit_failures", "Audit records the user database did not take",
                                      registry=r)
