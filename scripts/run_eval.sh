#!/usr/bin/env bash
# COCO evaluation of a checkpoint.
#   bash scripts/run_eval.sh CONFIG DATA_ROOT CKPT [KEY=VALUE ...]
# DEVICE_TARGET (Ascend | GPU | CPU) comes from the environment.
set -euo pipefail
usage() { sed -n 2,4p "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 3 ] || usage
CONFIG=$1; DATA_ROOT=$2; CKPT=$3; shift 3
source "$(dirname "${BASH_SOURCE[0]}")/launcher_common.sh"
require_file config "$CONFIG"
require_file checkpoint "$CKPT"
require_dir "dataset root" "$DATA_ROOT"
source "$ROOT/scripts/setup_env.sh"
device_args
"$VENV_PY" "$ROOT/eval.py" --config "$CONFIG" --ckpt "$CKPT" "${DEVICE_ARGS[@]}" --data "$DATA_ROOT" "$@"
