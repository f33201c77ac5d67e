"""Short-lived SSO state in Redis (role session_store): artifacts, SSO
tickets and replay caches, shared by every IdP and proxy replica.

- Artifacts: created once (`SET NX EX`), taken once (`GETDEL`): the first
  ArtifactResolve deletes the record before anything else is checked, so
  a replay finds nothing (SAMLCore §3.5.3).
- Tickets: 256 random bits, stored under their SHA-256, bound to a device
  key; an idle lifetime renewed on use, capped by an absolute one; when
  and how the user authenticated, for the assertions the session answers.
- Replay caches: an ID is accepted the first time only, for as long as it
  could still be valid.

Keys are hashes, never the artifact or ticket itself, so neither appears in
Redis or in its logs.
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass

from redis.asyncio import Redis

from ..constant_time import utf8
from .artifact import Artifact

TICKET_BYTES = 32


class StoreError(RuntimeError):
    pass


@dataclass(frozen=True)
class ArtifactRecord:
    issuer: str
    # The entityID of the SP the message was issued for: only it may resolve the artifact.
    recipient: str
    message: bytes
    not_after: float

    def dumps(self) -> str:
        return json.dumps(asdict(self) | {"message": base64.b64encode(self.message).decode()})

    @classmethod
    def loads(cls, data: bytes) -> ArtifactRecord:
        raw = json.loads(data)
        return cls(raw["issuer"], raw["recipient"], base64.b64decode(raw["message"]), float(raw["not_after"]))


@dataclass(frozen=True)
class Ticket:
    user: str
    # SHA-256 of the public key (SPKI) the ticket is bound to: presenting it
    # needs that key. "" when no certificate was presented.
    device: str
    # When the user authenticated (time.time()): the session's AuthnInstant.
    created: float
    expires: float
    # How they authenticated (a SAML AuthnContextClassRef); "" where no one asks.
    context: str = ""


def _digest(secret: str) -> str:
    return hashlib.sha256(utf8(secret)).hexdigest()


class Store:
    def __init__(self, redis: Redis, prefix: str = "dmzkit:sso:") -> None:
        self.redis = redis
        self.prefix = prefix

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    # -- artifacts -------------------------------------------------------------

    async def put_artifact(self, artifact: Artifact, record: ArtifactRecord) -> None:
        ttl = max(1, int(record.not_after - time.time() + 0.999))
        if not await self.redis.set(self._key("artifact", artifact.key), record.dumps(), nx=True, ex=ttl):
            raise StoreError("an artifact with this handle already exists")

    async def take_artifact(self, artifact: Artifact) -> ArtifactRecord | None:
        """The record, deleted in the same step; None if used, expired or never issued."""
        data = await self.redis.getdel(self._key("artifact", artifact.key))
        if data is None:
            return None
        record = ArtifactRecord.loads(data)
        return record if time.time() < record.not_after else None

    # -- other secrets: values kept under the SHA-256 of a secret ----------------

    async def put_value(self, kind: str, secret: str, value: str, seconds: float, once: bool = False) -> None:
        """Keep `value` for `seconds`; with `once`, refuse to replace one already there."""
        if not await self.redis.set(self._key(kind, _digest(secret)), value, nx=once,
                                    ex=max(1, int(seconds + 0.999))):
            raise StoreError(f"a {kind} with this secret already exists")

    async def get_value(self, kind: str, secret: str) -> str | None:
        data = await self.redis.get(self._key(kind, _digest(secret)))
        return data.decode() if data is not None else None

    async def take_value(self, kind: str, secret: str) -> str | None:
        """The value, deleted as it is read: a second take finds nothing."""
        data = await self.redis.getdel(self._key(kind, _digest(secret)))
        return data.decode() if data is not None else None

    # -- replay caches -----------------------------------------------------------

    async def first_use(self, kind: str, identifier: str, seconds: float) -> bool:
        """True the first time `identifier` is seen within `seconds`."""
        key = self._key(f"seen:{kind}", _digest(identifier))
        return bool(await self.redis.set(key, b"1", nx=True, ex=max(1, int(seconds + 0.999))))

    # -- SSO tickets ---------------------------------------------------------------

    async def open_ticket(self, user: str, device: str, idle: float, absolute: float,
                          context: str = "") -> tuple[str, Ticket]:
        """A new ticket, and its token: the only way to present it."""
        token = secrets.token_urlsafe(TICKET_BYTES)
        now = time.time()
        ticket = Ticket(user, device, now, now + absolute, context)
        ttl = max(1, int(min(idle, absolute) + 0.999))
        await self.redis.set(self._key("ticket", _digest(token)), json.dumps(asdict(ticket)), ex=ttl)
        return token, ticket

    async def issue_ticket(self, user: str, device: str, idle: float, absolute: float) -> str:
        """A new ticket's token."""
        token, _ = await self.open_ticket(user, device, idle, absolute)
        return token

    async def ticket(self, token: str) -> Ticket | None:
        """The ticket if it is live, its lifetime untouched."""
        if len(token) > 4 * TICKET_BYTES:
            return None
        key = self._key("ticket", _digest(token))
        data = await self.redis.get(key)
        if data is None:
            return None
        ticket = Ticket(**json.loads(data))
        if ticket.expires <= time.time():
            await self.redis.delete(key)
            return None
        return ticket

    async def renew_ticket(self, token: str, ticket: Ticket, idle: float) -> None:
        """Start the ticket's idle lifetime again, never past its absolute end."""
        left = ticket.expires - time.time()
        await self.redis.expire(self._key("ticket", _digest(token)), max(1, int(min(idle, left) + 0.999)))

    async def revoke_ticket(self, token: str) -> bool:
        return bool(await self.redis.delete(self._key("ticket", _digest(token))))
