"""AAA's connections to the user database, as its settings name it: over
TLS verified with the CA chain and the issuing CA's CRL (read afresh for
each connection), or a local socket; the password from libpq's password file."""
from __future__ import annotations

import asyncpg

from ..tls import client_context
from .settings import Settings


async def connect(settings: Settings, application_name: str) -> asyncpg.Connection:
    s = settings
    tls = None if s.db_host.startswith("/") else client_context(s.ca_chain, crl=s.crl)
    return await asyncpg.connect(host=s.db_host, port=s.db_port, database=s.db_name, user=s.db_user,
                                 passfile=s.db_passfile, ssl=tls, timeout=s.timeout,
                                 server_settings={"application_name": application_name})
