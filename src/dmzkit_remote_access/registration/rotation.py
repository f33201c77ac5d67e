"""Two-phase rotation of a device's business password: a grant's password
becomes the account's only once the device has stored it, and the device
forgets a password only once it knows the account has another, so no lost
grant, ack or done leaves a device without the account's password.

The server (Rotation, one per device, which the registration service keeps
in the user database: read for update, one step, written back in the same
transaction) knows three things: `committed`, the epoch whose password the
account has; `issued`, the last epoch it granted; and `pending`, the grant
waiting for its ack. A reg reports the last epoch the device stored:

- the pending one: the device stored it and its ack, or the done, was lost;
  the reg commits it, as the ack would have;
- below `committed`: a cache older than the account's password (rolled
  back, or a copy on another device): refused;
- above `issued`: never granted: refused;
- otherwise (`committed`, or a grant that expired before its ack): taken.

The grant sent back is the pending one again (the same epoch and password,
a new deadline) when there is one, else a new one; it names `committed`,
so the device knows which of the passwords it keeps to forget (Kept).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace


class Refused(Exception):
    """A reg or ack the rotation cannot take; the device's passwords stay
    as they are."""


@dataclass(frozen=True)
class Pending:
    epoch: int
    password: str
    expires: float

    def __repr__(self) -> str:
        return f"Pending(epoch={self.epoch}, expires={self.expires})"


@dataclass(frozen=True)
class Step:
    """What a step leaves: the rotation to write back, the grant to send
    (on a reg), and the epoch it committed, if it did: the account's
    password is that epoch's from now on."""
    rotation: Rotation
    grant: Pending | None = None
    committed: Pending | None = None


@dataclass(frozen=True)
class Rotation:
    committed: int = 0
    issued: int = 0
    pending: Pending | None = None

    def _current(self, now: float) -> Rotation:
        """The rotation without a pending grant whose time is up."""
        if self.pending is not None and now >= self.pending.expires:
            return replace(self, pending=None)
        return self

    def _commit(self) -> Step:
        assert self.pending is not None
        return Step(replace(self, committed=self.pending.epoch, pending=None), committed=self.pending)

    def reg(self, stored: int, now: float, commit_by: float, new_password: Callable[[], str]) -> Step:
        """A device registers, having stored the grant of epoch `stored`
        last (0: none yet)."""
        state = self._current(now)
        committed = None
        if state.pending is not None and stored == state.pending.epoch:
            step = state._commit()
            state, committed = step.rotation, step.committed
        elif stored < state.committed:
            raise Refused(f"epoch {stored} is older than the account's password (epoch {state.committed})")
        elif stored > state.issued:
            raise Refused(f"epoch {stored} was never granted (last {state.issued})")
        if state.pending is not None:
            grant = replace(state.pending, expires=now + commit_by)
        else:
            grant = Pending(state.issued + 1, new_password(), now + commit_by)
        state = replace(state, issued=grant.epoch, pending=grant)
        return Step(state, grant, committed)

    def ack(self, epoch: int, now: float) -> Step:
        """A device has stored the grant of `epoch`. An ack of the epoch
        already committed is taken again (its done may have been lost)."""
        state = self._current(now)
        if state.pending is not None and epoch == state.pending.epoch:
            return state._commit()
        if epoch == state.committed:
            return Step(state)
        raise Refused(f"epoch {epoch} is neither pending nor committed")


@dataclass(frozen=True)
class Kept:
    """What a device keeps: the password of the epoch it knows is committed
    (`current`; none before its first grant is committed) and the last grant
    it stored that it does not know to be committed (`candidate`)."""
    current: tuple[int, str | None] = (0, None)
    candidate: tuple[int, str] | None = None

    def __repr__(self) -> str:
        return f"Kept(current={self.current[0]}, candidate={self.candidate and self.candidate[0]})"

    @property
    def stored(self) -> int:
        """The epoch a reg reports: the last grant stored."""
        return self.candidate[0] if self.candidate else self.current[0]

    def passwords(self) -> list[str]:
        """The passwords to try at the business server, in order: the
        account has one of them."""
        kept = [self.candidate[1]] if self.candidate else []
        return kept + ([self.current[1]] if self.current[1] is not None else [])

    def _committed(self, epoch: int) -> Kept:
        if self.candidate and self.candidate[0] == epoch:
            return Kept(current=self.candidate)
        if self.current[0] == epoch:
            return Kept(current=self.current)
        raise Refused(f"the account's password is of epoch {epoch}, which this device does not keep")

    def grant(self, epoch: int, password: str, committed: int) -> Kept:
        """A grant came: the passwords to keep, to be stored (synced)
        before the ack goes."""
        kept = self._committed(committed)
        if epoch <= committed:
            raise Refused(f"a grant of epoch {epoch} is not newer than the committed {committed}")
        if self.candidate and epoch < self.candidate[0]:
            # A late answer on another connection: the newer grant may be
            # committed yet.
            raise Refused(f"a grant of epoch {epoch} is older than the one stored ({self.candidate[0]})")
        return replace(kept, candidate=(epoch, password))

    def done(self, epoch: int) -> Kept:
        """The server committed `epoch`. A done of the epoch already known
        to be committed (a late one, on another connection) changes
        nothing: the candidate may be committed since."""
        if epoch == self.current[0]:
            return self
        return self._committed(epoch)
