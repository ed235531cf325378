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

# msrun_layout LOCAL DEFAULT_PORT LOG_DIR: sets MSRUN_ARGS (the msrun options before the script)
# from LOCAL workers on this node and the node layout in the environment, in msrun's own terms:
#   NODE_NUM (default 1, or WORKER_NUM / LOCAL), WORKER_NUM (total: NODE_NUM x LOCAL, every node
#   runs LOCAL workers),
#   NODE_RANK (this node, 0 .. NODE_NUM-1; default 0), MASTER_ADDR (node 0's address; required
#   with more than one node, 127.0.0.1 otherwise), MASTER_PORT (default DEFAULT_PORT).
# A wrong combination stops here, before anything starts. With several nodes each node writes
# its msrun logs to LOG_DIR/node_NODE_RANK (nodes may share one output directory). Also sets
# MSRUN_LOG_DIR, MSRUN_WORKERS (the total) and MSRUN_SUMMARY (one line for the console).
msrun_layout() {
  local local_num=$1 port=${MASTER_PORT:-$2} log_dir=$3
  local node_num=${NODE_NUM:-} worker_num=${WORKER_NUM:-} node_rank=${NODE_RANK:-0}
  layout_error() { echo "error: $*" >&2; exit 2; }
  layout_positive() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || layout_error "$1 must be a positive integer, got '$2'"; }
  layout_positive "workers on this node (LOCAL_WORKER_NUM / DEVICE_NUM)" "$local_num"
  [ -z "$worker_num" ] || layout_positive WORKER_NUM "$worker_num"
  [ -z "$node_num" ] || layout_positive NODE_NUM "$node_num"
  [[ "$node_rank" =~ ^[0-9]+$ ]] || layout_error "NODE_RANK must be a non-negative integer, got '$node_rank'"
  [[ "$port" =~ ^[1-9][0-9]*$ ]] && [ "$port" -le 65535 ] || layout_error "MASTER_PORT must be a port number, got '$port'"
  [ -z "$worker_num" ] || [ "$local_num" -le "$worker_num" ] || \
    layout_error "$local_num workers on this node but WORKER_NUM=$worker_num in all"
  if [ -z "$node_num" ]; then
    if [ -z "$worker_num" ]; then node_num=1
    elif [ $((worker_num % local_num)) -eq 0 ]; then node_num=$((worker_num / local_num))
    else layout_error "WORKER_NUM=$worker_num is not a multiple of $local_num workers on this node: set NODE_NUM"
    fi
  fi
  worker_num=${worker_num:-$((node_num * local_num))}
  # msrun numbers the workers of node r from r x LOCAL: every node runs the same number
  [ "$worker_num" -eq $((node_num * local_num)) ] || \
    layout_error "WORKER_NUM=$worker_num is not NODE_NUM=$node_num x $local_num workers on this node (msrun numbers ranks node_rank x local workers, so every node runs the same number)"
  [ "$node_rank" -lt "$node_num" ] || layout_error "NODE_RANK=$node_rank is out of range for NODE_NUM=$node_num (0 .. $((node_num - 1)))"
  local addr=${MASTER_ADDR:-}
  if [ "$node_num" -gt 1 ]; then
    [ -n "$addr" ] || layout_error "NODE_NUM=$node_num nodes need MASTER_ADDR (the address of node 0, reachable from every node)"
    log_dir="$log_dir/node_$node_rank"
  fi
  MSRUN_LOG_DIR=$log_dir
  MSRUN_WORKERS=$worker_num
  MSRUN_ARGS=(--worker_num="$worker_num" --local_worker_num="$local_num" --master_addr="${addr:-127.0.0.1}"
              --master_port="$port" --node_rank="$node_rank" --log_dir="$log_dir" --join=True
              --cluster_time_out="${CLUSTER_TIME_OUT:-600}")
  MSRUN_SUMMARY="node $node_rank of $node_num, $local_num of $worker_num workers, master ${addr:-127.0.0.1}:$port"
}
