#!/usr/bin/env bash
# Every GPU check of issues 5 and 7 in one run (a GPU machine is lent for minutes only).
#
#   scripts/bench/gpu_checks.sh [OUT_DIR]
#
# Needs python3 with a CUDA build of torch and safetensors (nothing else). A bubblewrap
# .deb in .gpu/ (apt-get download bubblewrap) is unpacked when bwrap is missing. Stages,
# each under its own time limit, logged to OUT_DIR: host facts; the layer probe
# (gpu_probe.py); the GPU test file (tests/runtime/test_gpu.py) with the determinism
# measurement (determinism_gpu.py) running beside it; then, alone on the GPU, the runtime
# benchmark (runtime_gpu.sh). ONLY="gputests inputs" (a space-separated subset of
# landlock probe gputests inputs runtime) runs just those stages, for a short device
# session: "inputs" is the lease worker's file-vs-inbox comparison (lease_inputs.py),
# which runtime_gpu.sh also ends with.
set -u
cd "$(dirname "$0")/../.."
OUT=${1:-${OUT:-/tmp/gpunet-gpu}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
ONLY=${ONLY:-landlock probe gputests inputs runtime}
want() { case " $ONLY " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
stage() {
  local name=$1 limit=$2; shift 2
  want "$name" || { echo "=== $name skipped (ONLY=$ONLY)"; return 0; }
  echo "=== $name start $(date +%T)"
  timeout -k 5 "$limit" "$@" >"$OUT/$name.txt" 2>&1
  echo "=== $name rc=$? end $(date +%T)"
  tail -n 60 "$OUT/$name.txt"
}
facts() {
  nvidia-smi -L; nvidia-smi --query-gpu=driver_version,memory.total --format=csv,noheader
  uname -r; id; nproc; stat -fc 'cgroup fs: %T' /sys/fs/cgroup; cat /proc/self/cgroup
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"; ldconfig -p | grep -m3 libcuda
  python3 -c "import sys, torch, safetensors; print(sys.executable, sys.prefix, torch.__version__, torch.version.cuda, safetensors.__version__, torch.cuda.is_available())"
  grep -i -m1 seccomp /proc/self/status; cat /sys/kernel/security/lsm 2>/dev/null; echo
  command -v bwrap && bwrap --version
  cat /sys/fs/cgroup/cgroup.controllers /sys/fs/cgroup/cgroup.subtree_control 2>&1
}
if ! command -v bwrap >/dev/null 2>&1 && ls .gpu/bubblewrap_*.deb >/dev/null 2>&1; then
  dpkg -x .gpu/bubblewrap_*.deb /tmp/bwrap-pkg && export PATH=/tmp/bwrap-pkg/usr/bin:$PATH
  bwrap --version || echo "carried bwrap does not run here"
fi
facts >"$OUT/facts.txt" 2>&1; cat "$OUT/facts.txt"
# cgroup v2 as root with nothing delegated: make a subtree with memory, pids and cpu
# (what an operator does once, see docs/runtime.md §3) so the per-job cgroups can work
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] && [ -z "${GPUNET_CGROUP_ROOT:-}" ] \
  && [ "$(id -u)" = 0 ]; then
  mkdir -p /sys/fs/cgroup/gpunet \
    && echo "+memory +pids +cpu" >/sys/fs/cgroup/cgroup.subtree_control \
    && echo "+memory +pids +cpu" >/sys/fs/cgroup/gpunet/cgroup.subtree_control \
    && export GPUNET_CGROUP_ROOT=/sys/fs/cgroup/gpunet \
    && echo "delegated cgroup v2 subtree: $GPUNET_CGROUP_ROOT"
fi
# which Landlock rules CUDA needs here; this disposable copy then uses the tightest
# that works (the committed sandbox.GPU_LANDLOCK is set from this measurement)
stage landlock 120 python3 scripts/bench/gpu_landlock_probe.py --json "$OUT/landlock.json"
if [ -s "$OUT/landlock.json" ]; then
  python3 - "$OUT/landlock.json" <<'PYEOF'
import json, re, sys
rules = json.load(open(sys.argv[1]))
p = "node/runtime/sandbox.py"
s = open(p).read()
new = "GPU_LANDLOCK: Final[dict[str, tuple[str, ...]]] = " + repr({k: tuple(v) for k, v in rules.items()})
s = re.sub(r"^GPU_LANDLOCK: Final\[[^=]*= \{.*?\}$", new, s, count=1, flags=re.M | re.S)
open(p, "w").write(s)
print("using", new)
PYEOF
fi
stage probe 90 python3 scripts/bench/gpu_probe.py
want gputests || SKIP_DETERMINISM=1
if [ -z "${SKIP_DETERMINISM:-}" ]; then
  python3 scripts/bench/determinism_gpu.py --json "$OUT/determinism.json" \
    >"$OUT/determinism.txt" 2>&1 &
fi
stage gputests 200 python3 -m pytest tests/runtime/test_gpu.py -v -p no:cacheprovider -s
if [ -z "${SKIP_DETERMINISM:-}" ]; then
  echo "=== determinism (waiting) $(date +%T)"
  wait; echo "=== determinism rc=$? $(date +%T)"; tail -n 30 "$OUT/determinism.txt"
fi
if want runtime; then
  stage runtime 330 scripts/bench/runtime_gpu.sh
else  # runtime_gpu.sh ends with it; alone, it is the short check of the inbox
  stage inputs 150 bash -c 'for d in bf16 fp32; do python3 scripts/bench/lease_inputs.py \
    --device cuda:0 --dtype $d --cases resnet50:64,resnet50:8,mlpwide:147; done'
fi
