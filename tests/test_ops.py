"""Custom AOT kernels against the pure-MindSpore references, in GRAPH_MODE and PYNATIVE_MODE.

Every kernel test runs twice: on the CPU kernels, and on the CUDA kernels' source compiled for
the host (tests/cuda_on_host.py: each launch becomes a serial loop over the grid), since no GPU
has been lent to this project; on a GPU, tests/test_ops_devices.py runs the real thing.

The deformable sampling kernel is compared with ``MSDeformAttnCoreGather`` (forward and the three
gradients) on random inputs with points outside the maps, 1x1 levels, single heads/points and
points exactly on the boundaries, and with the official code through the golden fixture. The
token gather/scatter kernels are compared with ``RowGatherReference``/``RowScatterReference``.
The GELU kernel (CPU only) is compared with float64 GELU and ``portable_backward.GELU``, the
window attention kernel (CPU only) with float64 attention and ``window_attention_reference``, the
LayerNorm kernel (CPU only) with float64 LayerNorm and ``nn.LayerNorm``, the frozen BatchNorm
kernel (CPU only) with float64 and the ResNet norm's MindSpore operators, the sine position
embedding kernel (CPU only) with MindSpore's operators (tests/test_layers.py: with float64).
The build/fallback machinery is checked with a simulated missing compiler.
"""
import logging
import os
import subprocess
import sys
from pathlib import Path

import cuda_on_host
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn
from weighted_sum import WeightedSum

import src.layers.ms_deform_attn as msda_module
import src.ops as kops
from src.layers.attention import build_window_attention, window_attention_reference
from src.layers.layer_norm import build_layer_norm
from src.layers.ms_deform_attn import MSDeformAttnCoreGather, MSDeformAttnCoreReference
from src.layers.portable_backward import GELU, build_gelu
from src.layers.position_embedding import PositionEmbeddingSine
from src.layers.token_ops import RowGatherReference, RowScatterReference
from src.modeling.backbone.resnet_norm import FrozenBatchNorm2d
from src.ops import (
    FrozenBatchNormKernel,
    GELUKernel,
    LayerNormKernel,
    SineEmbeddingKernel,
    WindowAttentionKernel,
    build,
    msda_kernel,
    token_kernel,
)
from src.tools.parity.ops import compare_msda, msda_core_outputs
from src.tools.parity.report import TOL_MSDA_GRAD, TOL_MSDA_LOC_GRAD, TOL_MSDA_OUT

RNG = np.random.default_rng(7)


def msda_inputs(shapes, bsz, nq, heads, dim, points, low=-0.3, high=1.3):
    levels = len(shapes)
    tokens = sum(h * w for h, w in shapes)
    value = RNG.normal(size=(bsz, tokens, heads, dim)).astype(np.float32)
    locations = RNG.uniform(low, high, (bsz, nq, heads, levels, points, 2)).astype(np.float32)
    weights = RNG.uniform(0, 1, (bsz, nq, heads, levels, points)).astype(np.float32)
    grad_output = RNG.normal(size=(bsz, nq, heads * dim)).astype(np.float32)
    return value, locations, weights, grad_output


def boundary_locations(shapes, bsz, nq, heads, points):
    """Locations whose pixel coordinates are exactly -1, 0, integers, w-1 and w (power-of-two maps)."""
    levels = len(shapes)
    loc = np.empty((bsz, nq, heads, levels, points, 2), np.float32)
    for lvl, (h, w) in enumerate(shapes):
        for axis, size in ((0, w), (1, h)):
            pix = RNG.choice(np.array([-1.5, -1.0, -0.5, 0.0, 0.5, size - 1.0, size - 0.5, size, size + 0.5]),
                             size=(bsz, nq, heads, points))
            loc[:, :, :, lvl, :, axis] = (pix + 0.5) / size  # exact in float32 for power-of-two sizes
    return loc


MSDA_CASES = {
    # name: (spatial shapes, B, Q, M, D, P)
    "random": (((6, 8), (3, 4), (2, 2), (1, 1)), 2, 9, 3, 5, 2),
    "one_head_one_point": (((5, 7), (1, 1)), 1, 4, 1, 8, 1),
    "one_level": (((4, 4),), 2, 3, 2, 3, 4),
    "detr_like": (((16, 20), (8, 10), (4, 5), (2, 3)), 2, 40, 8, 32, 4),
}


@pytest.fixture(scope="module", params=["cpu", "cuda_on_host"])
def kernel_library(request, tmp_path_factory):
    """The kernel library under test: the CPU one, or the CUDA sources built for the host."""
    if request.param == "cpu":
        return build.library_path("CPU")
    return cuda_on_host.build_library(tmp_path_factory.mktemp("cuda_on_host"))


def kernel_cell(cls, library):
    """A kernel Cell (its ops.Custom primitives bind the library when built) on ``library``."""
    with pytest.MonkeyPatch.context() as patch:
        for module in (msda_kernel, token_kernel):
            patch.setattr(module, "library_path", lambda device: library)
        return cls()


@pytest.fixture(scope="module")
def kernel_core(kernel_library):
    return kernel_cell(msda_kernel.MSDeformAttnCoreKernel, kernel_library)


