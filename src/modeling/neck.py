"""ChannelMapper neck (detrex): 1x1 conv + GroupNorm per backbone level, plus an extra
stride-2 3x3 conv + GroupNorm on the *last backbone map* (res5, not the mapped level 2)."""
import mindspore as ms
import numpy as np
from mindspore import Tensor, nn
from mindspore.common.initializer import XavierUniform, initializer


class ConvNorm(nn.Cell):
    """Conv2d with bias followed by GroupNorm(32); names ``conv`` and ``norm`` as detrex."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, num_groups=32):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              pad_mode="pad", padding=kernel_size // 2, has_bias=True)
        self.norm = nn.GroupNorm(num_groups, out_channels, eps=1e-5)
        self.conv.weight.set_data(initializer(XavierUniform(), self.conv.weight.shape, ms.float32))
        self.conv.bias.set_data(Tensor(np.zeros(out_channels, np.float32)))

    def construct(self, x):
        return self.norm(self.conv(x))


class ChannelMapper(nn.Cell):
    def __init__(self, in_channels=(512, 1024, 2048), out_channels=256, num_outs=4):
        super().__init__()
        self.convs = nn.CellList([ConvNorm(c, out_channels, 1, 1) for c in in_channels])
        self.extra_convs = nn.CellList(
            [ConvNorm(in_channels[-1] if i == 0 else out_channels, out_channels, 3, 2)
             for i in range(num_outs - len(in_channels))])

    def construct(self, features):
        outs = [conv(f) for conv, f in zip(self.convs, features)]
        x = features[-1]
        for conv in self.extra_convs:
            x = conv(x)
            outs.append(x)
        return tuple(outs)
