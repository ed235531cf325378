"""Multi-scale deformable attention (Deformable-DETR / detrex ``MultiScaleDeformableAttention``).

The sampling core -- bilinear sampling of every level at the given locations, weighted sum over
levels and points -- is the expensive part. ``build_msda_core`` is the single dispatch point that
chooses its implementation; ``MSDeformAttnCoreReference`` below is the pure-MindSpore one that
every kernel is tested against.
"""
import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import XavierUniform, initializer

from .dense import Dense
from .elementwise import divide
from .levels import level_starts
from .masking import zero_masked_rows
from .token_ops import flat_row_indices


class MSDeformAttnCoreReference(nn.Cell):
    """Pure-MindSpore sampling core built on ``ops.grid_sample``.

    value (B,S,M,D); spatial_shapes: static tuple of (h,w) per level, levels concatenated
    row-major in S; sampling_locations (B,Q,M,L,P,2) as (x,y) in [0,1] of each level map
    (pixel i has its centre at (i+0.5)/w); attention_weights (B,Q,M,L,P). Returns (B,Q,M*D),
    head-major channels. Bilinear, zero padding outside the map, align_corners=False.
    """

    def construct(self, value, spatial_shapes, sampling_locations, attention_weights):
        bsz, _, heads, dim = value.shape
        _, nq, _, levels, points, _ = sampling_locations.shape
        grids = sampling_locations * 2.0 - 1.0
        sampled = ()
        starts = level_starts(spatial_shapes)
        for lvl in range(levels):
            h, w = spatial_shapes[lvl]
            v = value[:, starts[lvl]:starts[lvl + 1]].transpose(0, 2, 3, 1).reshape(bsz * heads, dim, h, w)
            g = grids[:, :, :, lvl].transpose(0, 2, 1, 3, 4).reshape(bsz * heads, nq, points, 2)
            sampled += (ops.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False),)
        stacked = ops.stack(sampled, -2).reshape(bsz * heads, dim, nq, levels * points)
        weights = attention_weights.transpose(0, 2, 1, 3, 4).reshape(bsz * heads, 1, nq, levels * points)
        out = (stacked * weights).sum(-1).reshape(bsz, heads * dim, nq)
        return out.transpose(0, 2, 1)


@ms.constexpr
def level_geometry(spatial_shapes):
    """(L,) float32 widths and heights and (L,) int32 start tokens of the levels."""
    widths = np.array([w for _, w in spatial_shapes], np.float32)
    heights = np.array([h for h, _ in spatial_shapes], np.float32)
    starts = np.array(level_starts(spatial_shapes)[:-1], np.int32)
    return Tensor(widths), Tensor(heights), Tensor(starts)


_BATCH_MATMUL = ops.BatchMatMul()
_BATCH_MATMUL_TA = ops.BatchMatMul(transpose_a=True)
_BATCH_MATMUL_TB = ops.BatchMatMul(transpose_b=True)
_GATHER = ops.Gather()
_SEGMENT_SUM = ops.UnsortedSegmentSum()


class WeightedSamples(nn.Cell):
    """out[b, q] = wts[b, q] @ rows[idx[b, q]]: rows (N, C), idx (B, Q*K) int rows, wts (B, Q, 1, K)
    -> (B, Q, 1, C). The gathered (B, Q, K, C) samples are the largest tensor of the deformable
    sampling (K = levels x points x 4 corners, 64 samples per query); differentiated by MindSpore
    the product's backward keeps them from the forward to the backward, for every layer. This
    backward gathers them again instead (one row gather, no arithmetic) and keeps only rows, idx
    and wts: d wts = dout @ samples^T, d rows = the rows of wts^T @ dout summed into their sources
    (the gather's own gradient, ``UnsortedSegmentSum``). Primitives only: MindSpore 2.10 fails to
    compile a ``bprop`` that calls a functional op its forward also calls ("func graph is empty")."""

    def construct(self, rows, idx, wts):
        bsz, nq, _, k = wts.shape
        return _BATCH_MATMUL(wts, _GATHER(rows, idx, 0).reshape(bsz, nq, k, rows.shape[-1]))

    def bprop(self, rows, idx, wts, out, dout):
        bsz, nq, _, k = wts.shape
        samples = _GATHER(rows, idx, 0).reshape(bsz, nq, k, rows.shape[-1])
        grad_samples = _BATCH_MATMUL_TA(wts, dout).reshape(bsz * nq * k, rows.shape[-1])
        grad_rows = _SEGMENT_SUM(grad_samples, idx.reshape(-1), rows.shape[0])
        return grad_rows, ops.zeros_like(idx), _BATCH_MATMUL_TB(dout, samples)


