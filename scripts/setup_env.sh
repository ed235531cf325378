#!/usr/bin/env bash
# Create (once) the project virtual environment in .venv and install requirements.txt.
# Sourced by the other launchers; re-running is cheap when everything is installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
# one installer at a time: concurrent launchers (tests, quick start) would race on a half-built venv
exec 9>"$ROOT/.venv.lock"
flock 9
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  echo "[setup] creating virtual environment $ROOT/.venv with $($PY --version)"
  "$PY" -m venv "$ROOT/.venv"
fi
STAMP="$ROOT/.venv/.requirements.sha"
WANT="$(sha256sum "$ROOT/requirements.txt" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[setup] installing requirements.txt"
  "$ROOT/.venv/bin/python" -m pip install -q --upgrade pip
  "$ROOT/.venv/bin/python" -m pip install -q -r "$ROOT/requirements.txt"
  echo "$WANT" > "$STAMP"
fi
flock -u 9
# oneDNN picks a reference (naive) convolution on AVX-512 CPUs; AVX2 is ~100x faster (README, CPU note).
if [ "$(uname -m)" = "x86_64" ]; then export ONEDNN_MAX_CPU_ISA="${ONEDNN_MAX_CPU_ISA:-AVX2}"; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# msrun starts its workers with the 'python' on PATH
export PATH="$ROOT/.venv/bin:$PATH"
VENV_PY="$ROOT/.venv/bin/python"
