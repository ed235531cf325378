"""Sine position embeddings: the image one (per feature level, from its padding mask) and the
box one used for decoder query positions (detrex ``PositionEmbeddingSine`` / ``get_sine_pos_embed``)."""
import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from .elementwise import divide, last_axis
from .masking import logical_not
from .portable_backward import concat


def _pair_frequencies(num_feats, temperature):
    """The official dim_t = temperature ** (2 * (k // 2) / F) at k = 0, 2, 4, ...: its channels
    come in equal pairs (sin, cos), so each pair is computed once."""
    k = np.arange(0, num_feats, 2, dtype=np.float32)
    return Tensor(np.float32(temperature) ** (np.float32(2.0) * np.floor(k / np.float32(2.0)) / np.float32(num_feats)))


def _inclusive_prefix(n):
    """(n, n) float32 U, U[j, i] = 1 where j <= i: a 0/1 map times U is its running count along
    the last axis, exactly (sums of integers below 2**24). A matmul instead of ``ops.cumsum``:
    MindSpore 2.10's ONNX exporter has no CumSum."""
    idx = ops.arange(n, dtype=ms.int32)
    return (idx[:, None] <= idx[None, :]).astype(ms.float32)


def _interleaved_sin_cos(x, pair_dim_t):
    """(..., F): v = x[..., None] / dim_t with sin on the even and cos on the odd channels, as
    the official stack((v[..., 0::2].sin(), v[..., 1::2].cos()), -1).flatten(-2)."""
    v = divide(last_axis(x), pair_dim_t)
    return concat((last_axis(ops.sin(v)), last_axis(ops.cos(v))), -1).reshape(x.shape + (2 * pair_dim_t.shape[0],))


class PositionEmbeddingSine(nn.Cell):
    """Normalized 2-D sine embedding of a padding mask (True = padding), (B,h,w) -> (B,h,w,2F),
    channels last (the official (B,2F,h,w) transposed: the tokens of a level are its rows).

    Channels 0..F-1 encode y, F..2F-1 encode x. ``temperature``/``offset`` differ between the
    official 12-epoch (10000, -0.5) and 24/36-epoch (20, 0.0) configs.

    ``impl`` (``kernels.position_embedding``) computes the sines and cosines of the counts:
    'native' by MindSpore's operators, 'kernel' by ``src.ops.SineEmbeddingKernel`` (CPU only, one
    pass; an error where it cannot be built), 'auto' the kernel where it can run, else 'native'
    with one warning per process. The running counts are MindSpore's in all three.
    """

    def __init__(self, num_pos_feats=128, temperature=10000, offset=0.0, normalize=True,
                 scale=2 * math.pi, eps=1e-6, impl="native"):
        super().__init__()
        self.normalize = normalize
        self.offset = float(offset)
        self.scale = float(scale)
        self.eps = float(eps)
        self.pair_dim_t = _pair_frequencies(num_pos_feats, temperature)
        self.kernel = _kernel_or_none(impl)

    def construct(self, mask):
        not_mask = logical_not(mask).astype(ms.float32)
        y_embed = ops.matmul(_inclusive_prefix(mask.shape[1]).T, not_mask)  # running counts down the rows
        x_embed = ops.matmul(not_mask, _inclusive_prefix(mask.shape[2]))  # and along each row
        if self.normalize:
            y_embed = divide(y_embed + self.offset, y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = divide(x_embed + self.offset, x_embed[:, :, -1:] + self.eps) * self.scale
        if self.kernel is not None:
            return self.kernel(y_embed, x_embed, self.pair_dim_t)
        return concat([_interleaved_sin_cos(y_embed, self.pair_dim_t), _interleaved_sin_cos(x_embed, self.pair_dim_t)],
                      -1)


def _kernel_or_none(impl):
    if impl == "native":
        return None
    if impl in ("auto", "kernel"):
        from ..ops import sine_embedding_kernel_or_none  # lazy: compiles the kernels on first use only

        return sine_embedding_kernel_or_none(required=impl == "kernel", fallback="native")
    raise ValueError(f"kernels.position_embedding: unknown implementation {impl!r} (auto | kernel | native)")


class BoxSineEmbedding(nn.Cell):
    """Sine embedding of normalized box coordinates (..., n) -> (..., n*F), with the x and y
    blocks exchanged (output order y, x, w, h), temperature 10000: detrex ``get_sine_pos_embed``."""

    def __init__(self, num_pos_feats=128, temperature=10000):
        super().__init__()
        self.pair_dim_t = _pair_frequencies(num_pos_feats, temperature)
        self.scale = 2 * math.pi

    def construct(self, pos):
        # the first two coordinates exchanged before the embedding, which is per coordinate:
        # (..., n, F) is then already in the output order (slicing it per coordinate, a
        # StridedSlice each, was slower on CPU)
        n = pos.shape[-1]
        order = Tensor(np.array([1, 0] + list(range(2, n)), np.int32))
        emb = _interleaved_sin_cos(ops.gather(pos, order, pos.ndim - 1) * self.scale, self.pair_dim_t)
        return emb.reshape(pos.shape[:-1] + (n * emb.shape[-1],))
