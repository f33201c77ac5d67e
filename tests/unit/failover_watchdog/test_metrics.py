"""Prometheus text the watchdog serves, read back over HTTP and parsed by the client's own parser."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dmzkit_remote_access.failover_watchdog.metrics import Metrics, serve

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def metrics() -> Iterator[tuple[Metrics, int]]:
    metrics = Metrics(["standby", "active"], conflicts=lambda: 1, stalls=lambda: 2)
    server = serve(metrics, "127.0.0.1", 0)
    try:
        yield metrics, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def scrape(port: int, path: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        return b"".join(iter(lambda: sock.recv(65536), b"")).decode()


def samples(answer: str) -> Samples:
    body = answer.split("\r\n\r\n", 1)[1]
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def sample(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def test_metrics_are_served_as_prometheus_text(metrics: tuple[Metrics, int]) -> None:
    m, port = metrics
    m.state = "active"
    m.transitions.labels("confirm", "takeover", "no answer").inc()
    for rtt in (0.0004, 0.003, 0.003, 2.0):
        m.observe_rtt("vip", rtt)

    text = scrape(port, "/metrics")
    assert text.startswith("HTTP/1.0 200 OK")
    found = samples(text)
    assert sample(found, "dmzkit_failover_state", state="active") == 1
    assert sample(found, "dmzkit_failover_state", state="standby") == 0
    assert sample(found, "dmzkit_failover_transitions_total",
                  **{"from": "confirm", "to": "takeover", "reason": "no answer"}) == 1
    # Buckets are cumulative; the 2 s reply lands only in +Inf.
    bucket = "dmzkit_failover_probe_rtt_seconds_bucket"
    assert sample(found, bucket, probe="vip", le="0.0005") == 1
    assert sample(found, bucket, probe="vip", le="0.005") == 3
    assert sample(found, bucket, probe="vip", le="1.0") == 3
    assert sample(found, bucket, probe="vip", le="+Inf") == 4
    assert sample(found, "dmzkit_failover_scheduler_stall_total") == 2
    assert sample(found, "dmzkit_failover_conflicts_total") == 1
    assert scrape(port, "/other").startswith("HTTP/1.0 404")


def test_label_values_are_escaped(metrics: tuple[Metrics, int]) -> None:
    """A reason is free text: quotes, backslashes and newlines must not break the exposition."""
    m, port = metrics
    reason = 'the primary said "bye"\\\nand left'
    m.transitions.labels("active", "handback", reason).inc()
    found = samples(scrape(port, "/metrics"))
    assert sample(found, "dmzkit_failover_transitions_total",
                  **{"from": "active", "to": "handback", "reason": reason}) == 1


def test_idle_connections_cannot_pile_up(metrics: tuple[Metrics, int]) -> None:
    """Anyone on the host can connect to the metrics port (a desktop user on
    the VNC host). Connections that never send a request are dropped after
    SCRAPE_TIMEOUT and at most MAX_SCRAPES are served at once, so they cannot
    exhaust the watchdog's threads and file descriptors; a scrape works again
    once they are gone."""
    from dmzkit_remote_access import metrics_http as module

    _, port = metrics
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3 * module.MAX_SCRAPES)]
    try:
        time.sleep(0.5)
        serving = [t for t in threading.enumerate() if t.name != "metrics" and t.daemon
                   and "process_request_thread" in repr(getattr(t, "_target", ""))]
        assert len(serving) <= module.MAX_SCRAPES
        deadline = time.monotonic() + module.SCRAPE_TIMEOUT + 3
        for sock in idle:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            assert sock.recv(1) == b""  # closed by the server, not by us
    finally:
        for sock in idle:
            sock.close()
    assert scrape(port, "/metrics").startswith("HTTP/1.0 200")
