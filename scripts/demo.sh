#!/usr/bin/env bash
# The main job: a local devnet demo (bootstraps itself first).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PWD/node_modules/.bin:$PATH"
exec python scripts/demo.py "$@"
