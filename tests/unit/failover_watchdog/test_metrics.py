"""Prometheus text the watchdog serves, read back over HTTP."""
from __future__ import annotations

import asyncio

from dmzkit_remote_access.failover_watchdog.metrics import Metrics, serve


def test_metrics_are_served_as_prometheus_text() -> None:
    metrics = Metrics(state="active")
    metrics.transitions[("confirm", "takeover", "no answer")] += 1
    for rtt in (0.0004, 0.003, 0.003, 2.0):
        metrics.observe_rtt("vip", rtt)
    metrics.stalls = 2

    async def scrape(path: str) -> str:
        server = await serve(metrics, ["standby", "active"], "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        answer = (await reader.read()).decode()
        writer.close()
        server.close()
        return answer

    text = asyncio.run(scrape("/metrics"))
    assert text.startswith("HTTP/1.0 200 OK")
    body = text.split("\r\n\r\n", 1)[1].splitlines()
    assert 'dmzkit_failover_state{state="active"} 1' in body
    assert 'dmzkit_failover_state{state="standby"} 0' in body
    assert 'dmzkit_failover_transitions_total{from="confirm",to="takeover",reason="no answer"} 1' in body
    # Buckets are cumulative; the 2 s reply lands only in +Inf.
    assert 'dmzkit_failover_probe_rtt_seconds_bucket{probe="vip",le="0.0005"} 1' in body
    assert 'dmzkit_failover_probe_rtt_seconds_bucket{probe="vip",le="0.005"} 3' in body
    assert 'dmzkit_failover_probe_rtt_seconds_bucket{probe="vip",le="1"} 3' in body
    assert 'dmzkit_failover_probe_rtt_seconds_bucket{probe="vip",le="+Inf"} 4' in body
    assert 'dmzkit_failover_scheduler_stall_total 2' in body
    assert asyncio.run(scrape("/other")).startswith("HTTP/1.0 404")
