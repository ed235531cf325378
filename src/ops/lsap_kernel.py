"""Batched linear sum assignment (the Hungarian matcher's solve) as an AOT kernel
(``lsap_cpu.cpp``, ``lsap_cuda.cu``, solver ``lsap.h``).

Why it exists: scipy in a pyfunc node (the matcher's reference) runs on CPU only, and MindSpore's
built-in ``mindspore.scipy.optimize.linear_sum_assignment`` has no GPU kernel (and solves one
image per call). This operator solves the whole batch in one node on CPU and GPU (the GPU
library copies the costs to the host and solves there), with exactly scipy's assignment,
tie-breaking included, so targets and losses stay those of the official matcher.
"""
import mindspore as ms
from mindspore import nn, ops

from .build import current_device, library_path


class LinearSumAssignmentKernel(nn.Cell):
    """cost (N,Q,M) float, num_valid (N,) int -> matched (N,M) int32.

    For image i, scipy's ``linear_sum_assignment(cost[i, :, :n])`` with ``n = num_valid[i]``
    clamped to [0, M] (queries are rows, the first n GT are columns; NaN/+inf/-inf count as
    1e8/1e8/-1e8); ``matched[i, col]`` is the query assigned to GT ``col``, -1 for padded
    columns and for the GT left over when n > Q. Same as ``src.losses.assignment.assign_queries``.

    ``library``: the kernel library to load (default: the current device's, built on first use;
    the tests pass the host build of the CUDA source). No gradient: the output is integer and
    the cost enters through ``stop_gradient``.
    """

    def __init__(self, library=None):
        super().__init__()
        so = library if library is not None else library_path(current_device())
        # a lambda, not a C++ infer function: the shape is static wherever the matcher runs
        self.op = ops.Custom(f"{so}:LinearSumAssignment", out_shape=lambda cost, num_valid: [cost[0], cost[2]],
                             out_dtype=ms.int32, func_type="aot")

    def construct(self, cost, num_valid):
        cost = ops.stop_gradient(ops.cast(cost, ms.float32))
        return self.op(cost, ops.cast(num_valid, ms.int32))
