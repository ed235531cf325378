#!/usr/bin/env bash
# Quick start on a fresh machine: install, generate the synthetic shapes dataset (once), train
# the quick-start config on the CPU, evaluate with pycocotools, print the COCO AP table.
# Extra arguments are config overrides for train.py (e.g. train.max_iter=100).
# Last line (machine-readable): quickstart: AP=<float> AP50=<float> minutes=<float>
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
START=$(date +%s)
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
DATA=data/synthetic
if [ ! -f "$DATA/annotations/instances_val.json" ]; then
  "$VENV_PY" -m src.data.synthetic --root "$DATA" --num-train 2000 --num-val 200 --seed 0
fi
OUT=output/quickstart
rm -f "$OUT/eval_results.json"
"$VENV_PY" train.py --config config/quickstart.yaml train.output_dir="$OUT" "$@"
"$VENV_PY" - "$OUT/eval_results.json" "$START" <<'PY'
import json, sys, time
stats = json.load(open(sys.argv[1]))
minutes = (time.time() - int(sys.argv[2])) / 60
print(f"quickstart: AP={stats['AP']:.4f} AP50={stats['AP50']:.4f} minutes={minutes:.1f}")
PY
