"""Portability of the compiled graphs: the training step, the evaluation net and the exported
MINDIR, built as on Ascend and on GPU, hold only primitives MindSpore documents for that device
(src/tools/portability.py, table src/tools/op_platforms.yaml). The graph checks run in
subprocesses (each compiles whole graphs; their memory goes with the process)."""
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from src.losses.assignment import AssignmentPyfunc
from src.ops import build
from src.tools.portability import load_table, violations

REPO = Path(__file__).resolve().parents[1]
# the smallest model that still holds every kind of layer (one encoder and one decoder layer)
SMALL = ["model.num_encoder_layers=1", "model.cascade=[1.0]", "model.num_decoder_layers=1", "model.embed_dim=32",
         "model.num_heads=2", "model.ffn_dim=64", "model.num_queries=20", "model.topk_sa=20", "model.num_select=20",
         "model.dn_number=4", "data.max_boxes=4"]


def run_check(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "src.tools.portability", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_violations_name_the_primitive():
    table = load_table()
    pyfunc = {"Custom": [{"func_type": "pyfunc", "func_name": "assign_queries"}]}
    assert violations(pyfunc, "CPU", table) == []
    for device in ("Ascend", "GPU"):
        (problem,) = violations(pyfunc, device, table)
        assert "pyfunc" in problem and "assign_queries" in problem and device in problem
    cpu_library = f"/x/{build.LIB_STEM}_{'0' * 16}.so"
    gpu_library = f"/x/{build.LIB_STEM}_gpu_{'0' * 16}.so"
    aot = {"Custom": [{"func_type": "aot", "func_name": f"{cpu_library}:RowGather"},
                      {"func_type": "aot", "func_name": f"{gpu_library}:RowGather"}]}
    assert len(violations(aot, "GPU", table)) == 1 and "RowGather" in violations(aot, "GPU", table)[0]
    assert len(violations(aot, "CPU", table)) == 1 and len(violations(aot, "Ascend", table)) == 2
    # the built-in assignment has no GPU kernel; an unlisted primitive is never assumed portable
    assert violations({"LinearSumAssignment": [{}]}, "Ascend", table) == []
    assert "LinearSumAssignment is documented for" in violations({"LinearSumAssignment": [{}]}, "GPU", table)[0]
    assert "not in op_platforms.yaml" in violations({"NoSuchOp": [{}]}, "CPU", table)[0]
    assert violations({"MakeTuple": [{}], "Depend": [{}]}, "Ascend", table) == []


@pytest.mark.skipif(build.find_nvcc() is None, reason="the GPU graphs reference the CUDA library, built with nvcc")
def test_training_and_evaluation_graphs_are_portable(tmp_path):
    out = run_check("--config", "config/quickstart.yaml", "--device", "Ascend", "--device", "GPU", *SMALL)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if " graph: " in line]
    assert len(lines) == 4 and all(line.endswith("primitives, ok") for line in lines), out.stdout
    for device in ("Ascend", "GPU"):
        for graph in ("train", "eval"):
            assert any(line.startswith(f"{device:6s} {graph} graph:") for line in lines), out.stdout


def test_exported_mindir_is_portable(tmp_path):
    mindir = tmp_path / "small.mindir"
    export = subprocess.run([sys.executable, "export.py", "--config", "config/quickstart.yaml", "--random-init",
                             "--height", "128", "--width", "128", "--output", str(mindir), *SMALL], cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert export.returncode == 0, export.stderr[-3000:]
    out = run_check("--mindir", str(mindir), "--device", "Ascend", "--device", "GPU", "--device", "CPU")
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert out.stdout.count("small.mindir:") == 3 and "not available" not in out.stdout, out.stdout


def test_pyfunc_assignment_is_named_for_ascend(tmp_path):
    """What the training step held before the device-native assignment, a pyfunc node: the check
    must refuse it for Ascend. The assignment alone is exported (the whole step took a minute to
    compile; the check reads the training step's graphs in the test above)."""
    ms.set_context(mode=ms.GRAPH_MODE)
    cost = Tensor(np.random.default_rng(0).random((2, 20, 4)).astype(np.float32))
    name = str(tmp_path / "assignment")
    ms.export(AssignmentPyfunc(), cost, Tensor(np.array([2, 3], np.int32)), file_name=name, file_format="MINDIR")
    out = run_check("--mindir", name + ".mindir", "--device", "Ascend")
    assert out.returncode == 1, out.stdout + out.stderr[-3000:]
    assert "Custom pyfunc 'assign_queries' runs on CPU, not Ascend" in out.stdout, out.stdout
