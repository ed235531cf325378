#!/usr/bin/env bash
# COCO evaluation of a checkpoint, on one device or sharded over several with msrun (one node or more).
#   bash scripts/run_eval.sh CONFIG DATA_ROOT CKPT [KEY=VALUE ...]
# DEVICE_TARGET (Ascend | GPU | CPU), DEVICE_NUM (workers on this node, default 1), MASTER_PORT
# (default 8119) and, for several nodes, NODE_NUM (or WORKER_NUM, the total),
# NODE_RANK, MASTER_ADDR come from the environment. Rank 0 gathers the detections and writes the results.
set -euo pipefail
usage() { sed -n 2,6p "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 3 ] || usage
CONFIG=$1; DATA_ROOT=$2; CKPT=$3; shift 3
DEVICE_NUM=${DEVICE_NUM:-${LOCAL_WORKER_NUM:-1}}
source "$(dirname "${BASH_SOURCE[0]}")/launcher_common.sh"
LOG_DIR=${EVAL_LOG_DIR:-output/eval_msrun_log}
msrun_layout "$DEVICE_NUM" 8119 "$LOG_DIR"
require_file config "$CONFIG"
require_file checkpoint "$CKPT"
require_dir "dataset root" "$DATA_ROOT"
source "$ROOT/scripts/setup_env.sh"
device_args
if [ "$MSRUN_WORKERS" -eq 1 ]; then
  exec "$VENV_PY" "$ROOT/eval.py" --config "$CONFIG" --ckpt "$CKPT" "${DEVICE_ARGS[@]}" --data "$DATA_ROOT" "$@"
fi
mkdir -p "$MSRUN_LOG_DIR"
echo "[run_eval] $MSRUN_SUMMARY; worker output in $MSRUN_LOG_DIR/worker_*.log (rank 0 prints the results)"
msrun "${MSRUN_ARGS[@]}" "$ROOT/eval.py" --config "$CONFIG" --ckpt "$CKPT" "${DEVICE_ARGS[@]}" --data "$DATA_ROOT" "$@"
