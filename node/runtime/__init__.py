"""Sandboxed PyTorch execution: catalog, formats, isolation layers, warm workers, metering.

Imports only torch, safetensors, the standard library and ``protocol`` (enforced by
tests/unit/test_runtime_imports.py), so it can be benchmarked alone on a GPU machine.
This package's ``__init__`` imports nothing: the zygote must lock itself down before
``import torch``. Entry points: :class:`node.runtime.pool.WorkerPool`,
:func:`node.runtime.detect.check`. Design and tiers: docs/runtime.md.
"""
