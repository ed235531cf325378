"""The batched linear sum assignment kernel (src/ops/lsap*.{h,cpp,cu}) against scipy, element
for element, in GRAPH_MODE and PYNATIVE_MODE, on the CPU kernel and on the CUDA source built for
the host (tests/cuda_on_host.py; no GPU has been lent to this project).

"Equal to scipy" includes the tie-breaking: the tie-heavy cases (a few cost levels, all-equal
matrices, thousands of small matrices in one batch) fail if the solver picks another of the
optimal assignments. The return codes of bad inputs are checked through the C ABI directly.
"""
import ctypes

import cuda_on_host
import numpy as np
import pytest
from mindspore import Tensor

from src.losses.assignment import assign_queries
from src.ops import build
from src.ops.lsap_kernel import LinearSumAssignmentKernel

RNG = np.random.default_rng(11)


@pytest.fixture(scope="module", params=["cpu", "cuda_on_host"])
def library(request, tmp_path_factory):
    if request.param == "cpu":
        return build.library_path("CPU")
    return cuda_on_host.build_library(tmp_path_factory.mktemp("cuda_on_host"))


@pytest.fixture(scope="module")
def kernel(library):
    return LinearSumAssignmentKernel(library)


def levels(shape, count, scale=1.0):
    """Costs with only ``count`` distinct values: most entries tie with many others."""
    return (RNG.integers(0, count, shape) * scale).astype(np.float32)


def garbage_padding(cost, num_valid):
    """Fill the padded columns with values that would win (or poison) any assignment they entered."""
    junk = np.array([np.nan, np.inf, -np.inf, -1e30, 1e30, -3e38], np.float32)
    for i, n in enumerate(num_valid):
        cost[i, :, n:] = RNG.choice(junk, cost[i, :, n:].shape)
    return cost


def non_finite(shape):
    cost = levels(shape, 3)
    draw = RNG.random(shape)
    cost[draw < 0.15] = np.nan
    cost[(draw >= 0.15) & (draw < 0.3)] = np.inf
    cost[(draw >= 0.3) & (draw < 0.4)] = -np.inf
    return cost


