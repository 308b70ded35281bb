#!/usr/bin/env bash
# Static analysis of contracts/src with slither, offline.
#   scripts/slither.sh            # human-readable findings + a summary by impact
# slither-analyzer pins web3<8, so it lives in its own venv (build/venv-slither), never
# in .venv. forge is not installed here, so slither compiles through crytic-compile's
# "Solc-json" platform: the same standard-JSON input as scripts/build_contracts.py (minus
# via-IR and output selection), fed to contracts/solc-shim.js. It runs from a scratch
# directory that links contracts/ and node_modules/, because crytic-compile would pick
# the foundry platform (and look for forge) if it saw foundry.toml.
# Exit status: 1 if any High or Medium finding is not triaged in docs/security.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${SLITHER_VENV:-$ROOT/build/venv-slither}
if [ ! -x "$VENV/bin/slither" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check slither-analyzer==0.11.6
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
ln -s "$ROOT/contracts" "$WORK/contracts"
ln -s "$ROOT/node_modules" "$WORK/node_modules"
"$ROOT/.venv/bin/python" - "$WORK/input.json" <<'PY'
import json, sys
sys.path.insert(0, "scripts")
import build_contracts as b
data = b.standard_input()
settings = {k: v for k, v in data["settings"].items() if k != "outputSelection"}
settings["viaIR"] = False
settings["remappings"] = ["@openzeppelin/=node_modules/@openzeppelin/"]
data["settings"] = settings
json.dump(data, open(sys.argv[1], "w"))
PY
mkdir -p "$ROOT/build"
(cd "$WORK" && "$VENV/bin/slither" input.json --compile-force-framework Solc-json \
  --solc "$ROOT/contracts/solc-shim.js" --filter-paths node_modules \
  --json "$WORK/out.json" 2>&1 | grep -v -e '^Warning' -e 'tstore' -e '^ *|' -e '^ *-->' || true)
"$ROOT/.venv/bin/python" - "$WORK/out.json" "$ROOT/docs/security.md" <<'PY'
import collections, json, re, sys
out = json.load(open(sys.argv[1]))
found = out.get("results", {}).get("detectors", [])
by = collections.Counter(d["impact"] for d in found)
print("slither summary:", dict(by))
triaged = set(re.findall(r"`([a-z0-9-]+)`", open(sys.argv[2]).read())) if len(sys.argv) > 2 else set()
bad = [d for d in found if d["impact"] in ("High", "Medium") and d["check"] not in triaged]
for d in bad:
    print(f"UNTRIAGED {d['impact']}: {d['check']}: {d['description'].strip()[:300]}")
sys.exit(1 if bad else 0)
PY
