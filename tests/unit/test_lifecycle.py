"""The lifecycle table, checked exhaustively over every state x event."""

from __future__ import annotations

import itertools

import pytest

from protocol.errors import IllegalTransition
from protocol.lifecycle import (
    TERMINAL,
    TRANSITIONS,
    JobEvent,
    JobState,
    allowed,
    apply,
    is_terminal,
)

# The DESIGN.md §3 diagram written out independently of the table under test.
EXPECTED = {
    ("NONE", "CREATE"): "MATCHED",
    ("MATCHED", "SUBMIT"): "SUBMITTED",
    ("MATCHED", "REFUND"): "REFUNDED",
    ("SUBMITTED", "ACCEPT"): "FINALIZED",
    ("SUBMITTED", "FINALIZE"): "FINALIZED",
    ("SUBMITTED", "CHALLENGE"): "DISPUTED",
    ("SUBMITTED", "PROVE_EQUIVOCATION"): "SLASHED",
    ("DISPUTED", "RESOLVE_PROVIDER_WRONG"): "SLASHED",
    ("DISPUTED", "RESOLVE_PROVIDER_RIGHT"): "FINALIZED",
    ("DISPUTED", "PROVE_EQUIVOCATION"): "SLASHED",
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(JobState, JobEvent)))
def test_every_state_event_pair(state: JobState, event: JobEvent) -> None:
    expected = EXPECTED.get((state.name, event.name))
    if expected is None:
        with pytest.raises(IllegalTransition) as info:
            apply(state, event)
        assert info.value.state == state.name
        assert event not in allowed(state)
    else:
        assert apply(state, event) is JobState[expected]
        assert event in allowed(state)


def test_table_has_exactly_the_expected_edges() -> None:
    got = {(s.name, e.name): t.name for (s, e), t in TRANSITIONS.items()}
    assert got == EXPECTED


def test_terminal_states_have_no_exits_and_all_others_do() -> None:
    assert {s.name for s in TERMINAL} == {"FINALIZED", "REFUNDED", "SLASHED"}
    for state in JobState:
        assert is_terminal(state) == (not allowed(state))


def test_every_non_none_state_is_reachable() -> None:
    reached = {JobState.NONE}
    frontier = [JobState.NONE]
    while frontier:
        state = frontier.pop()
        for event in allowed(state):
            nxt = apply(state, event)
            if nxt not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    assert reached == set(JobState)


def test_enum_values_are_the_contract_enum_order() -> None:
    assert [s.value for s in JobState] == list(range(7))
    assert [s.name for s in JobState] == [
        "NONE", "MATCHED", "SUBMITTED", "DISPUTED", "FINALIZED", "REFUNDED", "SLASHED",
    ]  # fmt: skip
