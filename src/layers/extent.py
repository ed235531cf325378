"""The official extent inside a static canvas.

Graph mode pads every batch to a static canvas (H, W); the official model pads a batch only
to its own extent: the batch maximum in training, the image itself at inference (its batch
size 1). Cells that read beyond the image (convolutions at the border, GroupNorm statistics,
means over a level, map-size dependent resizes, top-k over tokens) take the extent as a
(B, 2) int32 tensor [h, w] in cells of the map they work on and exclude everything outside
it, so a larger canvas gives the official numbers. ``None`` means the canvas is the extent.
"""
import mindspore as ms
from mindspore import ops

from .compile_time import arange_along
from .masking import logical_not, masked_fill


def extent_of(image_sizes, training):
    """(B,2) extent in pixels: the batch maximum in training, each image at inference."""
    sizes = image_sizes.astype(ms.int32)
    if training:
        return ops.broadcast_to(ops.amax(sizes, 0, keepdims=True), sizes.shape)
    return sizes


def downsampled(extent, stride):
    """Extent on a map of ``stride`` (every stride-2 layer rounds up, as the backbone does)."""
    if extent is None:
        return None
    return (extent + (stride - 1)) // stride


def inside(extent, height, width):
    """(B,h,w) bool: cells of an (h, w) map that lie inside the (B,2) extent."""
    rows = arange_along(height, ms.int32, 1, 3) < extent[:, 0, None, None]
    cols = arange_along(width, ms.int32, 2, 3) < extent[:, 1, None, None]
    shape = (extent.shape[0], height, width)  # broadcast explicitly (elementwise.py)
    return ops.logical_and(ops.broadcast_to(rows, shape), ops.broadcast_to(cols, shape))


def keep_inside(x, extent):
    """(B,C,h,w) maps with every cell outside the extent set to 0, so that a following
    convolution or (post-ReLU) max-pool sees the zero border of an extent-sized map."""
    if extent is None:
        return x
    return masked_fill(x, logical_not(inside(extent, x.shape[2], x.shape[3]))[:, None], 0.0)


def nearest_source(extent_len, map_len, size):
    """(B,size) source index of torch's legacy 'nearest' resize from ``extent_len`` (B,) input
    cells to ``map_len`` (B,) output cells: min(floor(i * float32(in/out)), in - 1) (ATen's rule;
    its equal-size and exact-2x shortcuts give the same indices)."""
    scale = extent_len.astype(ms.float32) / map_len.astype(ms.float32)
    i = arange_along(size, ms.float32, 1, 2)
    idx = ops.floor(i * scale[:, None]).astype(ms.int32)
    return ops.minimum(idx, (extent_len - 1)[:, None])


def masked_mean(x, weights, axis, count=None):
    """Mean of x over ``axis`` where ``weights`` (0/1, broadcast to x explicitly) are 1; ``count``,
    where given, is their number (the sum over ``axis``), known from a smaller mask."""
    weights = ops.broadcast_to(weights, x.shape)
    if count is None:
        count = weights.sum(axis, keepdims=True)
    return (x * weights).sum(axis, keepdims=True) / count


def smallest(x):
    """The minimum of all of x, as -max(-x): MindSpore 2.10's ONNX exporter has no ReduceMin
    (``ops.amin``), and ``ops.min`` (ArgMinWithValue) differentiates into InplaceScatterSrc, which
    only Ascend has. Negation is exact, and ReduceMax's gradient, like ReduceMin's, is shared by
    the tied extremes."""
    return -ops.amax(-x)


def rank_last_outside(scores, in_extent):
    """(B,S) scores with the tokens outside the extent below every token inside it, so that a
    top-k takes them last. Finite, not -inf: the OESM multiplies the foreground score by a class
    score, whose gradient a -inf would make NaN."""
    low = smallest(ops.where(in_extent, scores, float("inf")))
    return ops.where(in_extent, scores, low - ops.abs(low) - 1.0)
