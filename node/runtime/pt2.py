"""Format v2 (``export-v2``): a validator for ``torch.export`` ``.pt2`` archives.

Placeholder; replaced below.
"""

from __future__ import annotations

from .errors import JobError


def validate(data: bytes) -> None:
    """Refuse everything for now."""
    raise JobError("refused", "export-v2 is not implemented yet")


def load_guarded(path: str, *, device: str) -> object:
    """Not implemented yet."""
    raise JobError("refused", "export-v2 is not implemented yet")


def run(program: object, inputs: bytes, *, device: str) -> tuple[dict[str, object], None]:
    """Not implemented yet."""
    raise JobError("refused", "export-v2 is not implemented yet")
