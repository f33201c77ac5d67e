"""The state machine's transitions, driven by observations as the service makes them."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from dmzkit_remote_access.failover_watchdog.machine import GIVE_WAY, RELEASE, Action, Holder, Machine, Observation, State
from dmzkit_remote_access.failover_watchdog.settings import Settings

BASE: dict[str, Any] = {
    "interface": "eth1",
    "vip": "198.18.1.10/24",
    "primary_macs": ["02:00:00:00:00:0a"],
    "primary_mgmt": "198.18.1.11",
    "witness": "198.18.1.254",
}
HEALTHY = Observation(now=0.0, link_up=True, witness_ok=True, primary_dead=False, primary_silent=False,
                      primary_healthy=True, vip_holder=Holder.PRIMARY)
DEAD = replace(HEALTHY, primary_dead=True, primary_silent=True, primary_healthy=False, vip_holder=Holder.NOBODY)
TAKEOVER = (Action.ADD_VIP, Action.ANNOUNCE_SELF, Action.START_SERVICES)


def machine(**overrides: Any) -> Machine:
    m = Machine(Settings.from_dict({**BASE, **overrides}))
    m.start(0.0, holding_vip=False)
    return m


def at(obs: Observation, now: float) -> Observation:
    return replace(obs, now=now)


def take_over(m: Machine, now: float) -> None:
    assert m.step(at(DEAD, now)).actions == (Action.CONFIRM_BURST,)
    m.confirmed(now + 0.05, replied=False)
    m.finished(now + 0.06, ok=True)
    assert m.state is State.ACTIVE


def test_dead_primary_is_confirmed_then_taken_over() -> None:
    m = machine()
    assert m.step(at(replace(HEALTHY, primary_silent=True), 1.0)).state is State.SUSPECT
    step = m.step(at(DEAD, 1.3))
    assert (step.state, step.actions) == (State.CONFIRM, (Action.CONFIRM_BURST,))
    step = m.confirmed(1.35, replied=False)
    assert (step.state, step.actions) == (State.TAKEOVER, TAKEOVER)
    assert m.finished(1.36, ok=True).state is State.ACTIVE


def test_a_reply_to_the_confirm_burst_aborts() -> None:
    m = machine()
    m.step(at(DEAD, 1.0))
    assert m.confirmed(1.05, replied=True).state is State.STANDBY
    assert not m.takeovers


def test_suspect_returns_to_standby_when_the_primary_answers() -> None:
    m = machine()
    m.step(at(replace(HEALTHY, primary_silent=True), 1.0))
    assert m.step(at(HEALTHY, 1.1)).state is State.STANDBY


@pytest.mark.parametrize("obs", [replace(DEAD, link_up=False), replace(DEAD, witness_ok=False)])
def test_an_isolated_backup_never_takes_over(obs: Observation) -> None:
    m = machine()
    for t in range(10):
        step = m.step(at(obs, float(t)))
        assert step.state is State.FAULT
        assert Action.ADD_VIP not in step.actions


def test_fault_while_active_releases_and_recovers_after_a_healthy_spell() -> None:
    m = machine()
    take_over(m, 1.0)
    step = m.step(at(replace(DEAD, witness_ok=False), 2.0))
    assert (step.state, step.actions) == (State.FAULT, RELEASE)
    assert m.step(at(DEAD, 3.0)).state is State.FAULT
    assert m.step(at(DEAD, 5.9)).state is State.FAULT
    assert m.step(at(DEAD, 6.0)).state is State.STANDBY


def test_an_unknown_holder_of_the_vip_blocks_takeover() -> None:
    m = machine()
    step = m.step(at(replace(DEAD, vip_holder=Holder.FOREIGN), 1.0))
    assert step.state is State.STANDBY and not step.actions
    assert "unknown MAC" in step.reason


def test_yield_at_once_when_the_primary_claims_the_vip() -> None:
    m = machine()
    take_over(m, 1.0)
    step = m.step(at(replace(DEAD, claimed_by_primary=True), 1.2))
    assert (step.state, step.actions) == (State.YIELD, GIVE_WAY)
    assert step.actions[0] is Action.DEL_VIP and Action.ANNOUNCE_PRIMARY not in step.actions
    assert m.finished(1.21, ok=True).state is State.STANDBY
    assert m.conflicts == 1


def test_handback_after_hold_down() -> None:
    m = machine(hold_down=30)
    take_over(m, 1.0)
    assert m.step(at(HEALTHY, 5.0)).state is State.ACTIVE
    assert m.step(at(DEAD, 20.0)).state is State.ACTIVE  # a relapse restarts the hold-down
    assert m.step(at(HEALTHY, 21.0)).state is State.ACTIVE
    assert m.step(at(HEALTHY, 50.9)).state is State.ACTIVE
    step = m.step(at(HEALTHY, 51.0))
    assert (step.state, step.actions) == (State.HANDBACK, RELEASE)
    assert m.finished(51.1, ok=True).state is State.STANDBY


def test_manual_failback_waits_for_the_operator() -> None:
    m = machine(failback="manual")
    take_over(m, 1.0)
    assert m.step(at(HEALTHY, 1000.0)).state is State.ACTIVE
    assert m.command(1001.0, "handback").state is State.HANDBACK


def test_flapping_primary_is_damped_after_three_takeovers() -> None:
    m = machine(hold_down=1, damping={"min_active": 0})
    now = 0.0
    for cycle in range(3):
        now += 2.0
        take_over(m, now)
        m.step(at(HEALTHY, now + 0.5))
        m.step(at(HEALTHY, now + 1.6))
        if cycle < 2:
            assert m.state is State.HANDBACK
            m.finished(now + 1.7, ok=True)
    # The third takeover in ten minutes: it keeps the VIP rather than flap on.
    assert m.state is State.ACTIVE
    m.command(now + 2.0, "handback")
    m.finished(now + 2.1, ok=True)
    step = m.step(at(DEAD, now + 3.0))
    assert step.state is State.STANDBY and "damped" in step.reason and not step.actions
    # The window slides: ten minutes after the first takeover, one is allowed again.
    assert m.step(at(DEAD, 2.06 + 601)).state is State.CONFIRM


def test_damped_while_active_keeps_the_vip() -> None:
    m = machine(hold_down=1, damping={"min_active": 0, "max_takeovers": 1})
    take_over(m, 1.0)
    assert m.step(at(HEALTHY, 2.0)).state is State.ACTIVE
    assert m.step(at(HEALTHY, 200.0)).state is State.ACTIVE
    m.command(201.0, "reset")
    m.step(at(HEALTHY, 202.0))
    assert m.step(at(HEALTHY, 203.5)).state is State.HANDBACK


def test_minimum_dwell_in_active() -> None:
    m = machine(hold_down=1, damping={"min_active": 10})
    take_over(m, 1.0)
    for t in (2.0, 5.0, 10.9):
        assert m.step(at(HEALTHY, t)).state is State.ACTIVE
    assert m.step(at(HEALTHY, 11.1)).state is State.HANDBACK


def test_required_fence_runs_before_the_address_is_added() -> None:
    m = machine(fence={"mode": "required", "off": ["/bin/true"]})
    m.step(at(DEAD, 1.0))
    step = m.confirmed(1.05, replied=False)
    assert step.actions == (Action.FENCE, *TAKEOVER)


def test_vpn_death_with_a_live_host_needs_a_required_fence() -> None:
    app_dead = replace(HEALTHY, app_dead=True, app_reason="its health agent reports the VPN down",
                       primary_healthy=False)
    no_fence = machine()
    assert no_fence.step(at(app_dead, 1.0)).state is State.STANDBY
    m = machine(fence={"mode": "required", "off": ["/bin/true"]})
    step = m.step(at(app_dead, 1.0))
    assert (step.state, step.actions) == (State.FENCING, (Action.FENCE,))
    assert step.reason == "primary's VPN dead while the host answers: its health agent reports the VPN down"
    assert m.fenced(1.5, ok=True).actions == (Action.CONFIRM_BURST,)
    step = m.confirmed(1.6, replied=False)
    assert (step.state, step.actions) == (State.TAKEOVER, TAKEOVER)  # fenced once, not twice
    assert len(m.takeovers) == 1


def test_a_failed_fence_is_a_fault_not_a_takeover() -> None:
    m = machine(fence={"mode": "required", "off": ["/bin/false"]})
    m.step(at(replace(HEALTHY, app_dead=True, primary_healthy=False), 1.0))
    assert m.fenced(1.5, ok=False).state is State.FAULT


def test_a_fenced_primary_is_unfenced_before_the_vip_is_released() -> None:
    m = machine(fence={"mode": "required", "off": ["/bin/true"], "on": ["/bin/true"]}, hold_down=1)
    m.step(at(replace(HEALTHY, app_dead=True, primary_healthy=False), 1.0))
    m.fenced(1.1, ok=True)
    m.confirmed(1.2, replied=False)
    m.finished(1.3, ok=True)
    step = m.command(5.0, "handback")
    assert (step.state, step.actions) == (State.HANDBACK, (Action.UNFENCE,))
    step = m.unfenced(5.1, ok=True)
    assert (step.state, step.actions) == (State.HANDBACK, RELEASE)
    assert m.finished(5.2, ok=True).state is State.STANDBY


def test_a_primary_that_cannot_be_unfenced_is_not_handed_the_vip() -> None:
    m = machine(fence={"mode": "required", "off": ["/bin/true"], "on": ["/bin/false"]})
    take_over(m, 1.0)
    m.command(5.0, "handback")
    step = m.unfenced(5.1, ok=False)
    assert (step.state, step.actions) == (State.ACTIVE, ())
    assert "unfencing" in step.reason


def test_failed_takeover_releases_what_was_done() -> None:
    m = machine()
    m.step(at(DEAD, 1.0))
    m.confirmed(1.05, replied=False)
    step = m.finished(1.1, ok=False, detail="netlink: EPERM")
    assert (step.state, step.actions) == (State.FAULT, RELEASE)
    assert "EPERM" in step.reason


def test_reconcile_keeps_the_vip_only_while_the_primary_is_down() -> None:
    m = Machine(Settings.from_dict(BASE))
    assert m.start(0.0, holding_vip=True).state is State.ACTIVE
    assert m.step(at(HEALTHY, 0.1)).state is State.HANDBACK
    m = Machine(Settings.from_dict(BASE))
    m.start(0.0, holding_vip=True)
    assert m.step(at(DEAD, 0.1)).state is State.ACTIVE


def test_reconcile_waits_for_the_probes_verdict_even_with_manual_failback() -> None:
    """The first tick comes before any reply: not yet heard is not dead."""
    m = Machine(Settings.from_dict({**BASE, "failback": "manual"}))
    m.start(0.0, holding_vip=True)
    unheard = replace(HEALTHY, primary_silent=True, primary_healthy=False, vip_holder=Holder.NOBODY)
    assert m.step(at(unheard, 0.0)).state is State.ACTIVE
    assert m.step(at(HEALTHY, 0.15)).state is State.HANDBACK
    m = Machine(Settings.from_dict({**BASE, "failback": "manual"}))
    m.start(0.0, holding_vip=True)
    m.step(at(unheard, 0.0))
    m.step(at(DEAD, 0.35))  # dead by the rule: the VIP is ours now, and stays with manual failback
    assert m.step(at(HEALTHY, 0.5)).state is State.ACTIVE


def test_ticks_while_an_action_runs_change_nothing() -> None:
    m = machine()
    m.step(at(DEAD, 1.0))
    assert m.step(at(replace(DEAD, link_up=False), 1.01)).state is State.CONFIRM


def test_operator_verbs_out_of_place_are_refused() -> None:
    m = machine()
    with pytest.raises(ValueError, match="cannot handback in state standby"):
        m.command(1.0, "handback")


# -- forged ARP (issue 15, finding 6): a stranger's claim is never obeyed ---------------

STRANGER = replace(DEAD, claimed_by_stranger=True)


def test_an_active_backup_never_yields_to_a_strangers_claim() -> None:
    m = machine()
    take_over(m, 1.0)
    step = m.step(at(STRANGER, 1.2))
    assert (step.state, step.actions) == (State.ACTIVE, (Action.DEFEND,))
    assert not step.changed and m.conflicts == 0


def test_three_forged_claims_neither_yield_nor_damp() -> None:
    """The lab's reproduction: three forged GARPs three seconds apart."""
    m = machine()
    take_over(m, 1.0)
    for t in (2.0, 5.0, 8.0):
        assert m.step(at(STRANGER, t)).state is State.ACTIVE
        assert m.step(at(DEAD, t + 0.1)).state is State.ACTIVE
    assert not m.damped(8.2) and len(m.takeovers) == 1


