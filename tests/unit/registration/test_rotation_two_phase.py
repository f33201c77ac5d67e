"""Two-phase rotation: whatever is lost on the way, the device keeps the
account's password; an older cache is refused; the old password goes at
the commit."""
from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Iterator
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmzkit_remote_access.registration.rotation import Kept, Pending, Refused, Rotation

COMMIT_BY = 60.0


class Lab:
    """One device and the server's side of its rotation, and the account's
    password as the business server checks it."""

    def __init__(self) -> None:
        self.rotation = Rotation()
        self.kept = Kept()
        self.account: str | None = None
        self.now = 0.0
        self.counter = itertools.count(1)
        self.commits = 0

    def password(self) -> str:
        return f"password-{next(self.counter)}"

    def apply(self, step) -> None:
        self.rotation = step.rotation
        if step.committed is not None:
            assert step.committed.password != self.account
            self.account = step.committed.password
            self.commits += 1

    def register(self, lose_grant: bool = False, lose_ack: bool = False, lose_done: bool = False,
                 late_ack: bool = False) -> bool:
        """One registration; whether the device heard its done."""
        self.apply(self.rotation.reg(self.kept.stored, self.now, COMMIT_BY, self.password))
        grant = self.rotation.pending
        assert grant is not None
        if lose_grant:
            return False
        self.kept = self.kept.grant(grant.epoch, grant.password, self.rotation.committed)
        if lose_ack:
            return False
        if late_ack:
            self.now += COMMIT_BY + 1
        try:
            step = self.rotation.ack(grant.epoch, self.now)
        except Refused:
            return False
        self.apply(step)
        if lose_done:
            return False
        self.kept = self.kept.done(grant.epoch)
        return True

    def can_log_in(self) -> bool:
        return self.account is None or self.account in self.kept.passwords()


def test_a_registration_rotates_the_password_and_the_old_one_goes_at_the_commit() -> None:
    lab = Lab()
    assert lab.register()
    first = lab.account
    assert lab.kept.passwords() == [first]
    assert lab.register()
    assert lab.account != first
    assert lab.kept.passwords() == [lab.account]
    assert lab.rotation == Rotation(committed=2, issued=2)


def test_a_lost_grant_is_granted_again_with_the_same_password() -> None:
    lab = Lab()
    lab.register()
    lab.register(lose_grant=True)
    lost = lab.rotation.pending
    lab.now += 10
    lab.apply(lab.rotation.reg(lab.kept.stored, lab.now, COMMIT_BY, lab.password))
    assert lab.rotation.pending == Pending(lost.epoch, lost.password, lab.now + COMMIT_BY)


def test_a_reg_after_a_lost_ack_commits_what_the_device_stored() -> None:
    lab = Lab()
    lab.register()
    lab.register(lose_ack=True)
    stored = lab.kept.candidate
    assert lab.account != stored[1] and lab.can_log_in()
    lab.apply(lab.rotation.reg(lab.kept.stored, lab.now, COMMIT_BY, lab.password))
    assert lab.rotation.committed == stored[0] and lab.account == stored[1]
    assert lab.can_log_in()


def test_an_ack_after_the_deadline_is_refused_and_the_old_password_stays() -> None:
    lab = Lab()
    lab.register()
    before = lab.account
    assert not lab.register(late_ack=True)
    assert lab.account == before and lab.can_log_in()
    # The next registration says the expired grant was stored: taken, and a new one granted.
    assert lab.register()
    assert lab.account not in (before, None)


def test_a_done_lost_leaves_both_passwords_until_the_next_grant() -> None:
    lab = Lab()
    lab.register()
    assert not lab.register(lose_done=True)
    assert len(lab.kept.passwords()) == 2 and lab.can_log_in()
    lab.register(lose_ack=True)
    assert len(lab.kept.passwords()) == 2 and lab.can_log_in()


def test_an_ack_taken_twice_commits_once() -> None:
    lab = Lab()
    lab.register()
    step = lab.rotation.ack(lab.rotation.committed, lab.now)
    assert step.committed is None and step.rotation == lab.rotation


@pytest.mark.parametrize("stored", [0, 1])
def test_a_cache_older_than_the_accounts_password_is_refused(stored: int) -> None:
    lab = Lab()
    for _ in range(3):
        lab.register()
    with pytest.raises(Refused):
        lab.rotation.reg(stored, lab.now, COMMIT_BY, lab.password)


def test_an_epoch_never_granted_is_refused() -> None:
    lab = Lab()
    lab.register()
    with pytest.raises(Refused):
        lab.rotation.reg(lab.rotation.issued + 1, lab.now, COMMIT_BY, lab.password)
    with pytest.raises(Refused):
        lab.rotation.ack(lab.rotation.issued + 1, lab.now)


def test_a_grant_naming_a_password_the_device_does_not_keep_is_refused() -> None:
    with pytest.raises(Refused):
        Kept(current=(3, "c")).grant(5, "new", committed=4)
    with pytest.raises(Refused):
        Kept(current=(3, "c")).grant(3, "old", committed=3)


def test_no_password_in_the_reprs() -> None:
    lab = Lab()
    lab.register(lose_done=True)
    assert "password-" not in repr(lab.rotation) + repr(lab.kept)