# stateless, shared, and outside the Cell trees: ``to_float`` casts a child Cell's inputs
# (src/engine/mixed_precision.py), and this one computes in the dtype it is given
_WEIGHTED_SAMPLES = WeightedSamples()


class MSDeformAttnCoreGather(nn.Cell):
    """The same sampling core as four-corner bilinear interpolation with ``ops.gather``.

    Same inputs, output and semantics as ``MSDeformAttnCoreReference`` (zero padding outside the
    map, align_corners=False). Its backward is a gather gradient (segment sum) instead of
    MindSpore's CPU ``GridSampler2DGrad``, which fails (``memcpy_s`` errno 34, wrong gradients)
    on training-size inputs and is slow. Gradients reach the sampling locations through the
    bilinear weights, as in grid_sample.
    """

    def construct(self, value, spatial_shapes, sampling_locations, attention_weights):
        bsz, _, heads, dim = value.shape
        _, nq, _, levels, points, _ = sampling_locations.shape
        widths, heights, starts = level_geometry(spatial_shapes)
        shape = (1, 1, 1, levels, 1)
        w, h = widths.reshape(shape), heights.reshape(shape)
        x = sampling_locations[..., 0] * w - 0.5
        y = sampling_locations[..., 1] * h - 0.5
        x0, y0 = ops.floor(x), ops.floor(y)
        fx, fy = x - x0, y - y0
        indices, weights = (), ()
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            xi, yi = x0 + dx, y0 + dy
            inside = ops.logical_and(ops.logical_and(xi >= 0, xi <= w - 1), ops.logical_and(yi >= 0, yi <= h - 1))
            corner = (fx if dx else 1.0 - fx) * (fy if dy else 1.0 - fy)
            weights += (ops.where(inside, corner * attention_weights, 0.0),)
            # maximum, not a clamp without an upper bound: MindSpore 2.10's ONNX exporter refuses that
            flat = starts.reshape(shape) + (ops.maximum(yi, 0.0) * w + ops.maximum(xi, 0.0)).astype(ms.int32)
            indices += (ops.where(inside, flat, 0),)
        # (B,Q,M,L,P,4) -> (B*M, Q*L*P*4): one gather per head over its value rows
        idx = ops.stack(indices, -1).transpose(0, 2, 1, 3, 4, 5).reshape(bsz * heads, nq * levels * points * 4)
        wts = ops.stack(weights, -1).transpose(0, 2, 1, 3, 4, 5).reshape(bsz * heads, nq, 1, levels * points * 4)
        v = value.transpose(0, 2, 1, 3).reshape(bsz * heads, -1, dim)
        # the weighted sum over the samples as a product, not (samples * wts).sum(2): the implicit
        # broadcast of wts along the channels kept two 8-byte indices per sample for the graph's
        # life (src/tools/graph_memory.py)
        out = _WEIGHTED_SAMPLES(v.reshape(-1, dim), flat_row_indices(idx, v.shape[1]), wts)
        out = out.reshape(bsz, heads, nq, dim)
        return out.transpose(0, 2, 1, 3).reshape(bsz, nq, heads * dim)


@ms.constexpr
def level_size_normalizer(spatial_shapes):
    """(L,2) [w, h] per level: encoder offsets are in pixels of each level."""
    return Tensor(np.array([[w, h] for h, w in spatial_shapes], np.float32))


