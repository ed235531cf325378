"""LayerNorm over the last axis as one AOT C++ kernel forward and one backward
(``layer_norm_cpu.cpp``), CPU only.

A drop-in ``nn.LayerNorm`` (a subclass: the same ``gamma``/``beta`` parameters, checkpoint keys,
mixed-precision and weight-decay treatment) within float32 rounding (tests/test_ops.py). On CPU
MindSpore's LayerNorm and its gradient are several passes over the tensor; the kernel keeps a
row in cache, and its backward recomputes the row statistics and sums gamma's and beta's
gradients in a fixed order (the same bits for any thread count). On GPU and Ascend MindSpore's
LayerNorm is one fused kernel already.
"""
import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from .build import KernelUnavailable, current_device, library_path


class LayerNormKernel(nn.LayerNorm):
    """``nn.LayerNorm((dim,), epsilon=eps)`` computed by the kernel; float32 inside (other dtypes
    are cast around it)."""

    def __init__(self, dim, epsilon=1e-5):
        device = current_device()
        if device != "CPU":
            raise KernelUnavailable(f"the LayerNorm kernel exists for CPU only, not {device}")
        so = library_path(device)
        super().__init__((dim,), epsilon=epsilon)
        self.eps = Tensor(np.array([epsilon], np.float32))
        backward = ops.Custom(f"{so}:LayerNormBackward", func_type="aot",
                              out_shape=lambda x, gamma, eps, dy: (x, gamma, gamma),
                              out_dtype=lambda x, gamma, eps, dy: (x, x, x))

        def bprop(x, gamma, beta, eps, out, dout):
            dx, dgamma, dbeta = backward(x, gamma, eps, dout)
            return dx, dgamma, dbeta, ops.zeros_like(eps)

        self.op = ops.Custom(f"{so}:LayerNormForward", func_type="aot",
                             out_shape=lambda x, gamma, beta, eps: x, out_dtype=lambda x, gamma, beta, eps: x,
                             bprop=bprop)

    def construct(self, input_x):
        f32 = ms.float32
        y = self.op(ops.cast(input_x, f32), ops.cast(self.gamma, f32), ops.cast(self.beta, f32), self.eps)
        return ops.cast(y, input_x.dtype)
