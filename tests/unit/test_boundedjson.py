"""JSON from outside with a bounded nesting depth (protocol/boundedjson.py).

With the recursion limit a node process runs at (py_ecc raises it to 100,000),
``json.loads`` of ~100,000 nested brackets overflows the C stack: SIGSEGV, not an
exception. The subprocess test feeds such documents to every place the node parses
JSON from outside (a client's safetensors header and .pt2 archive, a worker's report
and frames) and checks each refuses it and the process lives."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from protocol import boundedjson
from protocol.boundedjson import TooDeep

ROOT = Path(__file__).resolve().parents[2]


def _doc(rng: random.Random, depth: int) -> object:
    kind = rng.randrange(6) if depth > 0 else rng.randrange(3)
    if kind == 0:
        return rng.randrange(-(10**6), 10**6)
    if kind == 1:  # strings with brackets, quotes and escapes: none of them nest
        return "".join(rng.choice('ab[]{}"\\/\u00e9\n') for _ in range(rng.randrange(8)))
    if kind == 2:
        return rng.choice([None, True, False, 1.5])
    if kind in (3, 4):
        return [_doc(rng, depth - 1) for _ in range(rng.randrange(4))]
    return {f"k{i}[": _doc(rng, depth - 1) for i in range(rng.randrange(4))}


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def test_documents_within_the_depth_parse_as_json_loads_does() -> None:
    rng = random.Random(5)
    for _ in range(600):
        doc = _doc(rng, rng.randrange(1, 9))
        for text in (json.dumps(doc), json.dumps(doc, indent=1)):
            d = _depth(doc)
            assert boundedjson.loads(text, max_depth=max(d, 1)) == json.loads(text)
            assert boundedjson.loads(text.encode()) == json.loads(text)
            if d > 1:
                with pytest.raises(TooDeep):
                    boundedjson.loads(text, max_depth=d - 1)


def test_the_depth_limit_is_exact_and_strings_do_not_count() -> None:
    assert boundedjson.loads("[" * 200 + "]" * 200) is not None
    with pytest.raises(TooDeep):
        boundedjson.loads("[" * 201 + "]" * 201)
    with pytest.raises(TooDeep):  # unbalanced: still refused before json.loads sees it
        boundedjson.loads('{"a": ' + "{" * 300)
    inside = json.dumps(["[" * 5000 + "{" * 5000 + '\\"'])
    assert boundedjson.loads(inside) == json.loads(inside)
    for bad in ('["' + "[" * 300, b"\xff[", "[" * 300 + '"'):
        with pytest.raises(ValueError):  # unterminated strings, bad UTF-8: not JSON
            boundedjson.loads(bad)
    assert issubclass(TooDeep, ValueError)  # callers' `except ValueError` holds


CHILD = r"""
import io, json, os, sys, threading, zipfile
sys.setrecursionlimit(100_000)  # what py_ecc does at import in every node process
from node.runtime import pool, pt2, wire, zygote
from node.runtime.errors import JobError
from protocol import boundedjson

DEEP = b"[" * 300_000 + b"]" * 300_000
results = {}

def site(name, call):
    try:
        results[name] = repr(call())[:40]
    except Exception as exc:
        results[name] = type(exc).__name__

def run():
    site("loads", lambda: boundedjson.loads(DEEP))
    site("header", lambda: zygote.header_shapes(len(DEEP).to_bytes(8, "little") + DEEP))
    site("report", lambda: pool._parse_report(DEEP[:59_998]))
    r, w = os.pipe()
    body = b"[" * 400_000 + b"]" * 400_000  # under wire.MAX_FRAME
    frame = len(body).to_bytes(4, "big") + body  # what a compromised worker can write

    def write():
        view = memoryview(frame)
        while view:
            view = view[os.write(w, view):]
        os.close(w)

    t = threading.Thread(target=write)
    t.start()
    site("frame", lambda: wire.Reader(r).recv())
    t.join()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("m/archive_format", "pt2")
        z.writestr("m/models/model.json", "{}")
        z.writestr("m/data/weights/model_weights_config.json", DEEP)
    site("pt2", lambda: pt2.validate(buf.getvalue()))

t = threading.Thread(target=run)  # the node parses on worker threads
t.start()
t.join()
print(json.dumps(results))
"""


def test_deep_documents_from_outside_are_refused_not_a_crash() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])  # -11 before the fix
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert results == {
        "loads": "TooDeep",
        "header": "TooDeep",
        "report": "{}",  # a report that is not a JSON object reads as empty
        "frame": "WireError",
        "pt2": "JobError",
    }
