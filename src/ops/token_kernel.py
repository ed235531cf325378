"""Sparse token gather/scatter as AOT kernels (``token_ops_cpu.cpp``, ``token_ops_cuda.cu``).

Drop-in replacements for ``src.layers.token_ops.RowGatherReference`` / ``RowScatterReference``
(same construct signatures and semantics), each an ``ops.Custom`` forward with an AOT backward
through ``bprop``. Built and cached together with the deformable attention kernel
(``src.ops.build.library_path``).
"""
import mindspore as ms
from mindspore import nn, ops

from .build import current_device, library_path


def token_ops(device="CPU"):
    """(row_gather, row_scatter) ``ops.Custom`` primitives on ``device`` with their AOT bprops."""
    so = library_path(device)
    gather_grad = ops.Custom(f"{so}:RowGatherGrad", out_shape=lambda x, i, d: x, out_dtype=lambda x, i, d: x,
                             func_type="aot")
    scatter_grad = ops.Custom(f"{so}:RowScatterGrad", out_shape=lambda x, i, r, c, d: (x, r),
                              out_dtype=lambda x, i, r, c, d: (x, r), func_type="aot")

    def gather_bprop(x, idx, out, dout):
        return gather_grad(x, idx, dout), ops.zeros_like(idx)

    def scatter_bprop(x, idx, rows, count, out, dout):
        grad_x, grad_rows = scatter_grad(x, idx, rows, count, dout)
        return grad_x, ops.zeros_like(idx), grad_rows, ops.zeros_like(count)

    # lambdas (not C++ infer) because the index/count dtypes vary (int32 from topk, int64 from numpy)
    row_gather = ops.Custom(f"{so}:RowGather", out_shape=lambda x, i: [x[0], i[1], x[2]],
                            out_dtype=lambda x, i: x, func_type="aot", bprop=gather_bprop)
    row_scatter = ops.Custom(f"{so}:RowScatter", out_shape=lambda x, i, r, c: x,
                             out_dtype=lambda x, i, r, c: x, func_type="aot", bprop=scatter_bprop)
    return row_gather, row_scatter


class RowGatherKernel(nn.Cell):
    """x (B,S,C), idx (B,K) int32/int64 -> (B,K,C), out[b,k] = x[b, idx[b,k]].

    The kernel is float32; other dtypes (float16 training) are cast around it."""

    def __init__(self):
        super().__init__()
        self.op, _ = token_ops(current_device())

    def construct(self, x, idx):
        return ops.cast(self.op(ops.cast(x, ms.float32), idx), x.dtype)


class RowScatterKernel(nn.Cell):
    """out = x; out[b, idx[b,k]] = rows[b,k] for k < count[b] (indices of one image distinct).

    The kernel is float32; other dtypes are cast around it (the result has x's dtype)."""

    def __init__(self):
        super().__init__()
        _, self.op = token_ops(current_device())

    def construct(self, x, idx, rows, count):
        out = self.op(ops.cast(x, ms.float32), idx, ops.cast(rows, ms.float32), count)
        return ops.cast(out, x.dtype)

