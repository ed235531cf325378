#!/usr/bin/env bash
# MINDIR export of a checkpoint on a fixed canvas.
#   bash scripts/run_export.sh CONFIG CKPT [BATCH] [HEIGHT] [WIDTH] [KEY=VALUE ...]
# Defaults: batch 1, 800x1344. DEVICE_TARGET (Ascend | GPU | CPU) comes from the environment.
set -euo pipefail
usage() { sed -n 2,4p "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
CONFIG=$1; CKPT=$2; shift 2
BATCH=1; HEIGHT=800; WIDTH=1344
for var in BATCH HEIGHT WIDTH; do
  if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then printf -v "$var" '%s' "$1"; shift; fi
done
source "$(dirname "${BASH_SOURCE[0]}")/launcher_common.sh"
require_file config "$CONFIG"
require_file checkpoint "$CKPT"
source "$ROOT/scripts/setup_env.sh"
device_args
NAME="$(basename "$CKPT" .ckpt)_${HEIGHT}x${WIDTH}_b${BATCH}"
"$VENV_PY" "$ROOT/export.py" --config "$CONFIG" --ckpt "$CKPT" "${DEVICE_ARGS[@]}" --file_format MINDIR \
    --batch "$BATCH" --height "$HEIGHT" --width "$WIDTH" --output "$NAME" "$@"
