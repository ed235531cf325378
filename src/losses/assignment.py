"""The linear sum assignment inside the Hungarian matcher: one dispatch point for every device.

Every backend takes ``cost`` (N,Q,M) float32 (finite: the matcher replaces non-finite entries
first) and ``num_valid`` (N,) int32 (the valid GT of image i are its first ``num_valid[i]``
columns) and returns (N,M) int32: the query assigned to each GT, -1 for padded GT and for GT
left over when M > Q. All of them give scipy's assignment exactly (ties included):

* ``pyfunc``: scipy through ``ops.Custom(func_type="pyfunc")``, the reference the others are
  tested against. MindSpore runs pyfunc custom operators on CPU only, so a graph holding it
  cannot be compiled for Ascend or GPU.
* ``builtin``: ``mindspore.scipy.optimize.linear_sum_assignment`` (documented for Ascend and
  CPU; no GPU kernel), one call per image inside the graph.
* ``kernel``: the project's batched AOT operator (``src.ops.LinearSumAssignmentKernel``; C++ on
  CPU, on GPU the costs are copied to the host on the kernel's stream and solved there).
* ``auto``: ``kernel`` on CPU and GPU, ``builtin`` on Ascend (README, "Devices").
"""
import logging

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.scipy.optimize import linear_sum_assignment as builtin_linear_sum_assignment
from scipy.optimize import linear_sum_assignment

from ..layers.compile_time import arange_along

log = logging.getLogger("focus_detr.matcher")
IMPLS = ("auto", "builtin", "kernel", "pyfunc")


def assign_queries(cost, num_valid):
    """Host reference (numpy/scipy) of the assignment contract above."""
    matched = np.full((cost.shape[0], cost.shape[2]), -1, np.int32)
    cost = np.nan_to_num(cost, nan=1e8, posinf=1e8, neginf=-1e8)
    for i, n in enumerate(np.asarray(num_valid)):
        if n > 0:
            rows, cols = linear_sum_assignment(cost[i, :, :n])
            matched[i, cols] = rows
    return matched


class AssignmentPyfunc(nn.Cell):
    """scipy in a pyfunc node (CPU only): the reference."""

    def __init__(self):
        super().__init__()
        self.op = ops.Custom(assign_queries, out_shape=lambda cost, n: (cost[0], cost[2]), out_dtype=ms.int32,
                             func_type="pyfunc")

    def construct(self, cost, num_valid):
        return self.op(cost, num_valid)


class AssignmentBuiltin(nn.Cell):
    """MindSpore's built-in solver, one image at a time (it takes 2-D costs only); its
    ``dimension_limit`` hides the padded GT columns."""

    def construct(self, cost, num_valid):
        num_gt = cost.shape[2]
        columns = arange_along(num_gt, ms.int32)
        matched = ()
        for i in range(cost.shape[0]):
            # the solver refuses dimension_limit 0: solve one column and drop it below
            limit = ops.maximum(num_valid[i], 1).astype(ms.int64)
            rows, cols = builtin_linear_sum_assignment(cost[i], False, limit)
            # (K,) row/col pairs padded with -1 -> the row of every column, -1 where none
            hit = (cols.astype(ms.int32)[:, None] == columns[None, :]).astype(ms.int32)
            matched += ((hit * (rows.astype(ms.int32)[:, None] + 1)).sum(0) - 1,)
        return ops.where(columns[None, :] < num_valid[:, None], ops.stack(matched, 0), -1)


def build_assignment(impl="auto"):
    """The assignment backend named by ``kernels.matcher`` for the current device."""
    from ..ops import assignment_kernel_or_none, current_device  # lazy: builds the kernels on first use

    if impl not in IMPLS:
        raise ValueError(f"kernels.matcher: unknown assignment implementation {impl!r} ({' | '.join(IMPLS)})")
    device = current_device()
    if impl == "pyfunc":
        return AssignmentPyfunc()
    if impl == "builtin":
        return AssignmentBuiltin()
    if impl == "kernel" or device == "GPU":  # no other backend compiles for GPU: the kernel or an error
        cell = assignment_kernel_or_none(required=True)
    elif device == "Ascend":
        cell = AssignmentBuiltin()
    else:
        cell = assignment_kernel_or_none(required=False, fallback="builtin") or AssignmentBuiltin()
    if impl == "auto":
        log.info("matcher assignment on %s: %s", device, type(cell).__name__)
    return cell
