"""The ResNet's BatchNorms, each with the end of what follows it in a block, and the dispatch point
of the fused kernel for the frozen ones (``kernels.frozen_bn``).

Every norm of a block is called as ``norm(x, shortcut=None, relu=False)``: the BatchNorm, then
the shortcut added when given, then the ReLU when ``relu`` (the official block: ``relu(bn(conv))``
inside, ``relu(bn(conv) + shortcut)`` at its end). One call per norm lets the frozen one be a
single pass on CPU (``src.ops.FrozenBatchNormKernel``) and keeps one interface for both norms,
also through mixed precision's cast wrapper, which forwards a Cell's call arguments.
"""
import functools

import numpy as np
from mindspore import Parameter, Tensor, nn, ops


class FrozenBatchNorm2d(nn.Cell):
    """BatchNorm with fixed statistics and affine: y = (x - mean) / sqrt(var + eps) * w + b.

    Parameter names follow mindcv/MindSpore BatchNorm (gamma, beta, moving_mean,
    moving_variance) so mindcv ImageNet checkpoints load directly.

    ``impl``: 'native' computes it by the inference form of MindSpore's BatchNorm kernel rather
    than detectron2's ``x * scale + shift``: in a graph-mode ResNet on CPU the broadcast
    multiply-add keeps every block's activations alive and is slower (README, "Graph-mode memory
    on CPU"); the two differ by float32 rounding. 'kernel' is the fused CPU kernel (detectron2's
    form, the addition and the ReLU in the same pass; an error where it cannot be built), 'auto'
    the kernel where it can run, else 'native' with one warning per process.
    """

    def __init__(self, num_features, eps=1e-5, impl="native"):
        super().__init__()
        self.eps = eps
        self.gamma = Parameter(Tensor(np.ones(num_features, np.float32)), requires_grad=False)
        self.beta = Parameter(Tensor(np.zeros(num_features, np.float32)), requires_grad=False)
        self.moving_mean = Parameter(Tensor(np.zeros(num_features, np.float32)), requires_grad=False)
        self.moving_variance = Parameter(Tensor(np.ones(num_features, np.float32)), requires_grad=False)
        self.kernel = _kernel_or_none(eps, impl)

    def construct(self, x, shortcut=None, relu=False):
        if self.kernel is not None:
            return self.kernel(x, self.gamma, self.beta, self.moving_mean, self.moving_variance, shortcut, relu)
        y = ops.batch_norm(x, self.moving_mean, self.moving_variance, self.gamma, self.beta, training=False,
                           eps=self.eps)
        return _tail(y, shortcut, relu)


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (trainable; the small from-scratch ResNets) called as the frozen one."""

    def construct(self, x, shortcut=None, relu=False):
        return _tail(super().construct(x), shortcut, relu)


def _tail(y, shortcut, relu):
    if shortcut is not None:
        y = y + shortcut
    return ops.relu(y) if relu else y


def _kernel_or_none(eps, impl):
    if impl == "native":
        return None
    if impl in ("auto", "kernel"):
        from ...ops import frozen_bn_kernel_or_none  # lazy: compiles the kernels on first use only

        return frozen_bn_kernel_or_none(eps, required=impl == "kernel", fallback="native")
    raise ValueError(f"kernels.frozen_bn: unknown implementation {impl!r} (auto | kernel | native)")


def resnet_norm(name, frozen_bn_impl="native"):
    """The norm class ``mindcv``'s ResNet instantiates per layer: 'frozen_bn' (official) or 'bn'."""
    if name == "frozen_bn":
        return functools.partial(FrozenBatchNorm2d, impl=frozen_bn_impl)
    if name == "bn":
        return BatchNorm2d
    raise ValueError(f"ResNet norm must be one of ['bn', 'frozen_bn'], got {name!r}")
