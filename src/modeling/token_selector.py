"""Focus-DETR's foreground token selector: scores every multi-scale token top-down across
levels, then fixes the per-layer token budget of the encoder cascade.

Static-shape scheme (see README, "Static shapes"): the official code calls ``topk`` with
sizes computed from the data (valid tokens per image, their batch maximum, the cascade
ratios). All six selections are sorted prefixes of one score, so we take a single top-K_max
with K_max = floor(S*rho)+1 -- the largest budget any mask can produce for this canvas -- and
give layer l the first R_l = trunc(c_l*K_max) rows plus the data-dependent count
k_l = trunc(c_l*F) as a tensor. Rows >= k_l are masked downstream. In eval (no padding
mask) k_l == R_l and nothing is masked.
"""
import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from ..layers.portable_backward import concat
from .mask_predictor import MaskPredictor


@ms.constexpr
def static_layer_rows(num_tokens, focus_rho, cascade):
    """K_max = trunc(S*rho)+1 (at most S) and R_l = trunc(float32(c_l) * K_max), in float32 as the
    official budget, so that R_l is exactly k_l when the largest image fills the canvas."""
    k_max = min(int(np.float32(num_tokens) * np.float32(focus_rho)) + 1, num_tokens)
    return k_max, tuple(int(np.float32(c) * np.float32(k_max)) for c in cascade)


class ForegroundTokenSelector(nn.Cell):
    def __init__(self, embed_dim=256, num_levels=4, focus_rho=0.5,
                 cascade=(1.0, 0.8, 0.6, 0.6, 0.4, 0.2)):
        super().__init__()
        self.num_levels = num_levels
        self.focus_rho = np.float32(focus_rho)
        self.cascade_np = np.asarray(cascade, np.float32)
        self.cascade = Tensor(self.cascade_np)
        self.mask_predictor = MaskPredictor(embed_dim, embed_dim)
        self.alpha = Parameter(Tensor(np.random.uniform(-0.3, 0.3, num_levels - 1).astype(np.float32)))

    def layer_rows(self, num_tokens):
        """Static (K_max, (R_0..R_5)) for a canvas with ``num_tokens`` tokens."""
        return static_layer_rows(num_tokens, float(self.focus_rho), tuple(float(c) for c in self.cascade_np))

    def score(self, tokens, mask_flatten, spatial_shapes):
        """Coarse-to-fine foreground logits.

        tokens (B,S,C): ``enc_output_norm(enc_output(src + pos))`` with invalid rows zeroed.
        Returns the raw logits (B,S,1) (what the foreground loss sees) and the selection
        score (B,S), where padded tokens take the minimum over the whole batch.
        """
        bsz = tokens.shape[0]
        starts = [0]
        for h, w in spatial_shapes:
            starts.append(starts[-1] + h * w)
        per_level = [None] * self.num_levels
        top = self.num_levels - 1
        h, w = spatial_shapes[top]
        prev = self.mask_predictor(tokens[:, starts[top]:starts[top + 1]]).reshape(bsz, 1, h, w)
        per_level[top] = prev
        for i in range(1, self.num_levels):
            lvl = top - i
            h, w = spatial_shapes[lvl]
            x = tokens[:, starts[lvl]:starts[lvl + 1]]
            up = ops.interpolate(prev, size=(h, w), mode="bilinear", align_corners=True)
            x = x + x * up.reshape(bsz, h * w, 1) * self.alpha[i - 1]
            prev = self.mask_predictor(x).reshape(bsz, 1, h, w)
            per_level[lvl] = prev
        raw = concat([s.reshape(bsz, -1, 1) for s in per_level], 1)
        selection = ops.where(mask_flatten, ops.amin(raw), raw.squeeze(-1))
        return raw, selection

    def budget(self, mask_flatten):
        """Per-image focus_token_nums = trunc(V_b*rho)+1 and the per-layer counts
        k_l = trunc(float32(c_l) * max_b focus_token_nums) as int32 tensors."""
        valid = ops.logical_not(mask_flatten).astype(ms.float32).sum(-1)
        focus = ops.floor(valid * self.focus_rho).astype(ms.int32) + 1
        top = ops.amax(focus).astype(ms.float32)
        layer_k = ops.floor(self.cascade * top).astype(ms.int32)
        return valid.astype(ms.int32), focus, layer_k

    def construct(self, tokens, mask_flatten, spatial_shapes):
        raw, selection = self.score(tokens, mask_flatten, spatial_shapes)
        valid, focus, layer_k = self.budget(mask_flatten)
        k_max, _ = self.layer_rows(selection.shape[1])
        _, inds = ops.topk(selection, k_max, dim=1)
        return raw, selection, valid, focus, layer_k, inds
