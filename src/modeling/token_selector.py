"""Focus-DETR's foreground token selector: scores every multi-scale token top-down across
levels, then fixes the per-layer token budget of the encoder cascade.

Static-shape scheme (see README, "Static shapes"): the official code calls ``topk`` with
sizes computed from the data (valid tokens per image, their batch maximum, the cascade
ratios). All six selections are sorted prefixes of one score, so we take a single top-K_max
with K_max = floor(S*rho)+1 -- the largest budget any mask can produce for this canvas -- and
give layer l the first R_l = trunc(c_l*K_max) rows plus the data-dependent count
k_l = trunc(c_l*F) as a tensor. Rows >= k_l are masked downstream. When the largest image
fills the canvas k_l == R_l and nothing is masked.
"""
import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from ..layers.compile_time import arange_along
from ..layers.extent import rank_last_outside, smallest
from ..layers.levels import level_starts
from ..layers.masking import logical_not
from ..layers.portable_backward import concat
from ..layers.token_ops import gather_rows
from .mask_predictor import MaskPredictor

# The selector's result is one tuple whose positions are named here. Not a NamedTuple: graph mode
# (MindSpore 2.10) reads a NamedTuple's fields through its Python fallback (PyExecute), which
# stops the gradient at every field (measured: zero gradients in graph mode, the right ones in
# PyNative).
RAW_SCORES, SELECTION_SCORES, VALID_TOKENS, FOCUS_TOKENS, LAYER_K, FOREGROUND_INDS, LAYER_ROWS = range(7)

@ms.constexpr
def static_layer_rows(num_tokens, focus_rho, cascade):
    """K_max = trunc(S*rho)+1 (at most S) and R_l = trunc(float32(c_l) * K_max), in float32 as the
    official budget, so that R_l is exactly k_l when the largest image fills the canvas."""
    k_max = min(int(np.float32(num_tokens) * np.float32(focus_rho)) + 1, num_tokens)
    return k_max, tuple(int(np.float32(c) * np.float32(k_max)) for c in cascade)


def aligned_axis(in_len, out_len, size):
    """Source cells and weights of torch's bilinear ``align_corners=True`` resize along one axis
    from ``in_len`` to ``out_len`` (B,) cells, for the ``size`` cells of the output map: index 0,
    index 1 and the weight of index 1 (ATen's CPU rule: src = float32((in-1)/(out-1)) * i)."""
    in_f = (in_len - 1).astype(ms.float32)
    out_f = (out_len - 1).astype(ms.float32)
    scale = ops.where(out_len > 1, in_f / ops.maximum(out_f, 1.0), 0.0)
    real = scale[:, None] * arange_along(size, ms.float32, 1, 2)
    last = (in_len - 1)[:, None]
    index0 = ops.minimum(ops.floor(real).astype(ms.int32), last)  # the clamp only acts outside the extent
    index1 = index0 + (index0 < last).astype(ms.int32)
    weight1 = ops.clamp(real - index0.astype(ms.float32), 0.0, 1.0)
    return index0, index1, weight1


def resize_aligned(x, in_cells, out_cells, out_hw):
    """(B,h',w') maps -> (B, h*w) bilinear ``align_corners=True`` resize of each map's extent
    ``in_cells`` (B,2) to ``out_cells`` (B,2), laid out on the (h, w) canvas map row-major;
    cells outside the output extent hold clamped copies (they are never used)."""
    bsz, _, in_w = x.shape
    height, width = out_hw
    r0, r1, wr = aligned_axis(in_cells[:, 0], out_cells[:, 0], height)
    c0, c1, wc = aligned_axis(in_cells[:, 1], out_cells[:, 1], width)
    flat = x.reshape(bsz, -1)

    def pick(rows, cols):
        index = (rows[:, :, None] * in_w + cols[:, None, :]).reshape(bsz, -1)
        return gather_rows(flat, index).reshape(bsz, height, width)

    wr = wr[:, :, None]
    wc = wc[:, None, :]
    top = pick(r0, c0) * (1.0 - wc) + pick(r0, c1) * wc
    bottom = pick(r1, c0) * (1.0 - wc) + pick(r1, c1) * wc
    return (top * (1.0 - wr) + bottom * wr).reshape(bsz, -1)


