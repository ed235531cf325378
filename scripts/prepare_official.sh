#!/usr/bin/env bash
# Assembles the official Focus-DETR code for scripts/bench_vs_official.py from local checkouts
# (nothing is downloaded), as FOCUS_DETR_SPEC.md pins it: IDEA-Research/detrex (e244e6c) with
# huawei-noah/noah-research Focus-DETR/ (aa0f80c) laid over it the way the official README says,
# facebookresearch/detectron2 (02b5c4e) beside it, and detrex's C++ extension built for the CPU
# (its MultiScaleDeformableAttention refuses to construct without it, though on CPU it runs the
# PyTorch path).
#
#   bash scripts/prepare_official.sh DETREX NOAH_FOCUS_DETR DETECTRON2 OUT [PYTHON]
#
# PYTHON (default: python3) is an interpreter with torch, torchvision, fvcore, iopath, omegaconf,
# hydra-core, cloudpickle, fairscale, einops, timm, wandb, scipy, pycocotools,
# opencv-python-headless and "setuptools<70" (detrex imports pkg_resources); a C++ compiler builds
# the extension. Then: python scripts/bench_vs_official.py --official-root OUT --official-python PYTHON
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
detrex=$1 noah=$2 detectron2=$3 out=$4 python=${5:-python3}
for dir in "$detrex/projects" "$noah/projects/focus_detr" "$detectron2/detectron2"; do
  [ -d "$dir" ] || { echo "prepare_official: $dir not found" >&2; exit 2; }
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out/detrex" "$out/detectron2"
cp -r "$detrex" "$out/detrex"
cp -r "$detectron2" "$out/detectron2"
# the files the official README replaces or adds (FOCUS_DETR_SPEC.md, Scope)
for file in detrex/layers/transformer.py detrex/layers/__init__.py detrex/data/detr_dataset_mapper.py \
            detrex/utils/box_ops.py configs/common/coco_schedule.py tools/train_net.py; do
  cp "$noah/$file" "$out/detrex/$file"
done
cp -r "$noah/projects/focus_detr" "$out/detrex/projects/"
# detrex's setup.py links its configs into the package; get_config reads them there
ln -sfn "$out/detrex/configs" "$out/detrex/detrex/config/configs"
(cd "$out/detrex" && "$python" setup.py build_ext --inplace > build_ext.log 2>&1) \
  || { echo "prepare_official: building detrex._C failed, see $out/detrex/build_ext.log" >&2; exit 1; }
echo "official Focus-DETR assembled in $out (PYTHONPATH=$out/detrex:$out/detectron2)"
