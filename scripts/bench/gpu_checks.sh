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
# benchmark (runtime_gpu.sh).
set -u
cd "$(dirname "$0")/../.."
OUT=${1:-${OUT:-/tmp/gpunet-gpu}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
stage() {
  local name=$1 limit=$2; shift 2
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
}
if ! command -v bwrap >/dev/null 2>&1 && ls .gpu/bubblewrap_*.deb >/dev/null 2>&1; then
  dpkg -x .gpu/bubblewrap_*.deb /tmp/bwrap-pkg && export PATH=/tmp/bwrap-pkg/usr/bin:$PATH
  bwrap --version || echo "carried bwrap does not run here"
fi
stage facts 30 facts
stage probe 120 python3 scripts/bench/gpu_probe.py
python3 scripts/bench/determinism_gpu.py --json "$OUT/determinism.json" >"$OUT/determinism.txt" 2>&1 &
det=$!
stage gputests 200 python3 -m pytest tests/runtime/test_gpu.py -v -p no:cacheprovider -s
echo "=== determinism (waiting) $(date +%T)"
timeout 200 tail --pid=$det -f /dev/null; wait $det; echo "=== determinism rc=$? $(date +%T)"
cat "$OUT/determinism.txt" | tail -n 30
stage runtime 330 scripts/bench/runtime_gpu.sh
