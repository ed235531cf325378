"""A frozen BatchNorm with the ReLU after it, or the shortcut's addition and the ReLU, as one AOT
C++ kernel forward and one backward (``frozen_bn_cpu.cpp``), CPU only.

What ``src.layers.frozen_batch_norm.FrozenBatchNorm2d`` computes, within float32 rounding
(tests/test_ops.py): its reference is MindSpore's BatchNorm kernel, then ``Add`` and ``ReLU``,
three passes over every block output of the ResNet on CPU; the statistics and the affine are
constants, so the kernel is one multiply-add per element (detectron2's form: scale
``gamma / sqrt(var + eps)``, shift ``beta - mean * scale``) with the addition and the ReLU in the
same pass. The gradients reach the input and the shortcut only: the four parameters are frozen.
"""
import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from .build import KernelUnavailable, current_device, library_path


class FrozenBatchNormKernel(nn.Cell):
    """``construct(x, gamma, beta, mean, var, shortcut=None, relu=False)``: ``x`` (N, C, ...) times
    the channel scale plus the shift, plus ``shortcut`` (x's shape) when given, then the ReLU when
    ``relu``. Float32 inside; a shortcut without the ReLU (no ResNet block ends so) is added after
    the kernel."""

    def __init__(self, epsilon=1e-5):
        super().__init__()
        device = current_device()
        if device != "CPU":
            raise KernelUnavailable(f"the frozen BatchNorm kernel exists for CPU only, not {device}")
        so = library_path(device)
        self.eps = Tensor(np.array([epsilon], np.float32))

        def frozen(*params):  # the gradients of the four frozen parameters and eps
            return tuple(ops.zeros_like(p) for p in params)

        def custom(name, out_shape, out_dtype, bprop=None):
            return ops.Custom(f"{so}:{name}", func_type="aot", out_shape=out_shape, out_dtype=out_dtype, bprop=bprop)

        scale_grad = custom("FrozenBnBackward", lambda dy, gamma, var, eps: dy, lambda dy, gamma, var, eps: dy)
        relu_grad = custom("FrozenBnReluBackward", lambda y, dy, gamma, var, eps: y,
                           lambda y, dy, gamma, var, eps: y)
        add_relu_grad = custom("FrozenBnAddReluBackward", lambda y, dy, gamma, var, eps: (y, y),
                               lambda y, dy, gamma, var, eps: (y, y))

        def plain_bprop(x, gamma, beta, mean, var, eps, out, dout):
            return (scale_grad(dout, gamma, var, eps),) + frozen(gamma, beta, mean, var, eps)

        def relu_bprop(x, gamma, beta, mean, var, eps, out, dout):
            return (relu_grad(out, dout, gamma, var, eps),) + frozen(gamma, beta, mean, var, eps)

        def add_relu_bprop(x, gamma, beta, mean, var, eps, shortcut, out, dout):
            dx, dshortcut = add_relu_grad(out, dout, gamma, var, eps)
            return (dx,) + frozen(gamma, beta, mean, var, eps) + (dshortcut,)

        def like_x(x, *rest):
            return x

        self.plain = custom("FrozenBnForward", like_x, like_x, plain_bprop)
        self.with_relu = custom("FrozenBnReluForward", like_x, like_x, relu_bprop)
        self.with_add_relu = custom("FrozenBnAddReluForward", like_x, like_x, add_relu_bprop)

    def construct(self, x, gamma, beta, mean, var, shortcut=None, relu=False):
        f32 = ms.float32
        params = (ops.cast(x, f32), ops.cast(gamma, f32), ops.cast(beta, f32), ops.cast(mean, f32),
                  ops.cast(var, f32), self.eps)
        if shortcut is not None and relu:
            y = self.with_add_relu(*params, ops.cast(shortcut, f32))
        elif relu:
            y = self.with_relu(*params)
        else:
            y = self.plain(*params)
            if shortcut is not None:
                y = y + ops.cast(shortcut, f32)
        return ops.cast(y, x.dtype)
