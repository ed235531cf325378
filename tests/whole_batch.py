"""One process's gradients of the tiny model on one 4-image batch: the reference that data
parallelism (tests/test_distributed.py), micro-batches (tests/test_accumulation.py) and
recomputation (tests/test_recompute.py) must each reproduce. Computed once per pytest session
(the ``whole_batch`` fixture of conftest.py) by tests/distributed_worker.py in a process of its own.

The images hold different numbers of GT boxes (``GT_COUNTS``), so every way of cutting the batch
must normalize by the whole batch's count."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from src.data.synthetic import categories

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "distributed_worker.py"
# GT boxes per training image: whichever two images a rank draws, its shard's largest count is 3
# (the denoising layout matches one process's) while the shards' totals differ (4 and 6)
GT_COUNTS = (1, 3, 3, 3)
STEPS = 3  # batches of the one-process run (the data-parallel runs take as many steps)
# float32 reductions in another order; the mistakes the tests look for are >= 0.1
GRAD_RTOL = 1e-3


def write_dataset(root, counts, size=128):
    """COCO-style training images with exactly ``counts[i]`` rectangles in image i."""
    rng = np.random.default_rng(7)
    cats = categories(3)
    (root / "train").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, annotations = [], []
    for index, count in enumerate(counts):
        image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        for k in range(count):  # side by side, never overlapping
            x0, y0, w, h = 4 + 40 * k, int(rng.integers(4, 60)), 34, int(rng.integers(30, 60))
            image[y0:y0 + h, x0:x0 + w] = (200, 60 + 60 * k, 40)
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": cats[k]["id"],
                                "bbox": [float(x0), float(y0), float(w), float(h)], "area": float(w * h),
                                "iscrowd": 0})
        cv2.imwrite(str(root / "train" / f"{index + 1:06d}.png"), image)
        images.append({"id": index + 1, "file_name": f"{index + 1:06d}.png", "height": size, "width": size})
    with open(root / "annotations" / "instances_train.json", "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations, "categories": cats}, f)


def worker_env():
    # msrun starts its workers with the 'python' found on PATH: make it this interpreter
    return dict(os.environ, PYTHONPATH=str(REPO),
                PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


def run_whole_batch(tmp_path_factory):
    """(data root, folder of the one-process run): the gradients of ``STEPS`` batches at the
    initial parameters (no step is taken: only the first batch's gradients are compared, the
    others' image ids and GT counts)."""
    root, out = tmp_path_factory.mktemp("whole_batch_data"), tmp_path_factory.mktemp("whole_batch")
    write_dataset(root, GT_COUNTS)
    done = subprocess.run([sys.executable, str(WORKER), "--data", str(root), "--out", str(out), "--steps", str(STEPS),
                           "--gradients-only"], env=worker_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, out


def load(out, kind, rank, world, step):
    with np.load(out / f"{kind}_rank{rank}_of{world}_step{step}.npz") as f:
        return {k: f[k] for k in f.files}


def tensors(arrays):
    """The per-parameter arrays of a ``load``-ed file."""
    return {k: v for k, v in arrays.items() if k not in ("image_ids", "num_gt", "total")}


def relative_error(ours, reference):
    """|ours - reference| / |reference| over all parameters ({name: array} each)."""
    difference = np.sqrt(sum(float(np.square(ours[k].astype(np.float64) - reference[k]).sum()) for k in reference))
    return difference / np.sqrt(sum(float(np.square(reference[k].astype(np.float64)).sum()) for k in reference))