@pytest.mark.parametrize("case", sorted(MSDA_CASES))
def test_msda_kernel_matches_gather(mode, kernel_core, case):
    shapes, bsz, nq, heads, dim, points = MSDA_CASES[case]
    inputs = msda_inputs(shapes, bsz, nq, heads, dim, points)
    ours = msda_core_outputs(kernel_core, shapes, *inputs)
    ref = msda_core_outputs(MSDeformAttnCoreGather(), shapes, *inputs)
    names = ("output", "grad_value", "grad_sampling_locations", "grad_attention_weights")
    tols = (TOL_MSDA_OUT, TOL_MSDA_GRAD, TOL_MSDA_LOC_GRAD, TOL_MSDA_GRAD)
    for name, a, b, tol in zip(names, ours, ref, tols):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, atol=tol, rtol=0, err_msg=name)


def test_msda_kernel_boundaries_and_far_points(mode, kernel_core):
    """Points exactly on the -1 / w-1 / w pixel boundaries, and points far outside (even huge)."""
    shapes = ((4, 8), (2, 2), (1, 1))
    bsz, nq, heads, dim, points = 2, 6, 2, 4, 3
    value, _, weights, grad_output = msda_inputs(shapes, bsz, nq, heads, dim, points)
    locations = boundary_locations(shapes, bsz, nq, heads, points)
    locations[0, 0, 0, 0, 0] = (1e9, -1e9)  # far outside: contributes nothing, zero gradients
    ours = msda_core_outputs(kernel_core, shapes, value, locations, weights, grad_output)
    ref = msda_core_outputs(MSDeformAttnCoreGather(), shapes, value, locations, weights, grad_output)
    for a, b, tol in zip(ours, ref, (TOL_MSDA_OUT, TOL_MSDA_GRAD, TOL_MSDA_LOC_GRAD, TOL_MSDA_GRAD)):
        np.testing.assert_allclose(a, b, atol=tol, rtol=0)
    assert np.all(ours[2][0, 0, 0, 0, 0] == 0) and ours[3][0, 0, 0, 0, 0] == 0


def test_msda_kernel_matches_grid_sample_forward(mode, kernel_core):
    """The kernel against the grid_sample reference too (forward; its CPU backward is the gather's job)."""
    shapes, bsz, nq, heads, dim, points = MSDA_CASES["random"]
    value, locations, weights, _ = msda_inputs(shapes, bsz, nq, heads, dim, points)
    args = (Tensor(value), shapes, Tensor(locations), Tensor(weights))
    np.testing.assert_allclose(kernel_core(*args).asnumpy(), MSDeformAttnCoreReference()(*args).asnumpy(),
                               atol=TOL_MSDA_OUT, rtol=0)


def test_msda_kernel_matches_golden(mode, golden_dir, monkeypatch, kernel_core):
    """Forward and the three gradients against the official code (compare_msda tolerances)."""
    original = msda_module.build_msda_core

    def build(impl="reference"):
        return kernel_core if impl == "kernel" else original(impl)

    monkeypatch.setattr(msda_module, "build_msda_core", build)
    g = dict(np.load(golden_dir / "msda_core.npz"))
    rows = compare_msda("msda_core", g, mode, "kernel")
    for row in rows:
        assert row.ok, row.line()
    assert sum(row.note == type(kernel_core).__name__ for row in rows) == 4, [row.line() for row in rows]


# ---------------------------------------------------------------- token gather / scatter

def token_inputs(bsz, tokens, channels, k, index_dtype, repeated=False):
    x = RNG.normal(size=(bsz, tokens, channels)).astype(np.float32)
    if repeated:
        idx = RNG.integers(0, tokens, size=(bsz, k))
    else:
        idx = np.stack([RNG.permutation(tokens)[:k] for _ in range(bsz)])
    return x, idx.astype(index_dtype)


class WeightedGather(nn.Cell):
    def __init__(self, op):
        super().__init__()
        self.op = op

    def construct(self, x, idx, w):
        return (self.op(x, idx) * w).sum()


class WeightedScatter(nn.Cell):
    def __init__(self, op):
        super().__init__()
        self.op = op

    def construct(self, x, rows, idx, count, w):
        return (self.op(x, idx, rows, count) * w).sum()


# 64 channels: aligned rows, written with non-temporal stores; 70: the plain copy. Paired with
# the index types rather than crossed: the copy is chosen by the row width alone, the index is
# read the same way by either copy.
CHANNELS_AND_INDEX = pytest.mark.parametrize("channels, index_dtype", [(64, np.int32), (70, np.int64)])


@CHANNELS_AND_INDEX
@pytest.mark.parametrize("k,repeated", [(5, False), (12, False), (9, True)])  # 12 = K equals S
def test_row_gather_kernel(mode, kernel_library, index_dtype, k, repeated, channels):
    x, idx = token_inputs(2, 12, channels, k, index_dtype, repeated)
    weight = RNG.normal(size=(2, k, channels)).astype(np.float32)
    ours, ref = kernel_cell(kops.RowGatherKernel, kernel_library), RowGatherReference()
    np.testing.assert_array_equal(ours(Tensor(x), Tensor(idx)).asnumpy(), ref(Tensor(x), Tensor(idx)).asnumpy())
    g_ours = ms.grad(WeightedGather(ours))(Tensor(x), Tensor(idx), Tensor(weight)).asnumpy()
    g_ref = ms.grad(WeightedGather(ref))(Tensor(x), Tensor(idx), Tensor(weight)).asnumpy()
    np.testing.assert_allclose(g_ours, g_ref, atol=1e-6, rtol=0)


