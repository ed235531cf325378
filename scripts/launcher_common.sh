#!/usr/bin/env bash
# Sourced by the launchers: ROOT, `require_file WHAT PATH`, and `device_args`, which sets
# DEVICE_ARGS to --device $DEVICE_TARGET when that variable is set (Ascend | GPU | CPU).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

require_file() { [ -f "$2" ] || { echo "error: $1 $2 not found" >&2; exit 2; }; }
require_dir() { [ -d "$2" ] || { echo "error: $1 $2 not found" >&2; exit 2; }; }

device_args() {
  DEVICE_ARGS=()
  if [ -n "${DEVICE_TARGET:-}" ]; then DEVICE_ARGS=(--device "$DEVICE_TARGET"); fi
}