class ForegroundTokenSelector(nn.Cell):
    def __init__(self, embed_dim=256, num_levels=4, focus_rho=0.5,
                 cascade=(1.0, 0.8, 0.6, 0.6, 0.4, 0.2), gelu_impl="native", layer_norm_impl="native"):
        super().__init__()
        self.num_levels = num_levels
        self.focus_rho = np.float32(focus_rho)
        self.cascade_np = np.asarray(cascade, np.float32)
        self.cascade = Tensor(self.cascade_np)
        self.mask_predictor = MaskPredictor(embed_dim, embed_dim, gelu_impl, layer_norm_impl)
        self.alpha = Parameter(Tensor(np.random.uniform(-0.3, 0.3, num_levels - 1).astype(np.float32)))

    def layer_rows(self, num_tokens):
        """Static (K_max, (R_0..R_{L-1})) for a canvas with ``num_tokens`` tokens."""
        return static_layer_rows(num_tokens, float(self.focus_rho), tuple(float(c) for c in self.cascade_np))

    def score(self, tokens, mask_flatten, spatial_shapes, level_extents=None, in_extent=None):
        """Coarse-to-fine foreground logits.

        tokens (B,S,C): ``enc_output_norm(enc_output(src + pos))`` with invalid rows zeroed.
        ``level_extents``: the official extent of every level ((B,2) each) and ``in_extent`` (B,S)
        bool the tokens inside it, or both None (the canvas is the extent).
        Returns the raw logits (B,S,1) (what the foreground loss sees) and the selection
        score (B,S), where padded tokens take the minimum over the whole batch (of the tokens
        inside the extent) and tokens outside the extent rank below every other.
        """
        bsz = tokens.shape[0]
        starts = level_starts(spatial_shapes)
        level_weights = [None] * self.num_levels
        if in_extent is not None:
            weights = in_extent.astype(ms.float32)[..., None]
            level_weights = [weights[:, starts[lvl]:starts[lvl + 1]] for lvl in range(self.num_levels)]
        per_level = [None] * self.num_levels
        top = self.num_levels - 1
        h, w = spatial_shapes[top]
        prev = self.mask_predictor(tokens[:, starts[top]:starts[top + 1]], level_weights[top]).reshape(bsz, h, w)
        per_level[top] = prev
        for i in range(1, self.num_levels):
            lvl = top - i
            h, w = spatial_shapes[lvl]
            x = tokens[:, starts[lvl]:starts[lvl + 1]]
            if level_extents is None:
                up = ops.interpolate(prev[:, None], size=(h, w), mode="bilinear", align_corners=True)
            else:
                up = resize_aligned(prev, level_extents[lvl + 1], level_extents[lvl], (h, w))
            x = x + x * ops.broadcast_to(up.reshape(bsz, h * w, 1), x.shape) * self.alpha[i - 1]
            prev = self.mask_predictor(x, level_weights[lvl]).reshape(bsz, h, w)
            per_level[lvl] = prev
        raw = concat([s.reshape(bsz, -1, 1) for s in per_level], 1)
        scores = raw.squeeze(-1)
        if in_extent is None:
            return raw, ops.where(mask_flatten, smallest(raw), scores)
        low = smallest(ops.where(in_extent, scores, float("inf")))
        return raw, rank_last_outside(ops.where(mask_flatten, low, scores), in_extent)

    def budget(self, mask_flatten, per_image=False):
        """Per-image focus_token_nums = trunc(V_b*rho)+1 and the per-layer counts
        k_l = trunc(float32(c_l) * F) as (B,L) int32, F the batch maximum of focus_token_nums
        (one batch of the official model) or, with ``per_image``, each image's own (each image
        its own batch, as the official inference)."""
        valid = logical_not(mask_flatten).astype(ms.float32).sum(-1)
        focus = ops.floor(valid * self.focus_rho).astype(ms.int32) + 1
        top = focus if per_image else ops.broadcast_to(ops.amax(focus), focus.shape)
        layer_k = ops.floor(self.cascade[None, :] * top.astype(ms.float32)[:, None]).astype(ms.int32)
        return valid.astype(ms.int32), focus, layer_k

    def construct(self, tokens, mask_flatten, spatial_shapes, level_extents=None, in_extent=None, per_image=False):
        """The tuple indexed by ``RAW_SCORES`` .. ``LAYER_ROWS``: raw logits (B,S,1), selection
        score (B,S), valid and focus token counts (B,), per-layer counts k_l (B,L), the foreground
        ranking's first K_max token ids (B,K_max) and the static rows R_l (Python ints)."""
        raw, selection = self.score(tokens, mask_flatten, spatial_shapes, level_extents, in_extent)
        valid, focus, layer_k = self.budget(mask_flatten, per_image)
        k_max, layer_rows = self.layer_rows(selection.shape[1])
        _, inds = ops.topk(selection, k_max, dim=1)
        return raw, selection, valid, focus, layer_k, inds, layer_rows
