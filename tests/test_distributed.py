"""Data-parallel training with msrun on two CPU workers over loopback. The shards hold different
numbers of GT boxes, so the loss normaliser must be averaged over the ranks; the gradients every
rank applies must equal one process's gradients on the whole batch (summing instead of averaging,
or skipping the GT-count all-reduce, changes them by 20-100%), and both ranks end every step with
identical parameters. The same job on two msrun "nodes" (two msrun invocations on loopback,
node ranks 0 and 1, one worker each, laid out by the launchers' ``msrun_layout``; tests/msrun_nodes.py)
is bit-identical to the one-node run."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from msrun_nodes import free_port, launch_nodes

from src.data.synthetic import categories

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "distributed_worker.py"
STEPS = 3
# GT boxes per training image: whichever two images a rank draws, its shard's largest count is 3
# (the denoising layout matches one process's) while the shards' totals differ (4 and 6)
GT_COUNTS = (1, 3, 3, 3)
# float32 reductions in another order; the mistakes above are >= 0.1
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


def load(out, kind, rank, world, step):
    with np.load(out / f"{kind}_rank{rank}_of{world}_step{step}.npz") as f:
        return {k: f[k] for k in f.files}


def tensors(arrays):
    return {k: v for k, v in arrays.items() if k not in ("image_ids", "num_gt")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_dataset(root, GT_COUNTS)
    # msrun starts its workers with the 'python' found on PATH: make it this interpreter
    env = dict(os.environ, PYTHONPATH=str(REPO),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    single, dist = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("dist")
    out = subprocess.run([sys.executable, str(WORKER), "--data", str(root), "--out", str(single),
                          "--steps", str(STEPS)], env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    msrun = shutil.which("msrun", path=os.path.dirname(sys.executable)) or shutil.which("msrun")
    assert msrun, "msrun (installed with mindspore) not found"
    logs = dist / "msrun_log"
    out = subprocess.run([msrun, "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1",
                          f"--master_port={free_port()}", f"--log_dir={logs}", "--join=True",
                          "--cluster_time_out=300", str(WORKER), "--data", str(root), "--out", str(dist),
                          "--steps", str(STEPS)], env=env, cwd=dist, capture_output=True, text=True, timeout=1200)
    worker_logs = "\n".join(p.read_text()[-2000:] for p in sorted(logs.glob("worker_*.log")))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:] + worker_logs
    return root, env, single, dist


@pytest.fixture(scope="module")
def two_nodes(runs, tmp_path_factory):
    root, env, _, _ = runs
    out = tmp_path_factory.mktemp("two_nodes")
    launch_nodes(WORKER, ["--data", root, "--out", out, "--steps", STEPS], env, out / "msrun_log", out)
    return out


def test_ranks_see_disjoint_shards_with_different_gt_counts(runs):
    _, _, single, dist = runs
    for step in range(STEPS):
        shards = [load(dist, "grads", r, 2, step) for r in (0, 1)]
        whole = load(single, "grads", 0, 1, step)
        ids = [int(i) for shard in shards for i in shard["image_ids"]]
        assert sorted(ids) == sorted(int(i) for i in whole["image_ids"])
        assert sorted(int(shard["num_gt"]) for shard in shards) == [4, 6]


def test_averaged_gradients_equal_one_process_on_the_whole_batch(runs):
    """Step 0 starts from the same initial parameters in both runs, so its gradients must agree to
    float32 rounding. (Later steps start from parameters that differ by Adam's first-step rounding:
    where a gradient is near 0, g / (|g| + eps) amplifies the rounding up to one learning rate.)"""
    _, _, single, dist = runs
    whole = tensors(load(single, "grads", 0, 1, 0))
    assert len(whole) > 100
    for rank in (0, 1):
        averaged = tensors(load(dist, "grads", rank, 2, 0))
        assert averaged.keys() == whole.keys()
        difference = np.sqrt(sum(float(np.square(averaged[k] - whole[k]).sum()) for k in whole))
        norm = np.sqrt(sum(float(np.square(whole[k]).sum()) for k in whole))
        assert difference <= GRAD_RTOL * norm, f"rank {rank}: |averaged - single| / |single| = {difference / norm}"


def test_ranks_apply_identical_gradients_and_hold_identical_parameters(runs):
    _, _, _, dist = runs
    for step in range(STEPS):
        for kind in ("grads", "params"):
            rank0, rank1 = (tensors(load(dist, kind, r, 2, step)) for r in (0, 1))
            assert rank0.keys() == rank1.keys() and len(rank0) > 100
            for name in rank0:
                np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=f"step {step} {kind} {name}")


def test_two_nodes_equal_one_node(runs, two_nodes):
    _, _, _, one_node = runs
    for step in range(STEPS):
        for rank in (0, 1):
            for kind in ("grads", "params"):
                ours, ref = load(two_nodes, kind, rank, 2, step), load(one_node, kind, rank, 2, step)
                assert ours.keys() == ref.keys()
                for name in ref:
                    np.testing.assert_array_equal(ours[name], ref[name], err_msg=f"step {step} rank {rank} {name}")