CASES = {
    # name: () -> (cost (N,Q,M) float32, num_valid (N,) int32)
    "random": lambda: (RNG.normal(size=(3, 12, 7)).astype(np.float32), np.array([7, 4, 6], np.int32)),
    "two_levels": lambda: (levels((4, 10, 6), 2), np.array([6, 6, 3, 5], np.int32)),
    "four_levels_decimal": lambda: (levels((4, 9, 9), 4, 0.1), np.array([9, 8, 2, 9], np.int32)),
    "all_equal": lambda: (np.full((3, 7, 5), 0.5, np.float32), np.array([5, 3, 1], np.int32)),
    "all_equal_wide": lambda: (np.full((2, 4, 9), -2.0, np.float32), np.array([9, 6], np.int32)),
    "n_is_0": lambda: (RNG.normal(size=(2, 6, 4)).astype(np.float32), np.array([0, 0], np.int32)),
    "n_is_1": lambda: (levels((3, 8, 4), 2), np.array([1, 1, 1], np.int32)),
    "n_close_to_q": lambda: (levels((3, 8, 9), 3), np.array([7, 8, 9], np.int32)),
    "n_above_q": lambda: (levels((5, 5, 8), 3), np.array([8, 6, 5, 3, 0], np.int32)),
    "padding_garbage": lambda: (lambda nv: (garbage_padding(levels((4, 10, 8), 3), nv), nv))(
        np.array([3, 0, 8, 5], np.int32)),
    "non_finite": lambda: (non_finite((4, 7, 6)), np.array([6, 5, 2, 6], np.int32)),
    "all_nan": lambda: (np.full((2, 5, 4), np.nan, np.float32), np.array([4, 2], np.int32)),
    "batch_mixed": lambda: (levels((8, 12, 10), 5, 0.25), np.array([0, 1, 10, 3, 7, 10, 2, 9], np.int32)),
    "realistic": lambda: (RNG.uniform(-2, 8, (14, 900, 40)).astype(np.float32),
                          RNG.integers(0, 41, 14).astype(np.int32)),
    "realistic_ties": lambda: (levels((14, 900, 40), 6, 0.5), RNG.integers(0, 41, 14).astype(np.int32)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_scipy(mode, kernel, case):
    cost, num_valid = CASES[case]()
    out = kernel(Tensor(cost), Tensor(num_valid)).asnumpy()
    assert out.dtype == np.int32 and out.shape == (cost.shape[0], cost.shape[2])
    np.testing.assert_array_equal(out, assign_queries(cost, num_valid))


@pytest.mark.parametrize("rows,cols", [(6, 6), (9, 4), (3, 9), (12, 12)])
def test_matches_scipy_on_many_tie_heavy_matrices(mode, kernel, rows, cols):
    """600 small matrices per shape, 2-4 cost levels, random GT counts: one batch, one call."""
    n = 600
    count = RNG.integers(2, 5, (n, 1, 1))
    cost = np.floor(RNG.random((n, rows, cols)) * count).astype(np.float32)
    cost[::7] = 1.0  # some all-equal ones
    num_valid = RNG.integers(0, cols + 1, n).astype(np.int32)
    np.testing.assert_array_equal(kernel(Tensor(cost), Tensor(num_valid)).asnumpy(), assign_queries(cost, num_valid))


def test_num_valid_outside_range_is_clamped(mode, kernel):
    """Documented behaviour: num_valid < 0 means no GT, num_valid > M means all M columns."""
    cost = levels((3, 6, 4), 3)
    num_valid = np.array([-3, 9, 2], np.int32)
    out = kernel(Tensor(cost), Tensor(num_valid)).asnumpy()
    np.testing.assert_array_equal(out, assign_queries(cost, np.clip(num_valid, 0, 4)))


def test_int64_counts_and_float16_costs_are_cast(mode, kernel):
    cost = levels((2, 5, 3), 4, 0.5)
    num_valid = np.array([3, 2], np.int64)
    out = kernel(Tensor(cost.astype(np.float16)), Tensor(num_valid)).asnumpy()
    np.testing.assert_array_equal(out, assign_queries(cost, num_valid))


# ---------------------------------------------------------------- the C ABI, without MindSpore

def call_abi(library, cost, num_valid, out_shape, dtypes=("float32", "int32", "int32")):
    """Calls LinearSumAssignment like MindSpore's AOT loader does; returns (status, output)."""
    fn = ctypes.CDLL(library).LinearSumAssignment
    fn.restype = ctypes.c_int
    out = np.full(out_shape, 7, np.int32)
    arrays = [np.ascontiguousarray(cost), np.ascontiguousarray(num_valid), out]
    params = (ctypes.c_void_p * 3)(*[a.ctypes.data for a in arrays])
    ndims = (ctypes.c_int * 3)(*[a.ndim for a in arrays])
    shape_arrays = [(ctypes.c_int64 * max(a.ndim, 1))(*a.shape) for a in arrays]
    shapes = (ctypes.POINTER(ctypes.c_int64) * 3)(*[ctypes.cast(s, ctypes.POINTER(ctypes.c_int64))
                                                    for s in shape_arrays])
    types = (ctypes.c_char_p * 3)(*[t.encode() for t in dtypes])
    return fn(3, params, ndims, shapes, types, None, None), out


def test_abi_rejects_bad_inputs(library):
    cost = levels((2, 4, 3), 3)
    num_valid = np.array([3, 1], np.int32)
    status, out = call_abi(library, cost, num_valid, (2, 3))
    assert status == 0
    np.testing.assert_array_equal(out, assign_queries(cost, num_valid))
    assert call_abi(library, cost, num_valid, (2, 3), ("float64", "int32", "int32"))[0] == 1
    assert call_abi(library, cost, num_valid, (2, 3), ("float32", "int64", "int32"))[0] == 1
    assert call_abi(library, cost[0], num_valid, (2, 3))[0] == 1  # rank 2 cost
    assert call_abi(library, cost, num_valid, (2, 4))[0] == 2  # output columns != M
    assert call_abi(library, cost, num_valid[:1], (2, 3))[0] == 2  # one count for two images


def test_abi_empty_shapes(library):
    status, out = call_abi(library, np.zeros((0, 4, 3), np.float32), np.zeros(0, np.int32), (0, 3))
    assert status == 0 and out.size == 0
    status, out = call_abi(library, np.zeros((2, 0, 3), np.float32), np.array([3, 2], np.int32), (2, 3))
    assert status == 0 and np.all(out == -1)  # no queries: nothing assigned
    status, out = call_abi(library, np.zeros((2, 4, 0), np.float32), np.array([1, 0], np.int32), (2, 0))
    assert status == 0
