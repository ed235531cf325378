"""ResNet backbone with detectron2 semantics, built from mindcv's ResNet.

Depth 50/101 (bottleneck blocks) are the official backbones; 18/34 (basic blocks) with
trainable BatchNorm (``norm="bn"``) serve small models trained from scratch (the quick start).

mindcv's stem differs from detectron2/torchvision in one place: its 3x3/2 max-pool uses
TF "same" padding, which on even-sized maps pads only bottom/right and shifts every window.
We replace it with symmetric padding 1 (-inf). All BatchNorms are frozen
(``resnet_norm.FrozenBatchNorm2d``, which also applies the block's shortcut and ReLU after it),
and parameters up to ``freeze_at`` do not train. mindcv's block adds
the shortcut in place (``out += identity``); in a large graph MindSpore turns every in-place
op into a side effect with control edges to all kernels, so our block adds out of place.

``construct(x, extent)``: with the official extent (``src.layers.extent``) of a larger canvas,
every input of a convolution or pool wider than 1x1 is zeroed outside the extent, so the maps
inside it are those of an extent-sized image (whose convolutions pad with zeros).
"""
from mindcv.models.resnet import BasicBlock, Bottleneck, ResNet
from mindspore import nn, ops

from ...layers.extent import downsampled, keep_inside
from ...layers.portable_backward import concat
from .resnet_norm import resnet_norm


class StemMaxPool(nn.Cell):
    """3x3 max pool, stride 2, padding 1, the border counting as -inf (torch's), written as -inf
    columns and rows concatenated around the map and an unpadded pool: MindSpore 2.10's padded
    ``nn.MaxPool2d`` is a MaxPool3DWithArgmax, which its ONNX exporter cannot convert."""

    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="valid")

    def construct(self, x):
        b, c, h, w = x.shape
        column = ops.full((b, c, h, 1), float("-inf"), dtype=x.dtype)
        x = concat((column, x, column), 3)
        row = ops.full((b, c, 1, w + 2), float("-inf"), dtype=x.dtype)
        return self.pool(concat((row, x, row), 2))


class _Bottleneck(Bottleneck):
    """Takes and returns (map, extent of the map) so that ``nn.SequentialCell`` carries both."""

    def __init__(self, in_channels, channels, stride=1, **kwargs):
        super().__init__(in_channels, channels, stride=stride, **kwargs)
        self.stride = stride
        del self.relu  # applied by the norms (resnet_norm)

    def construct(self, inputs):
        x, extent = inputs
        identity = x if self.down_sample is None else self.down_sample(x)
        out = self.bn1(self.conv1(x), relu=True)
        out = self.bn2(self.conv2(keep_inside(out, extent)), relu=True)
        return self.bn3(self.conv3(out), identity, relu=True), downsampled(extent, self.stride)


class _BasicBlock(BasicBlock):
    """As ``_Bottleneck``; both convolutions are 3x3."""

    def __init__(self, in_channels, channels, stride=1, **kwargs):
        super().__init__(in_channels, channels, stride=stride, **kwargs)
        self.stride = stride
        del self.relu  # applied by the norms (resnet_norm)

    def construct(self, inputs):
        x, extent = inputs
        identity = x if self.down_sample is None else self.down_sample(x)
        out = self.bn1(self.conv1(keep_inside(x, extent)), relu=True)
        out_extent = downsampled(extent, self.stride)
        return self.bn2(self.conv2(keep_inside(out, out_extent)), identity, relu=True), out_extent


_DEPTHS = {18: (_BasicBlock, [2, 2, 2, 2]), 34: (_BasicBlock, [3, 4, 6, 3]),
           50: (_Bottleneck, [3, 4, 6, 3]), 101: (_Bottleneck, [3, 4, 23, 3])}


class ResNetBackbone(ResNet):
    """ResNet returning res3, res4, res5 (strides 8/16/32; 512/1024/2048 channels for depth
    50/101, 128/256/512 for 18/34).

    ``freeze_at``: 0 trains everything, 1 freezes the stem conv (official), k>1 also
    freezes res2..res{k}. ``norm``: 'frozen_bn' (official) or 'bn' (trainable BatchNorm).
    """

    def __init__(self, depth=50, freeze_at=1, norm="frozen_bn", frozen_bn_impl="native"):
        if depth not in _DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(_DEPTHS)}, got {depth}")
        block, layers = _DEPTHS[depth]
        super().__init__(block, layers, norm=resnet_norm(norm, frozen_bn_impl))
        del self.relu  # each norm applies its block's ReLU (resnet_norm)
        self.trainable_norm = norm == "bn"
        self.max_pool = StemMaxPool()
        del self.pool
        del self.classifier
        self.out_channels = tuple(c * block.expansion for c in (128, 256, 512))
        self.out_strides = (8, 16, 32)
        self.output_names = ("res3", "res4", "res5")  # detectron2 output keys
        frozen = ["conv1."] + [f"layer{i}." for i in range(1, freeze_at)] if freeze_at >= 1 else []
        for p in self.get_parameters():
            if any(p.name.startswith(prefix) for prefix in frozen):
                p.requires_grad = False

    def recompute_blocks(self):
        """The stages ``train.recompute`` recomputes (``FocusDETR.recompute_blocks``); none with
        trainable BatchNorm, whose running statistics a recomputation would update a second time
        each step (MindSpore 2.10 cannot exempt a sub-cell from its stage's recomputation)."""
        return [] if self.trainable_norm else [self.layer1, self.layer2, self.layer3, self.layer4]

    def construct(self, x, extent=None):
        """``extent``: (B,2) official extent in pixels, or None (the canvas); the image is
        already zero outside it."""
        extent = downsampled(extent, 2)
        x = self.max_pool(keep_inside(self.bn1(self.conv1(x), relu=True), extent))
        x = self.layer1((x, downsampled(extent, 2)))
        res3 = self.layer2(x)
        res4 = self.layer3(res3)
        res5 = self.layer4(res4)
        return res3[0], res4[0], res5[0]
