"""Focus-DETR's foreground score head (``MaskPredictor``): a token MLP whose input mixes
each token's local half with the mean of the global half over the whole level."""
from mindspore import nn, ops

from ..layers.dense import Dense
from ..layers.extent import masked_mean
from ..layers.layer_norm import build_layer_norm
from ..layers.portable_backward import build_gelu, concat


class MaskPredictor(nn.Cell):
    """(B,N,in_dim) tokens of one level -> (B,N,1) foreground logits.

    z = GELU(Linear(LayerNorm(x))); [z_local, mean_N(z_global)] -> 3-layer GELU MLP -> 1.
    GELU is the exact (erf) one, as torch's default. The mean includes padded tokens (as
    official) but not tokens outside the official extent of a larger canvas: ``in_extent``
    (B,N,1) float 0/1, or None when the canvas is the extent. ``gelu_impl``: ``build_gelu``'s,
    ``layer_norm_impl``: ``build_layer_norm``'s.
    """

    def __init__(self, in_dim=256, h_dim=256, gelu_impl="native", layer_norm_impl="native"):
        super().__init__()
        self.h_dim = h_dim
        self.layer1 = nn.SequentialCell([
            build_layer_norm(in_dim, layer_norm_impl),
            Dense(in_dim, h_dim),
            build_gelu(gelu_impl),
        ])
        self.layer2 = nn.SequentialCell([
            Dense(h_dim, h_dim // 2),
            build_gelu(gelu_impl),
            Dense(h_dim // 2, h_dim // 4),
            build_gelu(gelu_impl),
            Dense(h_dim // 4, 1),
        ])

    def construct(self, x, in_extent=None):
        z = self.layer1(x)
        half = self.h_dim // 2
        z_local = z[..., :half]
        z_global = z[..., half:]
        if in_extent is None:
            z_global = z_global.mean(1, keep_dims=True)
        else:
            z_global = masked_mean(z_global, in_extent, 1)
        z_global = ops.broadcast_to(z_global, z_local.shape)
        return self.layer2(concat([z_local, z_global], -1))
