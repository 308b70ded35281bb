"""Rewrite the PINS table of node/runtime/catalog/__init__.py from the current sources.

Run only together with a version bump of every changed architecture (``name@N`` ->
``name@N+1``): a pin names one program, forever.
"""

from __future__ import annotations

import re
from pathlib import Path

from node.runtime import catalog

path = Path(catalog.__file__)
text = path.read_text()
body = "".join(
    f'    "{name}": "{catalog.source_hash(entry)}",\n' for name, entry in catalog.CATALOG.items()
)
new = re.sub(
    r"(PINS: Final\[Mapping\[str, str\]\] = \{\n)(.*?)(\})",
    lambda m: m[1] + body + m[3],
    text,
    flags=re.S,
)
path.write_text(new)
print(body, end="")
