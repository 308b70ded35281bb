"""Build good and malicious ``.pt2`` archives for the v2 tests (test helper, not a test)."""

from __future__ import annotations

import io
import json
import zipfile

import torch


class Small(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"y": self.l(x).relu()}


def good() -> bytes:
    torch.manual_seed(0)
    ep = torch.export.export(Small().eval(), (torch.randn(2, 4),))
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return buf.getvalue()


def _rewrite(data: bytes, edit: dict[str, bytes]) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            rel = info.filename.split("/", 1)[1]
            dst.writestr(info.filename, edit.get(rel, src.read(info)))
    return out.getvalue()


def _read(data: bytes, rel: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        prefix = z.infolist()[0].filename.split("/", 1)[0]
        return z.read(f"{prefix}/{rel}")


class _Payload:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (self.code,))


def use_pickle(data: bytes, payload: str) -> bytes:
    """Mark weight_0 ``use_pickle`` and make it a pickle that runs ``payload``."""
    cfg = json.loads(_read(data, "data/weights/model_weights_config.json"))
    first = next(iter(cfg["config"].values()))
    first["use_pickle"] = True
    buf = io.BytesIO()
    torch.save(_Payload(payload), buf)
    return _rewrite(
        data,
        {
            "data/weights/model_weights_config.json": json.dumps(cfg).encode(),
            f"data/weights/{first['path_name']}": buf.getvalue(),
        },
    )


def guards_code(data: bytes, payload_expr: str) -> bytes:
    """Add a guard whose text is ``exec``'d by ``.module()`` on the first call."""
    model = json.loads(_read(data, "models/model.json"))
    model["guards_code"] = [payload_expr]
    return _rewrite(data, {"models/model.json": json.dumps(model).encode()})


def evil_sample_inputs(data: bytes, payload: str) -> bytes:
    """Sample inputs as a pickle that runs code under ``weights_only=False``."""
    buf = io.BytesIO()
    torch.save(_Payload(payload), buf)
    return _rewrite(data, {"data/sample_inputs/model.pt": buf.getvalue()})


def bad_op(data: bytes) -> bytes:
    """Replace the relu node's target with a file-reading aten op."""
    model = json.loads(_read(data, "models/model.json"))
    for node in model["graph_module"]["graph"]["nodes"]:
        if node["target"] == "torch.ops.aten.relu.default":
            node["target"] = "torch.ops.aten.from_file.default"
    return _rewrite(data, {"models/model.json": json.dumps(model).encode()})


def extra_member(data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        prefix = src.infolist()[0].filename.split("/", 1)[0]
        dst.writestr(f"{prefix}/data/aotinductor/model.so", b"\x7fELF")
    return out.getvalue()
