"""Format v2 (``export-v2``): validate a ``torch.export`` ``.pt2`` archive, then load it guarded.

``torch.export.load`` can run code (torch 2.13): a weight with ``use_pickle`` reaches
``torch.load(weights_only=False)``; ``guards_code`` strings are ``exec``'d by
``ExportedProgram.module()``; sample inputs fall back to ``weights_only=False``;
opaque constants go through ``pickle.loads``. So :func:`validate` reads the archive as
plain data (zip + JSON, no torch, no pickle) and refuses, **before** any loader runs:

* anything but the expected members (one model, tensor weights/constants, metadata);
  absolute or ``..`` names, symlinks, more than :data:`MAX_MEMBERS` members, more than
  ``max_bytes`` uncompressed, compression ratios over 200:1;
* a weight or constant marked ``use_pickle``, any custom/opaque object, a pickle
  anywhere except the sample inputs (which :func:`load_guarded` replaces unread);
* non-empty ``guards_code``; a torch version other than ours; a non little-endian file;
* a graph node whose target is not ``torch.ops.aten.<op>.<overload>`` (or
  ``_operator.getitem``), or is on :data:`DENY_OPS` (file access, raw storage);
  sub-graphs (higher-order ops) and custom-object arguments.

:func:`load_guarded` validates again, swaps the sample inputs for a blob we made, calls
``torch.export.load`` and ``.module(check_guards=False)``. It runs only inside the full
sandbox (tier 2), in a forked child after lockdown.
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any, Final

from protocol import boundedjson

from .errors import JobError

MAX_MEMBERS: Final = 10_000
MAX_BYTES: Final = 8 << 30
_TARGET: Final = re.compile(r"^torch\.ops\.aten\.[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")
DENY_OPS: Final = frozenset(
    {
        "from_file",
        "save",
        "load",
        "set_",
        "as_strided",
        "as_strided_",
        "as_strided_scatter",
        "_pin_memory",
        "pin_memory",
        "_unsafe_view",
        "record_stream",
        "_nested_view_from_buffer",
    }
)
_FIXED: Final = {
    "archive_format",
    "archive_version",
    "byteorder",
    ".data/version",
    ".data/serialization_id",
    "models/model.json",
    "data/weights/model_weights_config.json",
    "data/constants/model_constants_config.json",
    "data/sample_inputs/model.pt",
}
_WEIGHT: Final = re.compile(r"^data/weights/weight_[0-9]{1,7}$")
_CONST: Final = re.compile(r"^data/constants/(tensor_)?constant_[0-9]{1,7}$")
_SIGNATURE_IN: Final = {"parameter", "buffer", "tensor_constant", "user_input"}
_SIGNATURE_OUT: Final = {"user_output"}


def _refuse(why: str) -> JobError:
    return JobError("refused", f"export-v2: {why}")


def _members(z: zipfile.ZipFile, max_bytes: int) -> tuple[str, dict[str, zipfile.ZipInfo]]:
    infos = z.infolist()
    if not infos or len(infos) > MAX_MEMBERS:
        raise _refuse("bad member count")
    prefix = infos[0].filename.split("/", 1)[0]
    if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", prefix) or prefix in (".", ".."):
        raise _refuse("bad archive prefix")
    total = 0
    out: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        if not name.startswith(prefix + "/") or ".." in name.split("/") or "\\" in name:
            raise _refuse(f"bad member name {name[:80]!r}")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise _refuse("symlink member")
        total += info.file_size
        if total > max_bytes:
            raise _refuse("archive too large")
        if info.compress_size and info.file_size / info.compress_size > 200:
            raise _refuse("suspicious compression ratio")
        rel = name[len(prefix) + 1 :]
        if not (rel in _FIXED or _WEIGHT.match(rel) or _CONST.match(rel)):
            raise _refuse(f"unexpected member {rel[:80]!r}")
        out[rel] = info
    for need in ("archive_format", "models/model.json", "data/weights/model_weights_config.json"):
        if need not in out:
            raise _refuse(f"missing {need}")
    return prefix, out


def _json(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
    if info.file_size > 256 << 20:
        raise _refuse(f"{info.filename} too large")
    try:
        return boundedjson.loads(z.read(info))
    except ValueError:
        raise _refuse(f"{info.filename} is not JSON") from None


def _check_tensor_config(cfg: Any, what: str, members: dict[str, zipfile.ZipInfo]) -> None:
    if not isinstance(cfg, dict) or not isinstance(cfg.get("config"), dict):
        raise _refuse(f"bad {what} config")
    folder = "data/weights/" if what == "weights" else "data/constants/"
    for name, entry in cfg["config"].items():
        if not isinstance(entry, dict):
            raise _refuse(f"bad {what} entry {name!r:.60}")
        if entry.get("use_pickle") is not False:
            raise _refuse(f"{what} {name!r:.60} is pickled")
        if "tensor_meta" not in entry or set(entry) - {
            "path_name",
            "is_param",
            "use_pickle",
            "tensor_meta",
        }:
            raise _refuse(f"{what} {name!r:.60} is not a plain tensor")
        path = entry.get("path_name")
        if not isinstance(path, str) or folder + path not in members:
            raise _refuse(f"{what} {name!r:.60} points at a missing file")


def _walk_args(value: Any) -> None:
    """Refuse sub-graphs and custom objects anywhere in a node's arguments."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in ("as_graph", "as_custom_obj", "as_custom_objs", "as_operator"):
                raise _refuse(f"argument kind {key} is not allowed")
            _walk_args(inner)
    elif isinstance(value, list):
        for inner in value:
            _walk_args(inner)


