"""Typed failures of the runtime. Every job failure carries a machine-readable ``code``.

Codes: ``bad_model`` (unknown arch, bad config, weights that do not match),
``bad_inputs``, ``too_large`` (config or tensors over a bound), ``refused``
(format/tier policy, v2 validator), ``timeout`` (wall clock), ``oom`` (memory
limit), ``killed`` (a signal, e.g. SIGXCPU), ``output_too_large``, ``crashed``
(the worker died or answered nonsense), ``sandbox`` (a layer could not be applied).
"""

from __future__ import annotations

from typing import Final

CODES: Final = frozenset(
    {
        "bad_model",
        "bad_inputs",
        "too_large",
        "refused",
        "timeout",
        "oom",
        "killed",
        "output_too_large",
        "crashed",
        "sandbox",
    }
)


class RuntimeErrorBase(Exception):
    """Base of every runtime error."""


class JobError(RuntimeErrorBase):
    """A job could not produce a result; ``code`` says why (see module docstring)."""

    def __init__(self, code: str, message: str) -> None:
        if code not in CODES:
            code = "crashed"
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class SandboxUnavailable(RuntimeErrorBase):
    """The host cannot provide the sandbox tier the operator asked for (fail closed)."""
