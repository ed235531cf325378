#!/usr/bin/env bash
# COCO evaluation of a checkpoint, on one device or (DEVICE_NUM > 1) sharded over several with msrun.
#   bash scripts/run_eval.sh CONFIG DATA_ROOT CKPT [KEY=VALUE ...]
# DEVICE_TARGET (Ascend | GPU | CPU), DEVICE_NUM (default 1) and MASTER_PORT (default 8119) come
# from the environment. With several devices rank 0 gathers the detections and writes the results.
set -euo pipefail
usage() { sed -n 2,5p "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 3 ] || usage
CONFIG=$1; DATA_ROOT=$2; CKPT=$3; shift 3
DEVICE_NUM=${DEVICE_NUM:-1}
[[ "$DEVICE_NUM" =~ ^[1-9][0-9]*$ ]] || { echo "error: DEVICE_NUM must be a positive integer, got '$DEVICE_NUM'" >&2; exit 2; }
source "$(dirname "${BASH_SOURCE[0]}")/launcher_common.sh"
require_file config "$CONFIG"
require_file checkpoint "$CKPT"
require_dir "dataset root" "$DATA_ROOT"
source "$ROOT/scripts/setup_env.sh"
device_args
if [ "$DEVICE_NUM" -eq 1 ]; then
  exec "$VENV_PY" "$ROOT/eval.py" --config "$CONFIG" --ckpt "$CKPT" "${DEVICE_ARGS[@]}" --data "$DATA_ROOT" "$@"
fi
LOG_DIR=${EVAL_LOG_DIR:-output/eval_msrun_log}
mkdir -p "$LOG_DIR"
echo "[run_eval] $DEVICE_NUM workers; worker output in $LOG_DIR/worker_*.log (rank 0 prints the results)"
msrun --worker_num="$DEVICE_NUM" --local_worker_num="$DEVICE_NUM" --master_addr=127.0.0.1 \
      --master_port="${MASTER_PORT:-8119}" --log_dir="$LOG_DIR" --join=True --cluster_time_out=600 \
      "$ROOT/eval.py" --config "$CONFIG" --ckpt "$CKPT" "${DEVICE_ARGS[@]}" --data "$DATA_ROOT" "$@"