def _check_model(model: Any, torch_version: str | None) -> list[str]:
    if not isinstance(model, dict) or not isinstance(model.get("graph_module"), dict):
        raise _refuse("bad model.json")
    if model.get("guards_code"):
        raise _refuse("non-empty guards_code (it would be exec'd)")
    if torch_version is not None and model.get("torch_version") != torch_version:
        raise _refuse(
            f"exported with torch {model.get('torch_version')!r:.40}, need {torch_version}"
        )
    gm = model["graph_module"]
    graph = gm.get("graph")
    if not isinstance(graph, dict) or graph.get("custom_obj_values"):
        raise _refuse("custom objects in the graph")
    targets = []
    for node in graph.get("nodes", []):
        target = node.get("target") if isinstance(node, dict) else None
        if not isinstance(target, str):
            raise _refuse("bad node")
        if target != "_operator.getitem":
            if not _TARGET.match(target):
                raise _refuse(f"op {target[:80]!r} is not an aten op")
            if target.split(".")[3] in DENY_OPS:
                raise _refuse(f"op {target!r} is not allowed")
        _walk_args(node.get("inputs"))
        targets.append(target)
    sig = gm.get("signature", {})
    for spec in sig.get("input_specs", []):
        if not isinstance(spec, dict) or set(spec) - _SIGNATURE_IN:
            raise _refuse(f"input kind {sorted(spec)!r:.60} not allowed")
    for spec in sig.get("output_specs", []):
        if not isinstance(spec, dict) or set(spec) - _SIGNATURE_OUT:
            raise _refuse(f"output kind {sorted(spec)!r:.60} not allowed")
    return targets


def validate(
    data: bytes, *, torch_version: str | None = None, max_bytes: int = MAX_BYTES
) -> list[str]:
    """Refuse (``JobError('refused')``) any archive that could run code; return its ops."""
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise _refuse("not a zip archive") from None
    with z:
        _, members = _members(z, max_bytes)
        if z.read(members["archive_format"]).strip() != b"pt2":
            raise _refuse("not a pt2 archive")
        if "byteorder" in members and z.read(members["byteorder"]).strip() != b"little":
            raise _refuse("not little-endian")
        weights = _json(z, members["data/weights/model_weights_config.json"])
        _check_tensor_config(weights, "weights", members)
        if "data/constants/model_constants_config.json" in members:
            consts = _json(z, members["data/constants/model_constants_config.json"])
            _check_tensor_config(consts, "constants", members)
        return _check_model(_json(z, members["models/model.json"]), torch_version)


def _benign_sample_inputs() -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(((), {}), buf)
    return buf.getvalue()


def load_guarded(path: str, *, device: str) -> Any:
    """Validate, replace the sample inputs, ``torch.export.load``; return the module."""
    import torch

    with open(path, "rb") as f:
        data = f.read()
    validate(data, torch_version=torch.__version__)
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename.endswith("/data/sample_inputs/model.pt"):
                body = _benign_sample_inputs()
            dst.writestr(info.filename, body)
    out.seek(0)
    try:
        ep = torch.export.load(out)
    except Exception as exc:  # noqa: BLE001 - any loader failure is the client's
        raise JobError("bad_model", f"export-v2 load failed: {type(exc).__name__}") from None
    names = [
        s["user_input"]["arg"]["as_tensor"]["name"]
        for s in _signature_inputs(data)
        if "user_input" in s
    ]
    module = ep.module(check_guards=False)
    return (module.to(device) if device != "cpu" else module, names)


def _signature_inputs(data: bytes) -> list[dict[str, Any]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        prefix = z.infolist()[0].filename.split("/", 1)[0]
        model = boundedjson.loads(z.read(f"{prefix}/models/model.json"))
    specs: list[dict[str, Any]] = model["graph_module"]["signature"]["input_specs"]
    return specs


def run(program: Any, inputs: bytes, *, device: str) -> tuple[dict[str, Any], None]:
    """Call the module with the user inputs in signature order; name the outputs."""
    import torch

    from .formats import parse_safetensors

    module, names = program
    tensors = parse_safetensors(inputs, "inputs")
    if sorted(tensors) != sorted(names):
        raise JobError("bad_inputs", f"export-v2 inputs must be exactly {names}")
    with torch.inference_mode():
        out = module(*[tensors[n].to(device) for n in names])
    if isinstance(out, torch.Tensor):
        return {"output": out.cpu()}, None
    if isinstance(out, dict) and all(isinstance(v, torch.Tensor) for v in out.values()):
        return {str(k): v.cpu() for k, v in out.items()}, None
    if isinstance(out, list | tuple) and all(isinstance(v, torch.Tensor) for v in out):
        return {f"output_{i}": v.cpu() for i, v in enumerate(out)}, None
    raise JobError("bad_model", "export-v2 outputs must be tensors")