def test_a_strangers_claims_are_defended_at_most_once_per_defend_interval() -> None:
    m = machine()
    take_over(m, 1.0)
    defended = [t / 10 for t in range(20, 400) if m.step(at(STRANGER, t / 10)).actions == (Action.DEFEND,)]
    assert defended == [2.0, 12.0, 22.0, 32.0]
    assert m.defences == 4 and m.state is State.ACTIVE


def test_a_defence_is_sent_also_while_reconciling() -> None:
    m = Machine(Settings.from_dict(BASE))
    m.start(0.0, holding_vip=True)
    assert m.step(at(STRANGER, 0.1)).actions == (Action.DEFEND,)


def test_the_primarys_claim_still_wins_over_a_strangers() -> None:
    m = machine()
    take_over(m, 1.0)
    step = m.step(at(replace(STRANGER, claimed_by_primary=True), 2.0))
    assert step.state is State.YIELD


def test_a_stranger_holding_a_dead_primarys_vip_delays_the_takeover_by_its_patience_only() -> None:
    m = machine()
    held = replace(DEAD, vip_holder=Holder.FOREIGN)
    for t in (1.0, 5.0, 10.9):
        step = m.step(at(held, t))
        assert step.state is State.STANDBY and not step.actions, t
    step = m.step(at(held, 11.0))
    assert (step.state, step.actions) == (State.CONFIRM, (Action.CONFIRM_BURST,))
    assert "unknown MAC" in step.reason
    # The stranger answers the burst too: its patience is spent.
    assert m.confirmed(11.05, replied=False, stranger=True).state is State.TAKEOVER


