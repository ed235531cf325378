"""Sparse token gather/scatter used by the Focus-DETR encoder.

``build_token_ops`` is the dispatch point; the reference versions here use ``gather_rows`` and
``ops.tensor_scatter_update`` (both differentiable).
"""
import mindspore as ms
from mindspore import nn, ops

from .compile_time import arange_along


def gather_rows(x, idx):
    """x (B,S,...), idx (B,K) int -> (B,K,...), out[b,k] = x[b, idx[b,k]]: one gather from the
    batch flattened to B*S rows. Not ``ops.gather(x, idx, 1, batch_dims=1)``: MindSpore 2.10's ONNX
    exporter drops ``batch_dims`` (the Gather it writes takes every image's rows for every image)."""
    bsz, rows = x.shape[0], x.shape[1]
    return ops.gather(x.reshape((bsz * rows,) + x.shape[2:]), flat_row_indices(idx, rows), 0)


def flat_row_indices(idx, rows):
    """idx (B,...) rows of each image's ``rows`` -> the same rows of the batch flattened to B*rows."""
    bsz = idx.shape[0]
    return idx + arange_along(bsz, idx.dtype, 0, idx.ndim) * rows


class RowGatherReference(nn.Cell):
    """x (B,S,C), idx (B,K) int -> (B,K,C) with out[b,k] = x[b, idx[b,k]]."""

    def construct(self, x, idx):
        return gather_rows(x, idx)


class RowScatterReference(nn.Cell):
    """Overwrite rows: out = x; out[b, idx[b,k]] = rows[b,k] for k < count[b].

    Indices of one image must be distinct (they come from top-k). Rows k >= count[b] leave
    x unchanged, which is how the official encoder writes back only the first
    ``focus_token_nums[b]`` rows of a selection.
    """

    def __init__(self):
        super().__init__()
        self.gather = RowGatherReference()

    def construct(self, x, idx, rows, count):
        bsz, k = idx.shape
        keep = arange_along(k, ms.int32, 1, 2) < count.astype(ms.int32)[:, None]
        rows = ops.where(keep[..., None], rows, self.gather(x, idx))
        batch = ops.broadcast_to(arange_along(bsz, idx.dtype, 0, 2), (bsz, k))
        return ops.tensor_scatter_update(x, ops.stack((batch, idx), -1), rows)


def build_token_ops(impl="reference"):
    """Return (row_gather, row_scatter) Cells for ``impl``: 'reference', 'kernel' (AOT C++ kernels,
    ``src.ops``; an error where they cannot be built or run) or 'auto' (the kernels where
    available, else the reference after one logged warning)."""
    if impl == "reference":
        return RowGatherReference(), RowScatterReference()
    if impl in ("kernel", "auto"):
        from ..ops import token_ops_or_none  # lazy: compiles the kernels on first use only

        cells = token_ops_or_none(required=impl == "kernel", fallback="reference")
        return cells if cells is not None else (RowGatherReference(), RowScatterReference())
    raise ValueError(f"unknown token gather/scatter implementation {impl!r}")