@CHANNELS_AND_INDEX
@pytest.mark.parametrize("k,count", [(5, (5, 2)), (12, (12, 0)), (6, (9, 3))])  # K = S; count 0; count > K
def test_row_scatter_kernel(mode, kernel_library, index_dtype, k, count, channels):
    x, idx = token_inputs(2, 12, channels, k, index_dtype)
    rows = RNG.normal(size=(2, k, channels)).astype(np.float32)
    weight = RNG.normal(size=x.shape).astype(np.float32)
    count = np.array(count, np.int32)
    ours, ref = kernel_cell(kops.RowScatterKernel, kernel_library), RowScatterReference()
    args = (Tensor(x), Tensor(idx), Tensor(rows), Tensor(count))
    np.testing.assert_array_equal(ours(*args).asnumpy(), ref(*args).asnumpy())
    grads = [ms.grad(WeightedScatter(op), grad_position=(0, 1))(
        Tensor(x), Tensor(rows), Tensor(idx), Tensor(count), Tensor(weight)) for op in (ours, ref)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- GELU (CPU only)

def exact_gelu(x):
    """float64 GELU and its derivative."""
    from scipy.special import erf

    x = x.astype(np.float64)
    cdf = 0.5 * (1 + erf(x / np.sqrt(2)))
    return x * cdf, cdf + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi)


# 1001 elements: a length no vector width divides (the loop's scalar tail); 2-D and 4-D shapes
@pytest.mark.parametrize("shape", [(1001,), (7, 33), (2, 3, 5, 24)])
def test_gelu_kernel_matches_exact_gelu_and_the_reference(mode, shape):
    """The fused kernel against float64 GELU (its erf is the rational one, within 4.4e-7) and
    against the pure-MindSpore reference, forward and gradient, on [-10, 10] and beyond."""
    count = int(np.prod(shape))
    x = np.concatenate([np.linspace(-10, 10, count - 3), [-200.0, 0.0, 200.0]]).astype(np.float32)
    x = RNG.permutation(x).reshape(shape)
    weight = RNG.normal(size=shape).astype(np.float32)
    ours, ref = GELUKernel(), GELU()
    value, derivative = exact_gelu(x)
    out = ours(Tensor(x)).asnumpy()
    np.testing.assert_allclose(out, value, atol=1e-6, rtol=3e-7)
    np.testing.assert_allclose(out, ref(Tensor(x)).asnumpy(), atol=1.5e-6, rtol=3e-7)
    grad = ms.grad(WeightedSum(ours))(Tensor(x), Tensor(weight)).asnumpy()
    np.testing.assert_allclose(grad, weight * derivative, atol=1e-6, rtol=1e-6)
    # the reference is within rtol 1e-5 / atol 1e-6 of float64 (tests/test_layers.py): the two bounds add
    np.testing.assert_allclose(grad, ms.grad(WeightedSum(ref))(Tensor(x), Tensor(weight)).asnumpy(),
                               atol=2e-6, rtol=1.1e-5)
    half = ours(Tensor(x.astype(np.float16)))  # cast around the float32 kernel
    assert half.dtype == ms.float16
    np.testing.assert_allclose(half.asnumpy().astype(np.float32), exact_gelu(x.astype(np.float16))[0],
                               atol=2e-3, rtol=2e-3)


def test_build_gelu_dispatch(fresh_build_state, monkeypatch, caplog):
    """'kernel' is the kernel or an error; 'auto' falls back to the reference with one warning,
    without a compiler and on devices without the kernel (GPU, Ascend)."""
    assert isinstance(build_gelu("kernel"), GELUKernel)
    assert isinstance(build_gelu("auto"), GELUKernel)
    assert isinstance(build_gelu("native"), GELU) and isinstance(build_gelu("rational"), GELU)
    with pytest.raises(ValueError, match="kernels.gelu"):
        build_gelu("tanh")
    with kops.target_device("GPU"):
        with pytest.raises(kops.KernelUnavailable, match="CPU only"):
            build_gelu("kernel")
        with caplog.at_level(logging.WARNING, logger="focus_detr.ops"):
            assert type(build_gelu("auto")) is GELU
    assert [r.getMessage() for r in caplog.records if "GELU" in r.getMessage()] != []
    assert_one_warning_without_compiler(monkeypatch, caplog, lambda: type(build_gelu("auto")) is GELU, "GELU")


def assert_one_warning_without_compiler(monkeypatch, caplog, builds_fallback, op_name):
    """Without a C++ compiler (nothing built or warned before), three 'auto' builds all give the
    fallback (``builds_fallback()`` is True) and log one warning naming ``op_name``."""
    monkeypatch.setattr(kops, "_warned", set())
    monkeypatch.setattr(build, "_built", {})
    monkeypatch.setattr(build, "CXX", "/nonexistent/bin/g++")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="focus_detr.ops"):
        assert all(builds_fallback() for _ in range(3))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and op_name in warnings[0] and "not found" in warnings[0], warnings


