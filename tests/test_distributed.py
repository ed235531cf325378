"""Data-parallel training with msrun on two CPU workers over loopback: after every step both
ranks hold identical parameters, equal to one process trained on the same global batch."""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from src.data.synthetic import generate_synthetic_coco

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "distributed_worker.py"
STEPS = 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(out, rank, world, step):
    with np.load(out / f"params_rank{rank}_of{world}_step{step}.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    # two 128x128 images with one object each: every rank's shard is one whole image
    generate_synthetic_coco(str(root), num_train=2, num_val=1, size_range=(128, 128), num_classes=3, seed=3,
                            max_objects=1, min_object_size=32)
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
    return single, dist


def test_ranks_see_disjoint_shards_of_the_global_batch(runs):
    single, dist = runs
    for step in range(STEPS):
        ids = [int(load(dist, r, 2, step)["image_ids"][0]) for r in (0, 1)]
        assert sorted(ids) == sorted(int(i) for i in load(single, 0, 1, step)["image_ids"])


def test_parameters_identical_across_ranks_and_equal_to_single_process(runs):
    single, dist = runs
    for step in range(STEPS):
        rank0, rank1, ref = load(dist, 0, 2, step), load(dist, 1, 2, step), load(single, 0, 1, step)
        names = [k for k in ref if k != "image_ids"]
        assert len(names) > 100
        for name in names:
            np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=f"step {step} {name}")
        worst = max(float(np.abs(rank0[n] - ref[n]).max()) for n in names)
        assert worst <= 1e-5, f"step {step}: max |dist - single| = {worst}"
