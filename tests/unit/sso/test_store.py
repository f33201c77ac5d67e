"""The SSO store against a real Redis: one-time artifacts, replay caches,
device-bound tickets with idle and absolute lifetimes."""
from __future__ import annotations

import asyncio
import time

import pytest

from dmzkit_remote_access.sso.artifact import Artifact
from dmzkit_remote_access.sso.store import ArtifactRecord, Store, StoreError, Ticket

IDP, SP = "https://idp.test/", "https://sp.test/"


def record(seconds: float = 60.0) -> ArtifactRecord:
    return ArtifactRecord(IDP, SP, b"<samlp:Response/>", time.time() + seconds)


def test_an_artifact_resolves_once(with_store) -> None:
    async def body(store: Store) -> list[ArtifactRecord | None]:
        artifact = Artifact.new(IDP, 0)
        await store.put_artifact(artifact, record())
        return [await store.take_artifact(artifact), await store.take_artifact(artifact)]
    first, replay = with_store(body)
    assert first is not None and first.recipient == SP and first.message == b"<samlp:Response/>"
    assert replay is None


def test_a_handle_is_stored_once(with_store) -> None:
    async def body(store: Store) -> None:
        artifact = Artifact.new(IDP, 0)
        await store.put_artifact(artifact, record())
        await store.put_artifact(artifact, record())
    with pytest.raises(StoreError, match="already exists"):
        with_store(body)


def test_an_expired_artifact_is_gone(with_store) -> None:
    async def body(store: Store) -> ArtifactRecord | None:
        artifact = Artifact.new(IDP, 0)
        await store.put_artifact(artifact, record(seconds=0.2))
        await asyncio.sleep(0.3)
        return await store.take_artifact(artifact)
    assert with_store(body) is None


def test_neither_artifacts_nor_tickets_are_stored_in_clear(with_store) -> None:
    async def body(store: Store) -> tuple[list[bytes], str, str]:
        artifact = Artifact.new(IDP, 0)
        await store.put_artifact(artifact, record())
        token = await store.issue_ticket("alice", "fp", idle=60, absolute=120)
        return await store.redis.keys(f"{store.prefix}*"), artifact.encode(), token
    keys, artifact, token = with_store(body)
    assert len(keys) == 2
    assert not any(artifact.encode() in k or token.encode() in k for k in keys)


def test_the_replay_cache_accepts_an_id_once(with_store) -> None:
    async def body(store: Store) -> list[bool]:
        return [await store.first_use("request", "_id1", 60), await store.first_use("request", "_id1", 60),
                await store.first_use("request", "_id2", 60)]
    assert with_store(body) == [True, False, True]


async def use(store: Store, token: str, idle: float) -> Ticket | None:
    """Present a ticket as the IdP and the proxy do: read it, then renew it."""
    ticket = await store.ticket(token)
    if ticket is not None:
        await store.renew_ticket(token, ticket, idle)
    return ticket


def test_a_ticket_keeps_when_and_how_its_user_authenticated(with_store) -> None:
    async def body(store: Store) -> tuple[Ticket, Ticket | None]:
        token, opened = await store.open_ticket("alice", "fp", idle=60, absolute=120, context="urn:x:password")
        await asyncio.sleep(1.1)
        return opened, await use(store, token, idle=60)
    opened, later = with_store(body)
    assert later == opened and later.context == "urn:x:password" and later.device == "fp"
    assert later.expires == later.created + 120 and time.time() - later.created >= 1.1


def test_a_ticket_lives_while_used_and_dies_at_its_absolute_end(with_store) -> None:
    async def body(store: Store) -> list[str | None]:
        token = await store.issue_ticket("alice", "fp", idle=1, absolute=2.5)
        seen = []
        for _ in range(4):  # used every 0.8 s: the idle lifetime (1 s) never runs out
            await asyncio.sleep(0.8)
            ticket = await use(store, token, idle=1)
            seen.append(ticket.user if ticket else None)
        return seen
    assert with_store(body) == ["alice", "alice", "alice", None]  # 3.2 s > absolute 2.5 s


def test_an_idle_ticket_expires(with_store) -> None:
    async def body(store: Store) -> object:
        token = await store.issue_ticket("alice", "fp", idle=1, absolute=60)
        await asyncio.sleep(2.1)
        return await use(store, token, idle=1)
    assert with_store(body) is None


def test_a_revoked_ticket_is_gone(with_store) -> None:
    async def body(store: Store) -> tuple[bool, object, object]:
        token = await store.issue_ticket("alice", "fp", idle=60, absolute=60)
        return await store.revoke_ticket(token), await use(store, token, idle=60), await use(store, "x" * 500, idle=60)
    assert with_store(body) == (True, None, None)
