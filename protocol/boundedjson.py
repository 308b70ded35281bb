"""JSON from outside, parsed with a bounded nesting depth.

``json.loads`` recurses once per nesting level, guarded only by
``sys.getrecursionlimit()``. ``py_ecc`` (imported with the node's Ethereum libraries)
raises that limit to 100,000 at import, far past what an 8 MiB C stack holds: in a
node process ~100,000 nested brackets make ``json.loads`` overflow the stack and the
process dies with SIGSEGV instead of raising ``RecursionError``. A chain node's answer,
a worker's report or a client's ``.pt2`` archive could carry that.

:func:`loads` measures the depth first, in one pass over the brackets and strings
(strings skipped with the C scanner), and refuses anything nested deeper than
``max_depth`` with :class:`TooDeep`, a ``ValueError`` like every other JSON error.
Documents with at most ``max_depth`` brackets in all skip the scan.
"""

from __future__ import annotations

import json
import json.decoder
import re
from collections.abc import Callable
from typing import Any, Final

__all__ = ["DEFAULT_MAX_DEPTH", "TooDeep", "loads"]

#: Deeper than any document the node reads (JSON-RPC answers, safetensors headers,
#: ``.pt2`` graph descriptions); far below what the C stack holds.
DEFAULT_MAX_DEPTH: Final = 200
_TOKENS: Final = re.compile(r'["\[\]{}]')
#: the json module's string scanner (C): (text, index after the quote, strict) -> (str, end)
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


class TooDeep(ValueError):
    """The document nests arrays/objects deeper than allowed."""


def loads(
    data: str | bytes | bytearray, *, max_depth: int = DEFAULT_MAX_DEPTH, **kwargs: Any
) -> Any:
    """``json.loads(data, **kwargs)``, refusing documents nested deeper than ``max_depth``.

    Raises ``ValueError`` (``json.JSONDecodeError``, ``UnicodeDecodeError`` or
    :class:`TooDeep`) for anything that is not such a document.
    """
    text = data if isinstance(data, str) else bytes(data).decode(json.detect_encoding(data))
    if text.count("[") + text.count("{") > max_depth:
        check_depth(text, max_depth)
    return json.loads(text, **kwargs)


def check_depth(text: str, max_depth: int) -> None:
    """Raise :class:`TooDeep` if ``text`` nests deeper than ``max_depth`` (brackets
    inside strings do not count; an unterminated string is a ``JSONDecodeError``)."""
    depth, pos, search = 0, 0, _TOKENS.search
    while (m := search(text, pos)) is not None:
        c = m.group()
        if c == '"':
            pos = _scanstring(text, m.end(), False)[1]
            continue
        pos = m.end()
        if c in "[{":
            depth += 1
            if depth > max_depth:
                raise TooDeep(f"JSON nested deeper than {max_depth} levels")
        else:
            depth -= 1
