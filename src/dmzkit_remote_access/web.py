"""Serving an aiohttp application the way every service of the collection
does: over TLS, on one address:port, without an access log (the services
log what matters themselves)."""
from __future__ import annotations

import ssl

from aiohttp import web


async def start_site(app: web.Application, listen: str, context: ssl.SSLContext) -> web.AppRunner:
    """Serve `app` over TLS on `listen` (address:port); the caller cleans the runner up."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    try:
        await web.TCPSite(runner, host.strip("[]"), int(port), ssl_context=context).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
