"""The job lifecycle: one transition table, the single source of truth.

Rules (DESIGN.md §3), mirrored one-to-one by the escrow contract's ``JobState``
enum and checked against it by a test:

* A job comes into being ``MATCHED`` when a client funds escrow against a
  provider's signed offer (``CREATE``).
* ``MATCHED`` -> ``SUBMITTED`` when the provider records an attestation before
  the deadline (``SUBMIT``).
* ``MATCHED`` -> ``REFUNDED`` when the deadline passes with no result; anyone may
  trigger it and the provider is penalised from its stake (``REFUND``).
* ``SUBMITTED`` -> ``FINALIZED`` when the client accepts (``ACCEPT``) or when the
  challenge window ends (``FINALIZE``); the provider is paid.
* ``SUBMITTED`` -> ``DISPUTED`` when a verifier posts a bond (``CHALLENGE``).
* ``DISPUTED`` -> ``SLASHED`` when resolution finds the provider wrong
  (``RESOLVE_PROVIDER_WRONG``); ``DISPUTED`` -> ``FINALIZED`` when it finds the
  provider right (``RESOLVE_PROVIDER_RIGHT``, the bond is forfeited).
* ``SUBMITTED`` or ``DISPUTED`` -> ``SLASHED`` on a proof of equivocation: two
  different results signed by the provider for the same job
  (``PROVE_EQUIVOCATION``), with no re-execution.
* ``FINALIZED``, ``REFUNDED`` and ``SLASHED`` are terminal: no event applies.

Nothing else in the code base decides whether a transition is legal; callers
use :func:`apply` (or :func:`allowed`) and never compare states by hand.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from protocol.errors import IllegalTransition

__all__ = [
    "TERMINAL",
    "TRANSITIONS",
    "JobEvent",
    "JobState",
    "allowed",
    "apply",
    "is_terminal",
]


class JobState(enum.IntEnum):
    """Job states. The integer values are the contract's ``JobState`` enum."""

    NONE = 0
    MATCHED = 1
    SUBMITTED = 2
    DISPUTED = 3
    FINALIZED = 4
    REFUNDED = 5
    SLASHED = 6


class JobEvent(enum.Enum):
    """Everything that can happen to a job, named after the contract call."""

    CREATE = "createJob"
    SUBMIT = "submitResult"
    REFUND = "refund"
    ACCEPT = "acceptResult"
    FINALIZE = "finalize"
    CHALLENGE = "challenge"
    RESOLVE_PROVIDER_WRONG = "resolve(providerAtFault=true)"
    RESOLVE_PROVIDER_RIGHT = "resolve(providerAtFault=false)"
    PROVE_EQUIVOCATION = "proveEquivocation"


_S = JobState
_E = JobEvent

#: (state, event) -> next state. Any pair not listed is illegal.
TRANSITIONS: Mapping[tuple[JobState, JobEvent], JobState] = MappingProxyType(
    {
        (_S.NONE, _E.CREATE): _S.MATCHED,
        (_S.MATCHED, _E.SUBMIT): _S.SUBMITTED,
        (_S.MATCHED, _E.REFUND): _S.REFUNDED,
        (_S.SUBMITTED, _E.ACCEPT): _S.FINALIZED,
        (_S.SUBMITTED, _E.FINALIZE): _S.FINALIZED,
        (_S.SUBMITTED, _E.CHALLENGE): _S.DISPUTED,
        (_S.SUBMITTED, _E.PROVE_EQUIVOCATION): _S.SLASHED,
        (_S.DISPUTED, _E.RESOLVE_PROVIDER_WRONG): _S.SLASHED,
        (_S.DISPUTED, _E.RESOLVE_PROVIDER_RIGHT): _S.FINALIZED,
        (_S.DISPUTED, _E.PROVE_EQUIVOCATION): _S.SLASHED,
    }
)

#: States from which no event leads anywhere.
TERMINAL: frozenset[JobState] = frozenset({_S.FINALIZED, _S.REFUNDED, _S.SLASHED})


def apply(state: JobState, event: JobEvent) -> JobState:
    """Return the state after ``event``; raise :class:`IllegalTransition` if not allowed."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state.name, event.value) from None


def allowed(state: JobState) -> frozenset[JobEvent]:
    """Events that are legal in ``state``."""
    return frozenset(e for (s, e) in TRANSITIONS if s is state)


def is_terminal(state: JobState) -> bool:
    """True for states no event can leave."""
    return state in TERMINAL
