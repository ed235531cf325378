#!/usr/bin/env bash
# Training on one device.
#   bash scripts/run_standalone_train.sh CONFIG DATA_ROOT [OUTPUT_DIR] [KEY=VALUE ...] [--resume CKPT] [--ckpt CKPT]
# DEVICE_TARGET (Ascend | GPU | CPU) comes from the environment.
set -euo pipefail
usage() { sed -n 2,4p "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
CONFIG=$1; DATA_ROOT=$2; shift 2
OUTPUT_DIR=output/$(basename "$CONFIG" .yaml)
if [ $# -gt 0 ] && [[ "$1" != *=* ]] && [[ "$1" != --* ]]; then OUTPUT_DIR=$1; shift; fi
source "$(dirname "${BASH_SOURCE[0]}")/launcher_common.sh"
require_file config "$CONFIG"
require_dir "dataset root" "$DATA_ROOT"
source "$ROOT/scripts/setup_env.sh"
device_args
"$VENV_PY" "$ROOT/train.py" --config "$CONFIG" "${DEVICE_ARGS[@]}" --data "$DATA_ROOT" "train.output_dir=$OUTPUT_DIR" "$@"
