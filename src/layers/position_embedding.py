"""Sine position embeddings: the image one (per feature level, from its padding mask) and the
box one used for decoder query positions (detrex ``PositionEmbeddingSine`` / ``get_sine_pos_embed``)."""
import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from .masking import logical_not
from .portable_backward import concat


def _inverse_frequencies(num_feats, temperature):
    k = np.arange(num_feats, dtype=np.float32)
    return np.float32(temperature) ** (np.float32(2.0) * np.floor(k / np.float32(2.0)) / np.float32(num_feats))


def _inclusive_prefix(n):
    """(n, n) float32 U, U[j, i] = 1 where j <= i: a 0/1 map times U is its running count along
    the last axis, exactly (sums of integers below 2**24). A matmul instead of ``ops.cumsum``:
    MindSpore 2.10's ONNX exporter has no CumSum."""
    idx = ops.arange(n, dtype=ms.int32)
    return (idx[:, None] <= idx[None, :]).astype(ms.float32)


def _interleaved_sin_cos(x, dim_t, even):
    """x[..., None] / dim_t with sin on even and cos on odd channels (dim_t pairs are equal)."""
    v = x[..., None] / dim_t
    return ops.where(even, ops.sin(v), ops.cos(v))


class PositionEmbeddingSine(nn.Cell):
    """Normalized 2-D sine embedding of a padding mask (True = padding), (B,h,w) -> (B,2F,h,w).

    Channels 0..F-1 encode y, F..2F-1 encode x. ``temperature``/``offset`` differ between the
    official 12-epoch (10000, -0.5) and 24/36-epoch (20, 0.0) configs.
    """

    def __init__(self, num_pos_feats=128, temperature=10000, offset=0.0, normalize=True,
                 scale=2 * math.pi, eps=1e-6):
        super().__init__()
        self.normalize = normalize
        self.offset = float(offset)
        self.scale = float(scale)
        self.eps = float(eps)
        self.dim_t = Tensor(_inverse_frequencies(num_pos_feats, temperature))
        self.even = Tensor(np.arange(num_pos_feats) % 2 == 0)

    def construct(self, mask):
        not_mask = logical_not(mask).astype(ms.float32)
        y_embed = ops.matmul(_inclusive_prefix(mask.shape[1]).T, not_mask)  # running counts down the rows
        x_embed = ops.matmul(not_mask, _inclusive_prefix(mask.shape[2]))  # and along each row
        if self.normalize:
            y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + self.eps) * self.scale
        pos_y = _interleaved_sin_cos(y_embed, self.dim_t, self.even)
        pos_x = _interleaved_sin_cos(x_embed, self.dim_t, self.even)
        return concat([pos_y, pos_x], -1).transpose(0, 3, 1, 2)


class BoxSineEmbedding(nn.Cell):
    """Sine embedding of normalized box coordinates (..., n) -> (..., n*F), with the x and y
    blocks exchanged (output order y, x, w, h), temperature 10000: detrex ``get_sine_pos_embed``."""

    def __init__(self, num_pos_feats=128, temperature=10000):
        super().__init__()
        self.dim_t = Tensor(_inverse_frequencies(num_pos_feats, temperature))
        self.even = Tensor(np.arange(num_pos_feats) % 2 == 0)
        self.scale = 2 * math.pi

    def construct(self, pos):
        emb = _interleaved_sin_cos(pos * self.scale, self.dim_t, self.even)  # (..., n, F)
        parts = [emb[..., i, :] for i in range(emb.shape[-2])]  # slices: no ``Unstack`` in the ONNX exporter
        return concat([parts[1], parts[0]] + parts[2:], -1)
