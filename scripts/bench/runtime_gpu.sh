#!/usr/bin/env bash
# Runtime benchmark on a CUDA machine that has only python3 + torch + safetensors.
#
#   scripts/bench/runtime_gpu.sh [extra args for runtime.py]
#
# Prints the sandbox report for the GPU, then the warm-path table (bare in-process
# torch vs the sandboxed lease worker, same model/batch/device) for fp32 and bf16, and
# the cold first job against a bare fresh process, then the lease worker's inputs as a file
# against its shared-memory inbox (lease_inputs.py). Installs bubblewrap with apt when
# missing and running as root; without it the pool runs with the explicit insecure
# override (tier 0) and the output says which layers were missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
"$PY" - <<'PYEOF'
import sys, torch, safetensors
print("torch", torch.__version__, "cuda", torch.version.cuda, "safetensors", safetensors.__version__)
if not torch.cuda.is_available():
    sys.exit("no CUDA device visible to torch")
print("device", torch.cuda.get_device_name(0))
PYEOF
if ! command -v bwrap >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
    || echo "bubblewrap could not be installed (offline?): continuing without it"
fi
"$PY" -c "from node.runtime import detect; print(detect.check(device='cuda:0').to_text())"
for dtype in fp32 bf16; do
  echo "== $dtype"
  cold=2; [ "$dtype" = bf16 ] && cold=0  # the cold path once, in fp32
  "$PY" scripts/bench/runtime.py --device cuda:0 --dtype "$dtype" \
    --models mlp,resnet50,gpt2 --batches 1,8,64 --cold-model resnet50 --cold-reps "$cold" "$@"
  # (GPT-2 batch 64 returns 1.6 GB of fp32 logits: over the 1 GiB output cap, skipped)
done
# a lease worker's inputs as a file vs through its inbox, side by side (node/runtime/inbox.py)
for dtype in bf16 fp32; do
  echo "== inputs, $dtype"
  "$PY" scripts/bench/lease_inputs.py --device cuda:0 --dtype "$dtype" \
    --cases resnet50:64,resnet50:8,mlpwide:147
done