def test_a_thousand_registrations_with_a_tenth_of_grants_and_acks_lost_lock_no_device_out(capsys) -> None:
    rng = random.Random(20261207)
    devices = [Lab() for _ in range(10)]
    completed = 0
    for i in range(1_000):
        lab = devices[i % len(devices)]
        lab.now += rng.uniform(0, 2 * COMMIT_BY)
        completed += lab.register(lose_grant=rng.random() < 0.1, lose_ack=rng.random() < 0.1)
        assert lab.can_log_in()
    locked_out = sum(not lab.can_log_in() for lab in devices)
    assert locked_out == 0
    assert completed > 700
    with capsys.disabled():
        print(f"\nrotation: 1,000 registrations, 10 % of grants and acks lost: {completed} completed,"
              f" {sum(lab.commits for lab in devices)} commits, {locked_out} devices locked out")


events = st.lists(st.tuples(st.sampled_from(["ok", "grant", "ack", "done", "late"]), st.floats(0, 3 * COMMIT_BY)),
                  max_size=40)


@settings(max_examples=300)
@given(events)
def test_whatever_is_lost_and_whenever_the_device_keeps_the_accounts_password(sequence) -> None:
    lab = Lab()
    for lost, pause in sequence:
        lab.now += pause
        before = lab.rotation.committed
        lab.register(lose_grant=lost == "grant", lose_ack=lost == "ack", lose_done=lost == "done",
                     late_ack=lost == "late")
        assert lab.can_log_in()
        assert lab.rotation.committed >= before
        assert lab.rotation.committed <= lab.rotation.issued


def test_a_late_done_on_another_connection_keeps_the_newer_password() -> None:
    kept = Kept(current=(1, "p1"), candidate=(2, "p2"))
    assert kept.done(1) == kept
    assert kept.passwords() == ["p2", "p1"]


def test_a_late_grant_older_than_the_one_stored_is_refused() -> None:
    with pytest.raises(Refused):
        Kept(current=(4, "p4"), candidate=(6, "p6")).grant(5, "p5", committed=4)


class World(NamedTuple):
    """The server's rotation and the account's password; the device's
    passwords in memory and in its cache on disk; a message in flight on
    each of two connections (the agent's hedged attempts), or None."""
    rotation: Rotation
    account: str | None
    now: float
    memory: Kept
    disk: Kept
    connections: tuple[tuple | None, ...]
    regs: int
    made: int


def saved(disk: Kept, new: Kept) -> Kept:
    # cache.save: a cache older than the one on disk is not written.
    return disk if disk.stored > new.stored else new


def steps(w: World, most_regs: int) -> Iterator[World]:
    """Every next step: a message delivered or lost on either connection,
    a new reg, the server's clock jumping past a deadline or back, or the
    device restarting from its cache."""
    for i, message in enumerate(w.connections):
        def on(message_i: tuple | None, **changes) -> World:
            connections = list(w.connections)
            connections[i] = message_i
            return w._replace(connections=tuple(connections), **changes)
        if message is None:
            if w.regs < most_regs:
                yield on(("reg", w.memory.stored), regs=w.regs + 1)
            continue
        yield on(None)
        kind, *fields = message
        try:
            if kind == "reg":
                step = w.rotation.reg(fields[0], w.now, COMMIT_BY, lambda: f"p{w.made + 1}")
                grant = step.grant
                yield on(("grant", grant.epoch, grant.password, step.rotation.committed), rotation=step.rotation,
                         account=step.committed.password if step.committed else w.account, made=w.made + 1)
            elif kind == "grant":
                memory = w.memory.grant(*fields)
                yield on(("ack", fields[0]), memory=memory, disk=saved(w.disk, memory))
            elif kind == "ack":
                step = w.rotation.ack(fields[0], w.now)
                yield on(("done", fields[0]), rotation=step.rotation,
                         account=step.committed.password if step.committed else w.account)
            else:
                memory = w.memory.done(fields[0])
                yield on(None, memory=memory, disk=saved(w.disk, memory))
        except Refused:
            yield on(None)
    if w.now < 2 * (COMMIT_BY + 1):
        yield w._replace(now=w.now + COMMIT_BY + 1)
    if w.now > 0:
        yield w._replace(now=w.now - COMMIT_BY - 1)
    yield w._replace(memory=w.disk, connections=(None, None))


@pytest.mark.parametrize("most_regs", [4])
def test_every_interleaving_of_two_connections_keeps_the_accounts_password(most_regs: int, capsys) -> None:
    """All the worlds reachable with up to `most_regs` registrations on two
    overlapping connections, any message lost, the server's clock jumping
    past a grant's deadline or back, and the device restarting from its
    cache: in each, the device keeps the account's password in memory and
    on disk, and the committed epoch never goes back."""
    start = World(Rotation(), None, 0.0, Kept(), Kept(), (None, None), 0, 0)
    seen = {start}
    queue = deque([start])
    while queue:
        world = queue.popleft()
        for after in steps(world, most_regs):
            if after in seen:
                continue
            seen.add(after)
            if after.account is not None:
                assert after.account in after.memory.passwords(), after
                assert after.account in after.disk.passwords(), after
            assert after.rotation.committed >= world.rotation.committed, after
            queue.append(after)
    assert len(seen) > 10_000
    with capsys.disabled():
        print(f"\nrotation, two connections, {most_regs} registrations: {len(seen):,} worlds, none locked out")