# ---------------------------------------------------------------- window attention (CPU only)

def window_attention_float64(q, k, v, bias, mask, dout):
    """softmax(q k^T + bias + mask[b % W]) v in float64, and the gradients of sum(out * dout)
    with respect to q, k, v and bias."""
    q, k, v, bias, dout = (a.astype(np.float64) for a in (q, k, v, bias, dout))
    b_, heads, n, _ = q.shape
    logits = q @ k.swapaxes(-1, -2) + bias[None]
    if mask is not None:
        logits = logits + np.repeat(mask.astype(np.float64)[None], b_ // mask.shape[0], 0).reshape(b_, 1, n, n)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    grad_weights = dout @ v.swapaxes(-1, -2)
    grad_logits = weights * (grad_weights - (grad_weights * weights).sum(-1, keepdims=True))
    return (weights @ v, grad_logits @ k, grad_logits.swapaxes(-1, -2) @ q, weights.swapaxes(-1, -2) @ dout,
            grad_logits.sum(0))


WINDOW_CASES = {
    # name: (windows of the batch B_, heads, tokens per window, mask windows W or None)
    "shifted": (12, 3, 49, 6),    # two images of 6 windows, Swin's 7 x 7
    "regular": (8, 2, 49, None),
    "window_4": (4, 4, 16, 2),    # tokens not a multiple of the 4-row register block: 4 x 4 = 16 is
    "window_3": (6, 1, 9, 3),     # one; 3 x 3 = 9 leaves a partial block
    "window_8": (2, 2, 64, 1),    # the kernel's largest window
}


@pytest.mark.parametrize("case", sorted(WINDOW_CASES))
def test_window_attention_kernel_matches_float64_and_the_reference(mode, case):
    """Forward and the gradients of q, k, v and the bias against float64 attention and against
    the MindSpore reference, with Swin's 0 / -100 masks (whole blocked regions per row)."""
    b_, heads, n, windows = WINDOW_CASES[case]
    q, k, v, dout = (RNG.normal(size=(b_, heads, n, 32)).astype(np.float32) for _ in range(4))
    q *= 32 ** -0.5
    bias = RNG.normal(0, 0.5, size=(heads, n, n)).astype(np.float32)
    mask = None
    if windows is not None:
        region = RNG.integers(0, 3, size=(windows, n))
        mask = np.where(region[:, :, None] == region[:, None, :], 0.0, -100.0).astype(np.float32)
    expected = window_attention_float64(q, k, v, bias, mask, dout)
    args = [Tensor(a) for a in (q, k, v, bias)] + [None if mask is None else Tensor(mask)]
    kernel = WindowAttentionKernel(32, n)
    out = kernel(*args).asnumpy()
    np.testing.assert_allclose(out, expected[0], atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(out, window_attention_reference(*args).asnumpy(), atol=3e-6, rtol=1e-5)
    grads = [g.asnumpy() for g in ms.grad(WeightedSum(kernel), grad_position=(0, 1, 2, 3))(
        *args, Tensor(dout))]
    ref_grads = [g.asnumpy() for g in ms.grad(WeightedSum(window_attention_reference),
                                              grad_position=(0, 1, 2, 3))(*args, Tensor(dout))]
    for name, ours, exact, ref in zip(("q", "k", "v", "bias"), grads, expected[1:], ref_grads):
        np.testing.assert_allclose(ours, exact, atol=1e-5, rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(ours, ref, atol=2e-5, rtol=2e-5, err_msg=name)
    half = kernel(*[a if a is None else a.astype(ms.float16) for a in args])  # cast around the kernel
    assert half.dtype == ms.float16
    np.testing.assert_allclose(half.asnumpy().astype(np.float32), expected[0], atol=5e-3, rtol=5e-3)


def test_build_window_attention_dispatch(fresh_build_state, monkeypatch, caplog):
    """'kernel' is the kernel or an error; 'auto' falls back to the reference with one warning
    per process where the kernel does not apply: another head size or window, GPU, no compiler."""
    assert isinstance(build_window_attention("kernel", 32, 49), WindowAttentionKernel)
    assert isinstance(build_window_attention("auto", 32, 49), WindowAttentionKernel)
    assert build_window_attention("native", 32, 49) is window_attention_reference
    with pytest.raises(ValueError, match="kernels.window_attention"):
        build_window_attention("flash", 32, 49)
    for head_dim, tokens in ((64, 49), (32, 144)):
        with pytest.raises(kops.KernelUnavailable, match="head size 32 and at most 64 tokens"):
            build_window_attention("kernel", head_dim, tokens)
    with kops.target_device("GPU"):
        with pytest.raises(kops.KernelUnavailable, match="CPU only"):
            build_window_attention("kernel", 32, 49)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="focus_detr.ops"):
        assert build_window_attention("auto", 32, 144) is window_attention_reference
        with kops.target_device("GPU"):
            assert build_window_attention("auto", 32, 49) is window_attention_reference
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "window attention" in warnings[0] and "144" in warnings[0], warnings
    assert_one_warning_without_compiler(
        monkeypatch, caplog, lambda: build_window_attention("auto", 32, 49) is window_attention_reference,
        "window attention")


# ---------------------------------------------------------------- build, cache, fallback

def test_library_is_cached_by_source_hash(fresh_build_state, monkeypatch, tmp_path):
    monkeypatch.setenv("FOCUS_DETR_KERNEL_CACHE", str(tmp_path))
    path = build.library_path()
    assert path.startswith(str(tmp_path)) and path.endswith(".so")
    mtime = (tmp_path / path.split("/")[-1]).stat().st_mtime_ns
    monkeypatch.setattr(build, "_built", {})
    assert build.library_path() == path  # second process-level build reuses the file
    assert (tmp_path / path.split("/")[-1]).stat().st_mtime_ns == mtime


def test_fallback_warns_exactly_once_without_compiler(fresh_build_state, monkeypatch, caplog):
    monkeypatch.setattr(build, "CXX", "/nonexistent/bin/g++")
    with pytest.raises(kops.KernelUnavailable, match="not found"):
        kops.msda_core_or_none(required=True)  # impl 'kernel': an error, never a silent fallback
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="focus_detr.ops"):
        assert kops.msda_core_or_none() is None
        assert kops.msda_core_or_none() is None
        assert kops.token_ops_or_none() is None
        assert kops.token_ops_or_none() is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]  # one per operator family
    assert "deformable attention" in warnings[0].getMessage() and "not found" in warnings[0].getMessage()
    assert "token gather/scatter" in warnings[1].getMessage()


