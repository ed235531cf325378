#!/usr/bin/env bash
# Data-parallel training with msrun, one worker per device, on one node or several.
#   bash scripts/run_distribute_train.sh CONFIG DATA_ROOT DEVICE_NUM [OUTPUT_DIR] [KEY=VALUE ...]
# DEVICE_NUM: workers on this node. DEVICE_TARGET (Ascend | GPU | CPU, default: MindSpore's choice),
# MASTER_PORT (default 8118) and, for several nodes, NODE_NUM (or WORKER_NUM,
# the total), NODE_RANK, MASTER_ADDR come from the environment: the same command on every node (README).
# train.batch_size in the config is the total over all workers. Resume: add --resume auto (or a path).
set -euo pipefail
usage() { sed -n 2,7p "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 3 ] || usage
CONFIG=$1; DATA_ROOT=$2; DEVICE_NUM=$3; shift 3
OUTPUT_DIR=output/$(basename "$CONFIG" .yaml)
if [ $# -gt 0 ] && [[ "$1" != *=* ]] && [[ "$1" != --* ]]; then OUTPUT_DIR=$1; shift; fi
source "$(dirname "${BASH_SOURCE[0]}")/launcher_common.sh"
[ "${LOCAL_WORKER_NUM:-$DEVICE_NUM}" = "$DEVICE_NUM" ] || \
  { echo "error: LOCAL_WORKER_NUM=$LOCAL_WORKER_NUM differs from DEVICE_NUM=$DEVICE_NUM" >&2; exit 2; }
msrun_layout "$DEVICE_NUM" 8118 "$OUTPUT_DIR/msrun_log"
require_file config "$CONFIG"
require_dir "dataset root" "$DATA_ROOT"
source "$ROOT/scripts/setup_env.sh"
device_args
mkdir -p "$MSRUN_LOG_DIR"
echo "[run_distribute_train] $MSRUN_SUMMARY; rank 0 logs to $OUTPUT_DIR/log.txt, worker output in $MSRUN_LOG_DIR/worker_*.log"
set +e
msrun "${MSRUN_ARGS[@]}" "$ROOT/train.py" --config "$CONFIG" "${DEVICE_ARGS[@]}" --data "$DATA_ROOT" \
      "train.output_dir=$OUTPUT_DIR" "$@"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  echo "[run_distribute_train] stopped: msrun exit status $rc (a worker failed or was killed; msrun stops the" \
       "others). Worker output: $MSRUN_LOG_DIR/worker_*.log. To continue from the newest complete checkpoint" \
       "in $OUTPUT_DIR, run the same command with --resume auto." >&2
fi
exit "$rc"
