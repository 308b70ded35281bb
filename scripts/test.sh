#!/usr/bin/env bash
# The whole test suite: bootstrap, lint, format check, type check, tests.
# Extra arguments go to pytest (e.g. scripts/test.sh -k lifecycle).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PWD/node_modules/.bin:$PATH"
echo "== ruff check";         ruff check .
echo "== ruff format --check"; ruff format --check .
echo "== mypy";               mypy
echo "== pytest";             python -m pytest -q "$@"
