#!/usr/bin/env bash
# COCO evaluation of a checkpoint.
#   bash scripts/run_eval.sh CONFIG DATA_ROOT CKPT [KEY=VALUE ...]
# DEVICE_TARGET (Ascend | GPU | CPU) comes from the environment.
set -euo pipefail
usage() { sed -n 2,4p "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 3 ] || usage
CONFIG=$1; DATA_ROOT=$2; CKPT=$3; shift 3
[ -f "$CONFIG" ] || { echo "error: config $CONFIG not found" >&2; exit 2; }
[ -d "$DATA_ROOT" ] || { echo "error: dataset root $DATA_ROOT not found" >&2; exit 2; }
[ -f "$CKPT" ] || { echo "error: checkpoint $CKPT not found" >&2; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
source "$ROOT/scripts/dataset_args.sh"
dataset_args "$DATA_ROOT"
DEVICE_ARGS=()
[ -n "${DEVICE_TARGET:-}" ] && DEVICE_ARGS=(--device "$DEVICE_TARGET")
"$VENV_PY" "$ROOT/eval.py" --config "$CONFIG" --ckpt "$CKPT" "${DEVICE_ARGS[@]}" "${DATASET_ARGS[@]}" "$@"
