"""The converged lab as a whole, before any journey."""
from __future__ import annotations


def test_a_check_run_on_the_converged_lab_changes_fails_and_ignores_nothing(converge):
    run = converge(check=True)
    assert run.rc == 0, run.output[-3000:]
    assert run.hosts_with("changed", "failures", "unreachable", "ignored") == {}
