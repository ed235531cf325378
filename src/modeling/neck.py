"""ChannelMapper neck (detrex): 1x1 conv + GroupNorm per backbone level, plus an extra
stride-2 3x3 conv + GroupNorm on the *last backbone map* (res5, not the mapped level 2)."""
import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import XavierUniform, initializer

from ..layers.elementwise import divide
from ..layers.extent import inside, keep_inside, masked_mean


class GroupNorm(nn.GroupNorm):
    """torch GroupNorm whose statistics cover only the official extent of a larger canvas
    (the official model normalizes over its own padded map). A subclass, so that the
    parameters and the optimizer's and mixed precision's rules for norms stay those of
    ``nn.GroupNorm``."""

    def construct(self, x, extent=None):
        if extent is None:
            return self._cal_output(x)
        bsz, channels, height, width = x.shape
        groups = x.reshape(bsz, self.num_groups, -1)
        cells = inside(extent, height, width).astype(ms.float32)
        weights = ops.broadcast_to(cells[:, None, None], (bsz, self.num_groups, channels // self.num_groups,
                                                          height, width)).reshape(groups.shape)
        # the cells a group averages over, counted on the (B, h, w) map: exact (integers), and
        # not two full-size reductions of the broadcast weights per norm
        count = ops.broadcast_to((cells.sum((1, 2)) * (channels // self.num_groups)).reshape(bsz, 1, 1),
                                 (bsz, self.num_groups, 1))
        # every statistic and affine parameter broadcast explicitly (src/layers/elementwise.py)
        centred = groups - ops.broadcast_to(masked_mean(groups, weights, -1, count), groups.shape)
        # a product, not ops.square: Square's gradient emits PowTensorScalar, which has no GPU kernel
        var = masked_mean(centred * centred, weights, -1, count)
        normed = divide(centred, ops.sqrt(var + self.eps)).reshape(x.shape)
        return (normed * ops.broadcast_to(self.gamma.reshape(1, -1, 1, 1), x.shape)
                + ops.broadcast_to(self.beta.reshape(1, -1, 1, 1), x.shape))


class ConvNorm(nn.Cell):
    """Conv2d with bias followed by GroupNorm(32); names ``conv`` and ``norm`` as detrex."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, num_groups=32):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              pad_mode="pad", padding=kernel_size // 2, has_bias=True)
        self.norm = GroupNorm(num_groups, out_channels, eps=1e-5)
        self.conv.weight.set_data(initializer(XavierUniform(), self.conv.weight.shape, ms.float32))
        self.conv.bias.set_data(Tensor(np.zeros(out_channels, np.float32)))

    def construct(self, x, in_extent=None, out_extent=None):
        return self.norm(self.conv(keep_inside(x, in_extent)), out_extent)


class ChannelMapper(nn.Cell):
    """``construct(features, extents)``: ``extents`` holds the official extent on every output
    level (``num_outs`` (B,2) tensors) or is None (the canvas is the extent)."""

    def __init__(self, in_channels=(512, 1024, 2048), out_channels=256, num_outs=4):
        super().__init__()
        self.convs = nn.CellList([ConvNorm(c, out_channels, 1, 1) for c in in_channels])
        self.extra_convs = nn.CellList(
            [ConvNorm(in_channels[-1] if i == 0 else out_channels, out_channels, 3, 2)
             for i in range(num_outs - len(in_channels))])

    def construct(self, features, extents=None):
        if extents is None:
            extents = (None,) * (len(self.convs) + len(self.extra_convs))
        outs = ()
        for i, conv in enumerate(self.convs):
            outs += (conv(features[i], None, extents[i]),)
        x = features[-1]
        for i, conv in enumerate(self.extra_convs):
            level = len(self.convs) + i
            x = conv(x, extents[level - 1], extents[level])
            outs += (x,)
        return outs
