#!/usr/bin/env bash
# Data-parallel training with msrun, one worker per device.
#   bash scripts/run_distribute_train.sh CONFIG DATA_ROOT DEVICE_NUM [OUTPUT_DIR] [KEY=VALUE ...]
# DEVICE_TARGET (Ascend | GPU | CPU, default: MindSpore's choice) and MASTER_PORT (default 8118)
# come from the environment. train.batch_size in the config is the total over all devices.
# Resume: add --resume OUTPUT_DIR/checkpoint_iterNNNNNNN.ckpt after the overrides.
set -euo pipefail
usage() { sed -n 2,6p "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 3 ] || usage
CONFIG=$1; DATA_ROOT=$2; DEVICE_NUM=$3; shift 3
OUTPUT_DIR=output/$(basename "$CONFIG" .yaml)
if [ $# -gt 0 ] && [[ "$1" != *=* ]] && [[ "$1" != --* ]]; then OUTPUT_DIR=$1; shift; fi
[[ "$DEVICE_NUM" =~ ^[1-9][0-9]*$ ]] || { echo "error: DEVICE_NUM must be a positive integer, got '$DEVICE_NUM'" >&2; exit 2; }
source "$(dirname "${BASH_SOURCE[0]}")/launcher_common.sh"
require_file config "$CONFIG"
require_dir "dataset root" "$DATA_ROOT"
source "$ROOT/scripts/setup_env.sh"
device_args
LOG_DIR="$OUTPUT_DIR/msrun_log"
mkdir -p "$LOG_DIR"
echo "[run_distribute_train] $DEVICE_NUM workers; rank 0 logs to $OUTPUT_DIR/log.txt, worker output in $LOG_DIR/worker_*.log"
msrun --worker_num="$DEVICE_NUM" --local_worker_num="$DEVICE_NUM" --master_addr=127.0.0.1 \
      --master_port="${MASTER_PORT:-8118}" --log_dir="$LOG_DIR" --join=True --cluster_time_out=600 \
      "$ROOT/train.py" --config "$CONFIG" "${DEVICE_ARGS[@]}" --data "$DATA_ROOT" \
      "train.output_dir=$OUTPUT_DIR" "$@"