def build_msda_core(impl="reference"):
    """The dispatch point for the deformable sampling core.

    ``impl``: 'reference' (pure MindSpore, ``grid_sample``), 'gather' (pure MindSpore, four-corner
    gather), 'kernel' (fused AOT C++ kernel, ``src.ops``; an error where it cannot be built or
    run), 'auto' (the kernel where available, else 'gather' after one logged warning: MindSpore's
    CPU grid_sample backward fails on training-size inputs, the gather core does not).
    """
    if impl == "reference":
        return MSDeformAttnCoreReference()
    if impl == "gather":
        return MSDeformAttnCoreGather()
    if impl in ("kernel", "auto"):
        from ..ops import msda_core_or_none  # lazy: compiles the kernel on first use only

        core = msda_core_or_none(required=impl == "kernel", fallback="gather")
        return core if core is not None else MSDeformAttnCoreGather()
    raise ValueError(f"unknown deformable attention implementation {impl!r}")


class MultiScaleDeformableAttention(nn.Cell):
    """Deformable attention block: projections, location computation, core, output projection.

    ``reference_points`` are (B,Q,L,2) points or (B,Q,L,4) boxes (cx,cy,w,h), normalized.
    ``value_mask`` (B,S) True = padding: those value rows are zeroed after projection.
    Returns ``query + output_proj(core)`` (dropout 0).
    """

    def __init__(self, embed_dim=256, num_heads=8, num_levels=4, num_points=4, impl="reference"):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.points = Tensor(np.float32(num_points))  # the divisor of box-relative offsets
        self.sampling_offsets = Dense(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = Dense(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = Dense(embed_dim, embed_dim)
        self.output_proj = Dense(embed_dim, embed_dim)
        self.core = build_msda_core(impl)
        self._init_weights()

    def _init_weights(self):
        m, lv, p = self.num_heads, self.num_levels, self.num_points
        self.sampling_offsets.weight.set_data(Tensor(np.zeros(self.sampling_offsets.weight.shape, np.float32)))
        thetas = np.arange(m, dtype=np.float32) * np.float32(2.0 * math.pi / m)
        grid = np.stack([np.cos(thetas), np.sin(thetas)], -1)
        grid = grid / np.abs(grid).max(-1, keepdims=True)
        scale = np.arange(1, p + 1, dtype=np.float32)[None, None, :, None]
        grid = np.tile(grid[:, None, None, :], (1, lv, p, 1)) * scale
        self.sampling_offsets.bias.set_data(Tensor(grid.reshape(-1).astype(np.float32)))
        for dense in (self.attention_weights,):
            dense.weight.set_data(Tensor(np.zeros(dense.weight.shape, np.float32)))
            dense.bias.set_data(Tensor(np.zeros(dense.bias.shape, np.float32)))
        for dense in (self.value_proj, self.output_proj):
            dense.weight.set_data(initializer(XavierUniform(), dense.weight.shape, ms.float32))
            dense.bias.set_data(Tensor(np.zeros(dense.bias.shape, np.float32)))

    def construct(self, query, query_pos, value, value_mask, reference_points, spatial_shapes):
        bsz, nq, _ = query.shape
        nv = value.shape[1]
        q = query + query_pos
        v = self.value_proj(value)
        if value_mask is not None:
            v = zero_masked_rows(v, value_mask)
        v = v.reshape(bsz, nv, self.num_heads, self.embed_dim // self.num_heads)
        offsets = self.sampling_offsets(q).reshape(
            bsz, nq, self.num_heads, self.num_levels, self.num_points, 2)
        weights = ops.softmax(
            self.attention_weights(q).reshape(bsz, nq, self.num_heads, self.num_levels * self.num_points), -1
        ).reshape(bsz, nq, self.num_heads, self.num_levels, self.num_points)
        # every operand broadcast explicitly, true division as RealDiv (src/layers/elementwise.py)
        shape = offsets.shape
        if reference_points.shape[-1] == 2:
            normalizer = level_size_normalizer(spatial_shapes)
            locations = (ops.broadcast_to(reference_points[:, :, None, :, None, :], shape)
                         + divide(offsets, normalizer[None, None, None, :, None, :]))
        else:
            scaled = divide(offsets, self.points) * ops.broadcast_to(
                reference_points[:, :, None, :, None, 2:], shape) * 0.5
            locations = ops.broadcast_to(reference_points[:, :, None, :, None, :2], shape) + scaled
        out = self.core(v, spatial_shapes, locations, weights)
        return query + self.output_proj(out)
