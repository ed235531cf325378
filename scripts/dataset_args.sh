#!/usr/bin/env bash
# Sourced by the launchers: DATASET_ARGS = the data.* overrides for a dataset root in COCO layout
# (annotations/instances_{train,val}2017.json + train2017/ val2017/) or in the synthetic
# generator's layout (annotations/instances_{train,val}.json + train/ val/).
dataset_args() {
  local root="$1"
  if [ -f "$root/annotations/instances_train2017.json" ] || [ -f "$root/annotations/instances_val2017.json" ]; then
    DATASET_ARGS=("data.train_json=$root/annotations/instances_train2017.json" "data.train_images=$root/train2017"
                  "data.val_json=$root/annotations/instances_val2017.json" "data.val_images=$root/val2017")
  elif [ -f "$root/annotations/instances_train.json" ] || [ -f "$root/annotations/instances_val.json" ]; then
    DATASET_ARGS=("data.train_json=$root/annotations/instances_train.json" "data.train_images=$root/train"
                  "data.val_json=$root/annotations/instances_val.json" "data.val_images=$root/val")
  else
    echo "error: $root has neither annotations/instances_{train,val}2017.json nor annotations/instances_{train,val}.json" >&2
    return 1
  fi
}