def test_build_msda_core_auto_falls_back_once(fresh_build_state, monkeypatch, caplog):
    """Through the dispatch point: 'auto' falls back to the gather core with one warning."""
    assert isinstance(msda_module.build_msda_core("kernel"), msda_kernel.MSDeformAttnCoreKernel)
    monkeypatch.setattr(build, "_built", {})
    monkeypatch.setattr(build, "CXX", "/nonexistent/bin/g++")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="focus_detr.ops"):
        cores = [msda_module.build_msda_core("auto") for _ in range(3)]
    assert all(isinstance(c, MSDeformAttnCoreGather) for c in cores)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    with pytest.raises(kops.KernelUnavailable):
        msda_module.build_msda_core("kernel")


def test_unsupported_device_is_unavailable():
    assert not kops.is_available("Ascend")
    with pytest.raises(kops.KernelUnavailable, match="device 'Ascend'"):
        kops.check_available("Ascend")


def test_missing_nvcc_makes_gpu_kernels_unavailable(fresh_build_state, monkeypatch):
    monkeypatch.setattr(build, "find_nvcc", lambda: None)
    with pytest.raises(kops.KernelUnavailable, match="nvcc not found"):
        build.library_path("GPU")


def test_cuda_sources_compile(fresh_build_state, monkeypatch, tmp_path):
    """Compile check of the CUDA kernels with the machine's nvcc (sm_80 and sm_90) and the
    entry points MindSpore's AOT loader looks up. They run only on a GPU (tests/test_ops_devices.py)."""
    if build.find_nvcc() is None:
        pytest.skip("nvcc is not installed: the CUDA compile check needs it")
    monkeypatch.setenv("FOCUS_DETR_KERNEL_CACHE", str(tmp_path))
    path = build.library_path("GPU")
    assert path.startswith(str(tmp_path)) and "_gpu_" in path
    symbols = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True, check=True).stdout
    for name in ("MSDAForward", "MSDABackward", "MSDAForwardInferShape", "MSDAForwardInferType", "RowGather",
                 "RowGatherGrad", "RowScatter", "RowScatterGrad", "RowGatherInferShape", "RowScatterInferShape",
                 "LinearSumAssignment"):
        assert f" T {name}\n" in symbols, name


def test_kernels_export_to_mindir_and_reload(tmp_path):
    """A graph with the AOT kernels exports to MINDIR and reloads (GraphCell) with equal outputs.
    The library's absolute path is baked into the file: deployment needs the .so at that path."""
    shapes = ((4, 6), (2, 3))
    value, locations, weights, _ = msda_inputs(shapes, 1, 5, 2, 4, 2)
    x, idx = token_inputs(1, 30, 8, 5, np.int32)

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.core = kops.MSDeformAttnCoreKernel()
            self.gather = kops.RowGatherKernel()

        def construct(self, v, loc, w, x, idx):
            return self.core(v, shapes, loc, w), self.gather(x, idx)

    net = Net()
    args = [Tensor(a) for a in (value, locations, weights, x, idx)]
    expected = [o.asnumpy() for o in net(*args)]
    ms.export(net, *args, file_name=str(tmp_path / "ops"), file_format="MINDIR")
    loaded = nn.GraphCell(ms.load(str(tmp_path / "ops.mindir")))
    for a, b in zip(loaded(*args), expected):
        np.testing.assert_array_equal(a.asnumpy(), b)


# ---------------------------------------------------------------- LayerNorm (CPU only)

