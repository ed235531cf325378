"""Data-parallel training with msrun on two CPU workers over loopback. The shards hold different
numbers of GT boxes, so the loss normaliser must be averaged over the ranks; the gradients every
rank applies must equal one process's gradients on the whole batch (tests/whole_batch.py; summing instead of averaging,
or skipping the GT-count all-reduce, changes them by 20-100%), and both ranks end every step with
identical parameters. The same job on two msrun "nodes" (two msrun invocations on loopback,
node ranks 0 and 1, one worker each, laid out by the launchers' ``msrun_layout``; tests/msrun_nodes.py)
is bit-identical to the one-node run; it loads the graphs the one-node run compiled from the compile
cache (the graphs are those of the world size, whatever the node layout)."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from msrun_nodes import free_port, launch_nodes
from whole_batch import GRAD_RTOL, STEPS, WORKER, load, relative_error, tensors, worker_env


@pytest.fixture(scope="module")
def runs(whole_batch, tmp_path_factory):
    """(data root, worker environment, the one-process run, the two-worker run)."""
    root, single = whole_batch
    env, dist = worker_env(), tmp_path_factory.mktemp("dist")
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
    logs = sorted((out / "msrun_log").rglob("worker_*.log"))
    assert len(logs) == 2 and all("compile cache: loading graphs from" in p.read_text() for p in logs)
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
        error = relative_error(averaged, whole)
        assert error <= GRAD_RTOL, f"rank {rank}: |averaged - single| / |single| = {error}"


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
