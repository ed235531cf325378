#!/usr/bin/env bash
# Sourced by the launchers. `prepare_launch DATA_ROOT` installs/activates the environment and sets
#   DATASET_ARGS: the data.* overrides for a dataset root in COCO layout
#     (annotations/instances_{train,val}2017.json + train2017/ val2017/) or in the synthetic
#     generator's layout (annotations/instances_{train,val}.json + train/ val/);
#   DEVICE_ARGS: --device $DEVICE_TARGET when that variable is set (Ascend | GPU | CPU).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

require_file() { [ -f "$2" ] || { echo "error: $1 $2 not found" >&2; exit 2; }; }

prepare_launch() {
  local root="$1"
  [ -d "$root" ] || { echo "error: dataset root $root not found" >&2; exit 2; }
  source "$ROOT/scripts/setup_env.sh"
  if [ -f "$root/annotations/instances_train2017.json" ] || [ -f "$root/annotations/instances_val2017.json" ]; then
    DATASET_ARGS=("data.train_json=$root/annotations/instances_train2017.json" "data.train_images=$root/train2017"
                  "data.val_json=$root/annotations/instances_val2017.json" "data.val_images=$root/val2017")
  elif [ -f "$root/annotations/instances_train.json" ] || [ -f "$root/annotations/instances_val.json" ]; then
    DATASET_ARGS=("data.train_json=$root/annotations/instances_train.json" "data.train_images=$root/train"
                  "data.val_json=$root/annotations/instances_val.json" "data.val_images=$root/val")
  else
    echo "error: $root has neither annotations/instances_{train,val}2017.json nor annotations/instances_{train,val}.json" >&2
    exit 2
  fi
  DEVICE_ARGS=()
  if [ -n "${DEVICE_TARGET:-}" ]; then DEVICE_ARGS=(--device "$DEVICE_TARGET"); fi
}
