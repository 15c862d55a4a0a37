#!/usr/bin/env bash
# Sets everything up in a fresh virtual environment and runs the whole test suite, once per backend
# (auto, then FASTCKPT_FORCE_CPU=1), plus lint and the stub type check. Used by README and .ci/run.
#
#   scripts/test.sh [extra pytest args]
#
# Env: FASTCKPT_VENV (default .venv-test), FASTCKPT_CUDA (default ON when nvcc is on PATH, else AUTO).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${FASTCKPT_VENV:-.venv-test}"
python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install --quiet --upgrade pip

# The CUDA part is built wherever nvcc exists, so the CUDA build is exercised on every run even on
# machines without a GPU (the module must still import and report CUDA unusable).
if [ -z "${FASTCKPT_CUDA:-}" ]; then
  if command -v nvcc >/dev/null 2>&1; then export FASTCKPT_CUDA=ON; else export FASTCKPT_CUDA=AUTO; fi
fi
echo "== building fastckpt (FASTCKPT_CUDA=$FASTCKPT_CUDA)"
"$py" -m pip install --quiet ".[test]"

# Optional tools some tests use (each test skips cleanly when its tool is missing).
if [ -x scripts/install_test_tools.sh ]; then scripts/install_test_tools.sh "$py"; fi

echo "== backends"
"$py" -c "import fastckpt, json; print(json.dumps(fastckpt.backends(), indent=1))"

echo "== lint"
"$venv/bin/ruff" check src tests benchmarks

# Run from tests/ against the installed package, not the source tree.
echo "== tests (auto backend)"
"$py" -m pytest -p no:cacheprovider "$@"
echo "== tests (FASTCKPT_FORCE_CPU=1)"
FASTCKPT_FORCE_CPU=1 "$py" -m pytest -p no:cacheprovider "$@"
echo "== all tests passed under both backends"
