#!/usr/bin/env bash
# Bootstrap everything gpunet needs on a fresh machine; idempotent and fast on re-run.
#   - system packages (bubblewrap; libgmp-dev for fastecdsa, which py-libp2p builds from source)
#   - .venv with the pinned CPU torch wheel installed BEFORE the project, then `pip install -e .[dev]`
#   - npm ci for the pinned solc and anvil
# Each step is skipped when a stamp says its inputs have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STAMPS=.venv/.gpunet-stamps
TORCH_VERSION=2.13.0
say() { printf '\033[1;34m[bootstrap]\033[0m %s\n' "$*" >&2; }

# ---- system packages
need_pkgs=()
command -v bwrap >/dev/null 2>&1 || need_pkgs+=(bubblewrap)
[ -e /usr/include/gmp.h ] || [ -e /usr/include/x86_64-linux-gnu/gmp.h ] || need_pkgs+=(libgmp-dev)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing system packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq "${need_pkgs[@]}" >/dev/null; }
  else
    say "WARNING: missing system packages (${need_pkgs[*]}) and not root."
    say "         run: sudo apt-get install ${need_pkgs[*]}   (the sandbox tier will be lower without bubblewrap)"
  fi
fi

# ---- python
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { say "Python >= 3.11 is required (found $("$PY" --version))"; exit 1; }
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
mkdir -p "$STAMPS"
VPY=$ROOT/.venv/bin/python
if ! "$VPY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  say "installing torch==$TORCH_VERSION (CPU wheel) before the project"
  "$VPY" -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" 2>&1 | grep -v "is ignored" >&2 || true
  "$VPY" -c "import torch" || { say "torch install failed"; exit 1; }
fi
proj_hash=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$STAMPS/pip" 2>/dev/null)" != "$proj_hash" ]; then
  say "installing gpunet and its dev dependencies (pip install -e .[dev])"
  "$VPY" -m pip install -q --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v "is ignored" >&2 || true
  "$VPY" -c "import protocol, node" || { say "project install failed"; exit 1; }
  echo "$proj_hash" > "$STAMPS/pip"
fi

# ---- node toolchain (solc, anvil)
if ! command -v npm >/dev/null 2>&1; then
  say "npm is required (Node.js >= 18) for the pinned solc and anvil"; exit 1
fi
lock_hash=$(sha256sum package-lock.json | cut -c1-16)
if [ "$(cat "$STAMPS/npm" 2>/dev/null)" != "$lock_hash" ] || [ ! -x node_modules/.bin/anvil ]; then
  say "npm ci (solc, anvil, OpenZeppelin)"
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$lock_hash" > "$STAMPS/npm"
fi
