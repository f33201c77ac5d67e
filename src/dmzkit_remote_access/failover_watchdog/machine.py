"""The watchdog's state machine (failover.md §8.4), free of I/O.

Each tick the service builds an `Observation` from its probes and calls
`Machine.step`; the machine answers with a `Step`: the state it moved to,
why, and the actions the service must run, in order. Actions that take time
(the confirm burst, the takeover) report back through `confirmed` and
`finished`, so every outcome is a transition the tests can see.

    INIT -> STANDBY -> SUSPECT -> CONFIRM -> TAKEOVER -> ACTIVE
    ACTIVE -> YIELD -> STANDBY          (the primary claims the VIP: at once)
    ACTIVE -> HANDBACK -> STANDBY       (primary healthy for hold_down, or the operator;
                                         a fenced primary is unfenced first)
    any -> FAULT -> STANDBY             (own link or witness lost; healthy again)

ARP is unauthenticated, so the service tells the machine only what came from
the primary's known MACs (claimed_by_primary, PRIMARY holder, signs of life)
and what came from any other (claimed_by_stranger, FOREIGN holder). A
stranger is never obeyed (issue 15, finding 6):

- claiming the VIP while we hold it, it is defended: one gratuitous ARP at
  most every DEFEND_INTERVAL (RFC 5227 §2.4 (c)), no yield, so no damping;
- holding the VIP of a dead primary (answering our probes, or the confirm
  burst), it holds a takeover back for `stranger_patience` only: long enough
  for a misconfigured host to be noticed (it is counted and alarmed), too
  short for a forger to keep the VIP unheld; then we take over and defend.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from ..net.arp import DEFEND_INTERVAL
from .settings import Failback, FenceMode, Settings

# How long a stranger that claims the VIP may hold back the takeover of a
# dead primary's address: one DEFEND_INTERVAL, in which a host that really
# holds the address and defends it (RFC 5227) would have shown it.
STRANGER_PATIENCE = DEFEND_INTERVAL


class State(StrEnum):
    INIT = "init"
    STANDBY = "standby"
    SUSPECT = "suspect"
    FENCING = "fencing"
    CONFIRM = "confirm"
    TAKEOVER = "takeover"
    ACTIVE = "active"
    HANDBACK = "handback"
    YIELD = "yield"
    FAULT = "fault"


class Action(StrEnum):
    CONFIRM_BURST = "confirm_burst"
    FENCE = "fence"
    ADD_VIP = "add_vip"
    ANNOUNCE_SELF = "announce_self"
    START_SERVICES = "start_services"
    STOP_SERVICES = "stop_services"
    DEL_VIP = "del_vip"
    ANNOUNCE_PRIMARY = "announce_primary"
    UNFENCE = "unfence"
    DEFEND = "defend"


# Taking the VIP, once nobody answers for it (after the fence, when there is one).
CLAIM = (Action.ADD_VIP, Action.ANNOUNCE_SELF, Action.START_SERVICES)
# Letting it go, telling the segment it is at the primary's MAC again.
RELEASE = (Action.STOP_SERVICES, Action.DEL_VIP, Action.ANNOUNCE_PRIMARY)
# Letting it go to whoever claims it: the address first, so the duplicate
# ends at once; the claimer has announced itself, we say nothing for it.
GIVE_WAY = (Action.DEL_VIP, Action.STOP_SERVICES)


class Holder(StrEnum):
    """Who last said the VIP is theirs (a reply to our probe, or a GARP)."""

    NOBODY = "nobody"
    PRIMARY = "primary"  # one of the primary's known MACs
    FOREIGN = "foreign"  # any other MAC: forged, or a misconfigured host


@dataclass(frozen=True)
class Observation:
    now: float
    link_up: bool
    witness_ok: bool
    # Both the VIP probe and the management probe are dead by the decision rule.
    primary_dead: bool
    # At least one of them has gone unanswered for more than one interval.
    primary_silent: bool
    # The host answers but its VPN is dead, by its health agent's positive
    # evidence (only with an agent configured: settings.health); app_reason
    # says which evidence.
    app_dead: bool = False
    app_reason: str = ""
    # The management address answers and the health agent (if any) says the
    # VPN is up: the primary could take the VIP back.
    primary_healthy: bool = False
    vip_holder: Holder = Holder.NOBODY
    # While we hold the VIP: one of the primary's MACs claimed it (ARP reply to our probe, or a GARP).
    claimed_by_primary: bool = False
    # While we hold the VIP: a MAC that is not the primary's claimed it.
    claimed_by_stranger: bool = False


@dataclass(frozen=True)
class Step:
    state: State
    reason: str
    actions: tuple[Action, ...] = ()
    previous: State | None = None

    @property
    def changed(self) -> bool:
        return self.previous is not None and self.previous is not self.state


@dataclass
class Machine:
    settings: Settings
    state: State = State.INIT
    reason: str = "starting"
    since: float = 0.0
    takeovers: deque[float] = field(default_factory=deque)
    healthy_since: float | None = None
    conflicts: int = 0
    # Set while a takeover that began by fencing the primary is under way.
    fenced_first: bool = False
    # The VIP was found on this host at start: kept only while the primary is down.
    reconciling: bool = False
    stranger_patience: float = STRANGER_PATIENCE
    # Since when a stranger has been claiming the VIP while we do not hold it.
    stranger_since: float | None = None
    # The last defence of the VIP against a stranger's claim, and how many.
    last_defence: float | None = None
    defences: int = 0

    # -- helpers ---------------------------------------------------------------

    def _go(self, state: State, now: float, reason: str, *actions: Action) -> Step:
        previous = self.state
        if state is not previous:
            self.since = now
            self.healthy_since = None
        if state in (State.STANDBY, State.ACTIVE, State.FAULT):
            self.fenced_first = False
        self.state, self.reason = state, reason
        return Step(state=state, reason=reason, actions=actions, previous=previous)

    def _stay(self) -> Step:
        return Step(state=self.state, reason=self.reason, previous=self.state)

    def damped(self, now: float) -> bool:
        window = self.settings.damping.window
        while self.takeovers and now - self.takeovers[0] > window:
            self.takeovers.popleft()
        return len(self.takeovers) >= self.settings.damping.max_takeovers

    @property
    def fence_mode(self) -> FenceMode:
        return self.settings.fence.mode

    def _takeover_actions(self) -> tuple[Action, ...]:
        fence = (Action.FENCE,) if self.fence_mode is not FenceMode.NONE else ()
        return (*fence, *CLAIM)

    def _release_actions(self) -> tuple[Action, ...]:
        unfence = (Action.UNFENCE,) if self.fence_mode is not FenceMode.NONE else ()
        return (*RELEASE, *unfence)

    def _hand_back(self, now: float, reason: str) -> Step:
        """Unfence the primary first (its own step), then release: the
        primary's guard sees the VIP still held, waits, and claims it once
        released, so it reaches the VIP the moment it is free."""
        if self.fence_mode is FenceMode.NONE:
            return self._go(State.HANDBACK, now, reason, *RELEASE)
        return self._go(State.HANDBACK, now, reason, Action.UNFENCE)

    def _stranger_in_the_way(self, now: float) -> bool:
        """A stranger claims the VIP and has not yet spent its patience."""
        if self.stranger_since is None:
            self.stranger_since = now
        return now - self.stranger_since < self.stranger_patience

    def _healthy_for(self, obs: Observation, needed: float) -> bool:
        if self.healthy_since is None:
            self.healthy_since = obs.now
        return obs.now - self.healthy_since >= needed

    # -- start-up ---------------------------------------------------------------

    def start(self, now: float, holding_vip: bool) -> Step:
        """Startup reconcile: an address left behind by a crash is kept only
        while the primary stays dead; the first verdict of the probes decides."""
        if holding_vip:
            self.reconciling = True
            return self._go(State.ACTIVE, now, "reconcile: found the VIP on this host")
        return self._go(State.STANDBY, now, "started")

    # -- every tick -------------------------------------------------------------

    def step(self, obs: Observation) -> Step:
        if self.state in (State.CONFIRM, State.TAKEOVER, State.FENCING, State.HANDBACK, State.YIELD):
            return self._stay()  # an action is running; its result moves us on
        if not obs.link_up or not obs.witness_ok:
            return self._fault(obs)
        if self.state is State.FAULT:
            if self._healthy_for(obs, self.settings.fault_recovery):
                return self._go(State.STANDBY, obs.now, "link and witness healthy again")
            return self._stay()
        if self.state is State.ACTIVE:
            return self._active(obs)
        return self._standby(obs)

    def _fault(self, obs: Observation) -> Step:
        reason = "own link down" if not obs.link_up else "witness unreachable: this host may be the isolated one"
        if self.state is State.FAULT:
            self.healthy_since = None
            return self._stay()
        if self.state is State.ACTIVE:
            return self._go(State.FAULT, obs.now, reason, *self._release_actions())
        return self._go(State.FAULT, obs.now, reason)

    def _standby(self, obs: Observation) -> Step:
        if obs.vip_holder is Holder.FOREIGN:
            if self._stranger_in_the_way(obs.now):
                return self._go(State.STANDBY, obs.now, f"an unknown MAC claims the VIP: not taking over for "
                                f"{self.stranger_patience:g} s")
        elif not obs.primary_dead:
            # Heard from the primary: the stranger's spell is over. Not merely
            # a quiet moment of the stranger's: one that answers only our
            # confirm bursts must not start its patience afresh each time.
            self.stranger_since = None
        if obs.primary_dead:
            if self.damped(obs.now):
                return self._go(State.STANDBY, obs.now, "primary dead, but takeovers are damped: operator action needed")
            reason = "primary silent for dead_time"
            if self.stranger_since is not None and not self._stranger_in_the_way(obs.now):
                reason += f"; an unknown MAC claimed the VIP for {self.stranger_patience:g} s: taking it, defended"
            return self._go(State.CONFIRM, obs.now, reason, Action.CONFIRM_BURST)
        if obs.app_dead and self.fence_mode is FenceMode.REQUIRED:
            if self.damped(obs.now):
                return self._go(State.STANDBY, obs.now, "VPN dead, but takeovers are damped: operator action needed")
            # It still holds the VIP: only a fence can make the address free.
            return self._go(State.FENCING, obs.now, f"primary's VPN dead while the host answers: {obs.app_reason}",
                            Action.FENCE)
        if obs.primary_silent:
            if self.state is not State.SUSPECT:
                return self._go(State.SUSPECT, obs.now, "a probe went unanswered")
            return self._stay()
        if self.state is not State.STANDBY:
            return self._go(State.STANDBY, obs.now, "primary answers")
        return self._stay()

    def _active(self, obs: Observation) -> Step:
        self.stranger_since = None
        if obs.claimed_by_primary:
            self.conflicts += 1
            return self._go(State.YIELD, obs.now, "the primary claims the VIP: yielding", *GIVE_WAY)
        if obs.claimed_by_stranger and (self.last_defence is None or obs.now - self.last_defence >= DEFEND_INTERVAL):
            # Not a yield, so never a reason to damp: one announcement of
            # ours, and the segment is told where the VIP is again.
            self.last_defence = obs.now
            self.defences += 1
            return Step(state=State.ACTIVE, reason="an unknown MAC claims the VIP: defending it",
                        actions=(Action.DEFEND,), previous=State.ACTIVE)
        if self.reconciling:
            if obs.primary_healthy:
                self.reconciling = False
                return self._hand_back(obs.now, "reconcile: the primary is up, the VIP is its own")
            if not obs.primary_dead:
                return self._stay()  # neither heard nor silent for dead_time yet: wait for the verdict
            self.reconciling = False
        if not obs.primary_healthy:
            self.healthy_since = None
            return self._stay()
        if self.settings.failback is Failback.MANUAL or self.damped(obs.now):
            return self._stay()
        hold_down = self.settings.hold_down
        if self._healthy_for(obs, hold_down) and obs.now - self.since >= self.settings.damping.min_active:
            return self._hand_back(obs.now, f"primary healthy for {hold_down:g} s")
        return self._stay()

    # -- results of running actions ---------------------------------------------

    def fenced(self, now: float, ok: bool) -> Step:
        if self.state is not State.FENCING:
            return self._stay()
        self.takeovers.append(now)
        if not ok:
            return self._go(State.FAULT, now, "fencing the primary failed")
        self.fenced_first = True
        return self._go(State.CONFIRM, now, "primary fenced", Action.CONFIRM_BURST)

    def unfenced(self, now: float, ok: bool) -> Step:
        """The primary of a handback has been unfenced (or could not be)."""
        if self.state is not State.HANDBACK:
            return self._stay()
        if not ok:
            return self._go(State.ACTIVE, now, "unfencing the primary failed: keeping the VIP")
        return Step(state=State.HANDBACK, reason="primary unfenced", actions=RELEASE, previous=State.HANDBACK)

    def confirmed(self, now: float, replied: bool, stranger: bool = False) -> Step:
        """The confirm burst (also the duplicate-address check) has run:
        `replied`, the primary answered; `stranger`, another MAC claimed the VIP."""
        if self.state is not State.CONFIRM:
            return self._stay()
        if replied:
            return self._go(State.STANDBY, now, "the VIP answered the confirm burst")
        if stranger and self._stranger_in_the_way(now):
            return self._go(State.STANDBY, now, "an unknown MAC answered the confirm burst for the VIP")
        if self.fenced_first:
            return self._go(State.TAKEOVER, now, "fenced primary silent", *CLAIM)
        self.takeovers.append(now)
        return self._go(State.TAKEOVER, now, "no answer to the confirm burst", *self._takeover_actions())

    def finished(self, now: float, ok: bool, detail: str = "") -> Step:
        """The actions of TAKEOVER, HANDBACK or YIELD have run."""
        if self.state is State.TAKEOVER:
            if ok:
                return self._go(State.ACTIVE, now, "holding the VIP")
            return self._go(State.FAULT, now, f"takeover failed: {detail}", *self._release_actions())
        if self.state in (State.HANDBACK, State.YIELD):
            reason = "handed the VIP back" if self.state is State.HANDBACK else "yielded the VIP"
            if ok:
                return self._go(State.STANDBY, now, reason)
            return self._go(State.FAULT, now, f"releasing the VIP failed: {detail}")
        return self._stay()

    # -- operator ---------------------------------------------------------------

    def command(self, now: float, verb: str) -> Step:
        if verb == "takeover" and self.state in (State.STANDBY, State.SUSPECT):
            return self._go(State.CONFIRM, now, "operator: takeover", Action.CONFIRM_BURST)
        if verb == "handback" and self.state is State.ACTIVE:
            return self._hand_back(now, "operator: handback")
        if verb == "reset":
            self.takeovers.clear()
            if self.state is State.FAULT:
                return self._go(State.STANDBY, now, "operator: reset")
            return self._stay()
        raise ValueError(f"cannot {verb} in state {self.state}")
