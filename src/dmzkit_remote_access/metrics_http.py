"""Prometheus metrics served over HTTP from a thread of their own, bounded.

prometheus_client's own server (start_http_server) serves any number of
connections, each for as long as it stays: anyone who can reach the port
(a desktop user on the VNC host, a device on the registration network)
could hold its threads and file descriptors. This one serves GET /metrics
only, at most MAX_SCRAPES connections at once (one more is closed at once),
each dropped when its request has not come within SCRAPE_TIMEOUT seconds.
"""
from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

PATH = "/metrics"
MAX_SCRAPES = 4
SCRAPE_TIMEOUT = 2.0


class _Quiet(WSGIRequestHandler):
    timeout = SCRAPE_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Scrapes are not worth a journal line each."""


class _Bounded(ThreadingWSGIServer):
    """At most MAX_SCRAPES connections served at once; one more is closed at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.slots = threading.BoundedSemaphore(MAX_SCRAPES)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def serve(registry: CollectorRegistry, host: str, port: int) -> ThreadingWSGIServer:
    """Answer GET /metrics on host:port from a daemon thread; the caller
    stops it with shutdown() and server_close()."""
    app = make_wsgi_app(registry)

    def metrics_only(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        return app(environ, start_response)

    address = host.strip("[]")
    server_class = type("MetricsServer", (_Bounded,),
                        {"address_family": socket.AF_INET6 if ":" in address else socket.AF_INET})
    server = make_server(address, port, metrics_only, server_class=server_class, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
