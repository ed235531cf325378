"""The fused operators on GPU (CUDA kernels) and Ascend (built-in fused deformable attention,
including which (x, y) order its locations take) against the pure-MindSpore references, through
tests/device_ops_worker.py in a subprocess. Each test skips, with the reason, where MindSpore has
no such device: that is every machine this project was developed on, so these paths have never
run here (the CUDA sources are compile-checked by tests/test_ops.py::test_cuda_sources_compile).

The Ascend adapter's glue (shapes, level offsets, axis swap) is checked on CPU below with the
built-in replaced by the reference.
"""
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from src.layers.ms_deform_attn import MSDeformAttnCoreGather
from src.ops import msda_ascend

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("device", ["GPU", "Ascend"])
def test_fused_operators_match_reference_on_device(device):
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "device_ops_worker.py"), "--device", device],
                          cwd=REPO, capture_output=True, text=True, timeout=1200)
    if proc.returncode == 77:
        pytest.skip(proc.stdout.strip().splitlines()[-1][:300])
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]


@pytest.mark.parametrize("order", ["xy", "yx"])
def test_ascend_adapter_passes_shapes_offsets_and_axis_order(monkeypatch, order):
    """PyNative: a stand-in for the built-in that checks the level table and offsets it receives
    and samples with the reference, taking its locations in (x, y) order."""
    shapes = ((4, 6), (2, 3), (1, 1))
    seen = {}

    def builtin(value, shape_table, offsets, locations, weights):
        seen["shapes"], seen["offsets"] = shape_table.asnumpy(), offsets.asnumpy()
        return MSDeformAttnCoreGather()(value, shapes, locations, weights)

    monkeypatch.setattr(msda_ascend.ops, "multi_scale_deformable_attn_function", builtin)
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        check_adapter(shapes, seen, order)
    finally:
        ms.set_context(mode=previous)


def check_adapter(shapes, seen, order):
    rng = np.random.default_rng(3)
    value = Tensor(rng.normal(size=(2, 33, 2, 8)).astype(np.float32))
    loc = rng.uniform(0, 1, (2, 5, 2, 3, 2, 2)).astype(np.float32)
    weights = Tensor(rng.uniform(0, 1, (2, 5, 2, 3, 2)).astype(np.float32))
    out = msda_ascend.MSDeformAttnCoreAscend(order, probe=False)(value, shapes, Tensor(loc), weights).asnumpy()
    np.testing.assert_array_equal(seen["shapes"], [[4, 6], [2, 3], [1, 1]])
    np.testing.assert_array_equal(seen["offsets"], [0, 24, 30])
    expected_loc = loc if order == "xy" else loc[..., ::-1].copy()
    expected = MSDeformAttnCoreGather()(value, shapes, Tensor(expected_loc), weights).asnumpy()
    np.testing.assert_array_equal(out, expected)


def test_ascend_adapter_is_unavailable_off_ascend():
    with pytest.raises(msda_ascend.KernelUnavailable, match="Ascend only"):
        msda_ascend.MSDeformAttnCoreAscend()