def test_a_stranger_that_answers_only_confirm_bursts_is_not_patient_anew_each_time() -> None:
    m = machine()
    t = 1.0
    while m.state is not State.TAKEOVER and t < 30:
        if m.step(at(DEAD, t)).state is State.CONFIRM:
            m.confirmed(t + 0.05, replied=False, stranger=True)
        t += 0.1
    assert m.state is State.TAKEOVER and 11.0 <= t <= 11.5, t


def test_a_stranger_answering_the_burst_of_an_operators_takeover_holds_it_back() -> None:
    m = machine()
    m.command(1.0, "takeover")
    assert m.confirmed(1.05, replied=False, stranger=True).state is State.STANDBY


def test_the_primary_heard_again_ends_a_strangers_spell() -> None:
    m = machine()
    m.step(at(replace(DEAD, vip_holder=Holder.FOREIGN), 1.0))
    m.step(at(HEALTHY, 9.0))
    # A new spell: the stranger has its full patience again.
    assert m.step(at(replace(DEAD, vip_holder=Holder.FOREIGN), 12.0)).state is State.STANDBY
    assert m.step(at(replace(DEAD, vip_holder=Holder.FOREIGN), 21.9)).state is State.STANDBY
    assert m.step(at(replace(DEAD, vip_holder=Holder.FOREIGN), 22.0)).state is State.CONFIRM
