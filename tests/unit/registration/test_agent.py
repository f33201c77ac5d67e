"""The agent's hedged registration: the backup starts when the primary is
slow to finish its handshake, or at once when the primary fails; the
first to finish wins and the other is cancelled."""
from __future__ import annotations

import asyncio

import pytest

from dmzkit_remote_access.registration.agent import Endpoint, RegistrationFailed, hedged

PRIMARY, BACKUP = Endpoint("reg1.test", 1), Endpoint("reg2.test", 2)
# Longer than the agent's, so that a busy test machine cannot blur "at once" and "after it".
STAGGER = 0.5


class Script:
    """Attempts that follow a plan per endpoint: seconds to the handshake
    (None: never), then seconds to the outcome, and the outcome ("ok" or
    "fail"); and when each started and how it ended."""

    def __init__(self, plan: dict[Endpoint, tuple[float | None, float, str]]) -> None:
        self.plan = plan
        self.started: dict[Endpoint, float] = {}
        self.cancelled: set[Endpoint] = set()

    async def run(self, endpoint: Endpoint, handshaken: asyncio.Event):
        loop = asyncio.get_running_loop()
        self.started[endpoint] = loop.time() - self.t0
        to_handshake, to_outcome, outcome = self.plan[endpoint]
        try:
            if to_handshake is None:
                await asyncio.sleep(3600)
            await asyncio.sleep(to_handshake)
            if outcome == "refused":
                raise RegistrationFailed(f"{endpoint}: refused")
            handshaken.set()
            await asyncio.sleep(to_outcome)
            if outcome == "fail":
                raise RegistrationFailed(f"{endpoint}: failed")
            return endpoint
        except asyncio.CancelledError:
            self.cancelled.add(endpoint)
            raise

    def hedge(self):
        async def main():
            self.t0 = asyncio.get_running_loop().time()
            try:
                return await hedged([PRIMARY, BACKUP], self.run, STAGGER), None
            except RegistrationFailed as e:
                return None, str(e)
            finally:
                self.elapsed = asyncio.get_running_loop().time() - self.t0
        return asyncio.run(main())


def test_a_quick_primary_is_the_only_one_asked() -> None:
    script = Script({PRIMARY: (0.05, 0.5, "ok"), BACKUP: (0.01, 0.01, "ok")})
    assert script.hedge() == (PRIMARY, None)
    assert set(script.started) == {PRIMARY}


def test_a_primary_that_never_finishes_its_handshake_has_the_backup_start_after_the_stagger() -> None:
    script = Script({PRIMARY: (None, 0, "ok"), BACKUP: (0.05, 0.05, "ok")})
    assert script.hedge() == (BACKUP, None)
    assert STAGGER <= script.started[BACKUP] < STAGGER + 0.3
    assert script.cancelled == {PRIMARY}


def test_a_primary_that_refuses_has_the_backup_start_at_once() -> None:
    script = Script({PRIMARY: (0.02, 0, "refused"), BACKUP: (0.05, 0.05, "ok")})
    assert script.hedge() == (BACKUP, None)
    assert script.started[BACKUP] < 0.3


def test_a_primary_that_fails_after_its_handshake_has_the_backup_start_then() -> None:
    script = Script({PRIMARY: (0.05, 0.8, "fail"), BACKUP: (0.05, 0.05, "ok")})
    assert script.hedge() == (BACKUP, None)
    assert 0.85 <= script.started[BACKUP] < 1.15


def test_a_slow_primary_that_wins_cancels_the_backup() -> None:
    script = Script({PRIMARY: (0.6, 0.05, "ok"), BACKUP: (0.5, 1, "ok")})
    assert script.hedge() == (PRIMARY, None)
    assert script.cancelled == {BACKUP}


def test_when_both_fail_both_reasons_are_given() -> None:
    script = Script({PRIMARY: (0.01, 0, "refused"), BACKUP: (0.01, 0.01, "fail")})
    result, error = script.hedge()
    assert result is None and "reg1.test:1: refused" in error and "reg2.test:2: failed" in error
    assert script.elapsed < STAGGER


def test_no_server_is_a_failure() -> None:
    async def never(endpoint, handshaken):
        raise AssertionError("not asked")
    with pytest.raises(RegistrationFailed):
        asyncio.run(hedged([], never))