def layer_norm_float64(x, gamma, beta, dy, eps=1e-5):
    """LayerNorm over the last axis in float64, and the gradients of sum(y * dy) with respect to
    x, gamma and beta."""
    x, gamma, beta, dy = (a.astype(np.float64) for a in (x, gamma, beta, dy))
    mean = x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)
    xhat = (x - mean) * rstd
    g = dy * gamma
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    rows = (-1, x.shape[-1])
    return xhat * gamma + beta, dx, (dy * xhat).reshape(rows).sum(0), dy.reshape(rows).sum(0)


# (7, 33): a width no vector length divides; (130, 256): three blocks of the backward's 64-row
# partial sums, the last one partial; (2, 3, 5, 96): Swin's (B, H, W, C) maps
@pytest.mark.parametrize("shape", [(7, 33), (130, 256), (2, 3, 5, 96)])
def test_layer_norm_kernel_matches_float64_and_the_reference(mode, shape):
    """Forward and the gradients of x, gamma and beta against float64 LayerNorm and against
    ``nn.LayerNorm``, on rows whose mean is up to 30 standard deviations (the two-pass variance) and a
    constant row."""
    c = shape[-1]
    x = (RNG.normal(size=shape) * RNG.uniform(0.3, 3, size=shape[:-1] + (1,))
         + RNG.uniform(-10, 10, size=shape[:-1] + (1,))).astype(np.float32)
    x.reshape(-1, c)[1] = 4.0  # variance 0: y = beta
    dy = RNG.normal(size=shape).astype(np.float32)
    gamma = RNG.uniform(0.5, 1.5, c).astype(np.float32)
    beta = RNG.normal(size=c).astype(np.float32)
    expected = layer_norm_float64(x, gamma, beta, dy)
    ours, ref = LayerNormKernel(c), nn.LayerNorm((c,), epsilon=1e-5)
    for cell in (ours, ref):
        cell.gamma.set_data(Tensor(gamma))
        cell.beta.set_data(Tensor(beta))
    out = ours(Tensor(x)).asnumpy()
    np.testing.assert_allclose(out, expected[0], atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(out, ref(Tensor(x)).asnumpy(), atol=4e-5, rtol=2e-5)  # the two bounds add

    def gradients(cell):
        loss = WeightedSum(cell)
        _, (dx, (dgamma, dbeta)) = ms.value_and_grad(loss, 0, loss.trainable_params())(Tensor(x), Tensor(dy))
        return [g.asnumpy() for g in (dx, dgamma, dbeta)]

    for name, got, exact, reference in zip(("x", "gamma", "beta"), gradients(ours), expected[1:], gradients(ref)):
        scale = np.abs(exact).max()
        np.testing.assert_allclose(got, exact, atol=1e-5 * scale, rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(got, reference, atol=2e-5 * scale, rtol=2e-5, err_msg=name)
    x16 = x.astype(np.float16)
    half = ours(Tensor(x16))  # cast around the float32 kernel
    assert half.dtype == ms.float16
    np.testing.assert_allclose(half.asnumpy().astype(np.float32), layer_norm_float64(x16, gamma, beta, dy)[0],
                               atol=1e-2, rtol=1e-2)


LAYER_NORM_THREADS_SCRIPT = """
import numpy as np, mindspore as ms
from mindspore import Tensor
import src
from src.ops import LayerNormKernel
from weighted_sum import WeightedSum
rng = np.random.default_rng(3)
x, dy = (Tensor(rng.normal(size=(20000, 96)).astype(np.float32)) for _ in range(2))
loss = WeightedSum(LayerNormKernel(96))
_, (dx, (dgamma, dbeta)) = ms.value_and_grad(loss, 0, loss.trainable_params())(x, dy)
print(np.concatenate([dx.asnumpy().ravel(), dgamma.asnumpy(), dbeta.asnumpy()]).tobytes().hex())
"""


def test_layer_norm_kernel_gradients_do_not_depend_on_the_thread_count():
    """gamma's and beta's gradients (sums over 20000 rows) are the same bits with one and two
    OpenMP threads: each 64-row block sums alone, the blocks are added in order."""
    tests = Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=f"{tests.parent}{os.pathsep}{tests}")
    bits = []
    for threads in ("1", "2"):
        env["OMP_NUM_THREADS"] = threads
        proc = subprocess.run([sys.executable, "-c", LAYER_NORM_THREADS_SCRIPT], capture_output=True, text=True,
                              env=env, cwd=tests.parent, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        bits.append(proc.stdout.split()[-1])
    assert bits[0] == bits[1]


def test_build_layer_norm_dispatch(fresh_build_state, monkeypatch, caplog):
    """'kernel' is the kernel or an error; 'auto' falls back to ``nn.LayerNorm`` with one warning
    on devices without the kernel and without a compiler. Both have the same parameters."""
    kernel = build_layer_norm(96, "kernel")
    assert isinstance(kernel, LayerNormKernel) and isinstance(build_layer_norm(96, "auto"), LayerNormKernel)
    native = build_layer_norm(96, "native")
    assert type(native) is nn.LayerNorm and native.epsilon == kernel.epsilon == 1e-5
    assert [(p.name, p.shape) for p in kernel.get_parameters()] == [(p.name, p.shape) for p in native.get_parameters()]
    with pytest.raises(ValueError, match="kernels.layer_norm"):
        build_layer_norm(96, "rms")
    with kops.target_device("GPU"):
        with pytest.raises(kops.KernelUnavailable, match="CPU only"):
            build_layer_norm(96, "kernel")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="focus_detr.ops"):
            assert all(type(build_layer_norm(96, "auto")) is nn.LayerNorm for _ in range(3))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "LayerNorm" in warnings[0] and "CPU only" in warnings[0], warnings
    assert_one_warning_without_compiler(monkeypatch, caplog, lambda: type(build_layer_norm(96, "auto")) is nn.LayerNorm,
                                        "LayerNorm")


# ---------------------------------------------------------------- frozen BatchNorm (CPU only)

class NormTail(nn.Cell):
    """sum(norm(x, shortcut, relu) * weight) for the three ways a ResNet block calls its norms."""

    def __init__(self, norm, tail):
        super().__init__()
        self.norm, self.tail = norm, tail

    def construct(self, x, shortcut, weight):
        if self.tail == "add_relu":
            y = self.norm(x, shortcut, relu=True)
        elif self.tail == "add":
            y = self.norm(x, shortcut)
        elif self.tail == "relu":
            y = self.norm(x, relu=True)
        else:
            y = self.norm(x)
        return (y * weight).sum()


def frozen_bn_float64(x, shortcut, dy, stats, tail, eps=1e-5):
    """detectron2's frozen BatchNorm, the tail, in float64; the gradients of sum(y * dy) with
    respect to x and the shortcut."""
    x, shortcut, dy = (a.astype(np.float64) for a in (x, shortcut, dy))
    gamma, beta, mean, var = (stats[k].astype(np.float64).reshape(-1, *[1] * (x.ndim - 2))
                              for k in ("gamma", "beta", "moving_mean", "moving_variance"))
    scale = gamma / np.sqrt(var + eps)
    y = x * scale + (beta - mean * scale) + (shortcut if tail in ("add", "add_relu") else 0)
    relu = tail in ("relu", "add_relu")
    g = dy * (y > 0) if relu else dy
    return (np.maximum(y, 0) if relu else y), g * scale, (g if tail in ("add", "add_relu") else 0 * g)


# (2, 6, 5, 7): a block output; (1, 3, 33): planes no vector length divides; (2, 5, 1, 1): 1x1 planes
@pytest.mark.parametrize("shape", [(2, 6, 5, 7), (1, 3, 33), (2, 5, 1, 1)])
@pytest.mark.parametrize("tail", ["none", "relu", "add_relu", "add"])
def test_frozen_bn_kernel_matches_float64_and_the_reference(mode, shape, tail):
    """Output and the gradients of x and the shortcut against float64 and against the norm's
    MindSpore operators (BatchNorm, Add, ReLU), for each ending of a block (and a shortcut without
    the ReLU, which no block has)."""
    c = shape[1]
    stats = {"gamma": RNG.uniform(0.5, 1.5, c), "beta": RNG.normal(0, 0.5, c), "moving_mean": RNG.normal(0, 1, c),
             "moving_variance": RNG.uniform(0.1, 3, c)}
    x = RNG.normal(0.5, 2.0, shape).astype(np.float32)
    shortcut, dy = (RNG.normal(size=shape).astype(np.float32) for _ in range(2))
    y, dx, dshortcut = frozen_bn_float64(x, shortcut, dy, stats, tail)

    def run(impl):
        norm = FrozenBatchNorm2d(c, impl=impl)
        assert (norm.kernel is None) == (impl == "native")
        for name, value in stats.items():
            getattr(norm, name).set_data(Tensor(value.astype(np.float32)))
        net = NormTail(norm, tail)
        out = net(Tensor(x), Tensor(shortcut), Tensor(np.ones(shape, np.float32)))
        grads = ms.grad(net, grad_position=(0, 1))(Tensor(x), Tensor(shortcut), Tensor(dy))
        return [norm, out.asnumpy()] + [g.asnumpy() for g in grads]

    norm, total, got_dx, got_dshortcut = run("kernel")
    _, ref_total, ref_dx, ref_dshortcut = run("native")
    np.testing.assert_allclose(total, y.sum(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(total, ref_total, rtol=1e-5, atol=1e-4)
    for got, exact, reference in ((got_dx, dx, ref_dx), (got_dshortcut, dshortcut, ref_dshortcut)):
        np.testing.assert_allclose(got, exact, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got, reference, rtol=1e-6, atol=1e-6)
    shortcut_arg = Tensor(shortcut) if tail in ("add", "add_relu") else None
    elementwise = norm(Tensor(x), shortcut_arg, relu=tail in ("relu", "add_relu"))
    np.testing.assert_allclose(elementwise.asnumpy(), y, rtol=1e-5, atol=2e-6)
    half = norm(Tensor(x.astype(np.float16)))  # cast around the float32 kernel
    assert half.dtype == ms.float16
    np.testing.assert_allclose(half.asnumpy().astype(np.float32),
                               frozen_bn_float64(x.astype(np.float16), shortcut, dy, stats, "none")[0],
                               rtol=1e-2, atol=1e-2)


def test_frozen_bn_dispatch(fresh_build_state, monkeypatch, caplog):
    """'kernel' is the kernel or an error; 'auto' falls back to MindSpore's operators with one
    warning on devices without the kernel and without a compiler; the parameters are the same."""
    kernel, auto, native = (FrozenBatchNorm2d(8, impl=impl) for impl in ("kernel", "auto", "native"))
    assert isinstance(kernel.kernel, FrozenBatchNormKernel) and isinstance(auto.kernel, FrozenBatchNormKernel)
    assert native.kernel is None
    assert [(p.name, p.shape) for p in kernel.get_parameters()] == [(p.name, p.shape) for p in native.get_parameters()]
    with pytest.raises(ValueError, match="kernels.frozen_bn"):
        FrozenBatchNorm2d(8, impl="fused")
    with kops.target_device("GPU"):
        with pytest.raises(kops.KernelUnavailable, match="CPU only"):
            FrozenBatchNorm2d(8, impl="kernel")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="focus_detr.ops"):
            assert all(FrozenBatchNorm2d(8, impl="auto").kernel is None for _ in range(3))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "frozen BatchNorm" in warnings[0] and "CPU only" in warnings[0], warnings
    assert_one_warning_without_compiler(monkeypatch, caplog, lambda: FrozenBatchNorm2d(8, impl="auto").kernel is None,
                                        "frozen BatchNorm")


# ---------------------------------------------------------------- sine position embedding (CPU only)

class SineEmbeddingLoss(nn.Cell):
    """sum(kernel(y, x, dim_t) * weight): the counts' gradient through the kernel's backward."""

    def __init__(self):
        super().__init__()
        self.kernel = SineEmbeddingKernel()

    def construct(self, y_embed, x_embed, pair_dim_t, weight):
        return (self.kernel(y_embed, x_embed, pair_dim_t) * weight).sum()


# (2, 13, 21): padding inside and fully padded rows and columns (angles ~1e6 there); (1, 1, 1)
@pytest.mark.parametrize("shape", [(2, 13, 21), (1, 1, 1)])
@pytest.mark.parametrize("temperature, offset", [(10000, -0.5), (20, 0.0)])
def test_sine_embedding_kernel_matches_the_reference(mode, shape, temperature, offset):
    """The embedding of padding masks, the kernel against MindSpore's operators (the division,
    Sin, Cos, Concat) to float32 rounding of sin and cos, every channel; its backward is zeros
    (the counts come from the mask)."""
    mask = RNG.random(shape) < 0.2
    if shape[1] > 1:
        mask[0, 9:] = True
        mask[0, :, 15:] = True
    kernel, native = (PositionEmbeddingSine(128, temperature, offset, impl=impl) for impl in ("kernel", "native"))
    assert isinstance(kernel.kernel, SineEmbeddingKernel) and native.kernel is None
    got, ref = kernel(Tensor(mask)).asnumpy(), native(Tensor(mask)).asnumpy()
    assert got.shape == shape + (256,)
    np.testing.assert_allclose(got, ref, rtol=0, atol=3e-7)
    counts = [Tensor(RNG.uniform(0, 7, shape).astype(np.float32)) for _ in range(2)]
    weight = Tensor(RNG.normal(size=shape + (256,)).astype(np.float32))
    grads = ms.grad(SineEmbeddingLoss(), grad_position=(0, 1))(*counts, kernel.pair_dim_t, weight)
    assert all(not g.asnumpy().any() and g.shape == shape for g in grads)
    half = kernel.kernel(*(c.astype(ms.float16) for c in counts), kernel.pair_dim_t)  # mixed precision O2
    full = kernel.kernel(*(c.astype(ms.float16).astype(ms.float32) for c in counts), kernel.pair_dim_t)
    assert half.dtype == ms.float16
    np.testing.assert_allclose(half.asnumpy().astype(np.float32), full.asnumpy(), rtol=0, atol=1e-3)


def test_sine_embedding_dispatch(fresh_build_state, monkeypatch, caplog):
    """'kernel' is the kernel or an error; 'auto' falls back to MindSpore's operators with one
    warning on devices without the kernel and without a compiler."""
    assert isinstance(PositionEmbeddingSine(impl="kernel").kernel, SineEmbeddingKernel)
    assert isinstance(PositionEmbeddingSine(impl="auto").kernel, SineEmbeddingKernel)
    assert PositionEmbeddingSine(impl="native").kernel is None
    with pytest.raises(ValueError, match="kernels.position_embedding"):
        PositionEmbeddingSine(impl="fused")
    with kops.target_device("GPU"):
        with pytest.raises(kops.KernelUnavailable, match="CPU only"):
            PositionEmbeddingSine(impl="kernel")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="focus_detr.ops"):
            assert all(PositionEmbeddingSine(impl="auto").kernel is None for _ in range(3))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "sine position embedding" in warnings[0] and "CPU only" in warnings[0], warnings
    assert_one_warning_without_compiler(monkeypatch, caplog, lambda: PositionEmbeddingSine(impl="auto").kernel is None,
                                        "sine position embedding")
