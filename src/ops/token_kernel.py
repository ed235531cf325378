"""Sparse token gather/scatter as CPU AOT kernels (``token_ops_cpu.cpp``).

Drop-in replacements for ``src.layers.token_ops.RowGatherReference`` / ``RowScatterReference``
(same construct signatures and semantics), each an ``ops.Custom`` forward with an AOT backward
through ``bprop``. Built and cached together with the deformable attention kernel
(``src.ops.msda_kernel.library_path``).
"""
from mindspore import nn, ops

from .msda_kernel import check_available, library_path


def token_ops(so=None):
    """(row_gather, row_scatter) ``ops.Custom`` primitives with their AOT bprops."""
    so = so or library_path()
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
    """x (B,S,C) float32, idx (B,K) int32/int64 -> (B,K,C), out[b,k] = x[b, idx[b,k]]."""

    def __init__(self):
        super().__init__()
        check_available()
        self.op, _ = token_ops()

    def construct(self, x, idx):
        return self.op(x, idx)


class RowScatterKernel(nn.Cell):
    """out = x; out[b, idx[b,k]] = rows[b,k] for k < count[b] (indices of one image distinct)."""

    def __init__(self):
        super().__init__()
        check_available()
        _, self.op = token_ops()

    def construct(self, x, idx, rows, count):
        return self.op(x, idx, rows, count)

