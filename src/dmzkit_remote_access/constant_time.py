"""Comparing and hashing secrets that arrive as text from the network.

A request's text may hold any code point, lone surrogates included (aiohttp
decodes headers with surrogateescape), so secrets are turned into bytes
with `surrogatepass`: hostile text is a wrong secret, never an exception."""
from __future__ import annotations

import hmac


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def same(given: str, expected: str) -> bool:
    """Whether two secrets are equal, in time independent of where they differ."""
    return hmac.compare_digest(utf8(given), utf8(expected))
