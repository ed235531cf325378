"""The exact (erf) GELU as one AOT C++ kernel forward and one backward (``gelu_cpu.cpp``), CPU only.

Drop-in for ``src.layers.portable_backward.GELU`` (the reference: MindSpore operators) within
float32 rounding of erf (tests/test_ops.py). MindSpore's GPU and Ascend GELUs are single fused
kernels already; on CPU its graph is five element-wise passes with a scalar Erf, which is what
this replaces. Built and cached with the other kernels (``src.ops.build.library_path``).
"""
import mindspore as ms
from mindspore import nn, ops

from .build import KernelUnavailable, current_device, library_path


class GELUKernel(nn.Cell):
    """x -> x * Phi(x), any shape; float32 inside (other dtypes are cast around the kernel)."""

    def __init__(self):
        super().__init__()
        device = current_device()
        if device != "CPU":
            raise KernelUnavailable(f"the fused GELU kernel exists for CPU only, not {device}")
        so = library_path(device)
        backward = ops.Custom(f"{so}:GeluBackward", out_shape=lambda x, dy: x, out_dtype=lambda x, dy: x,
                              func_type="aot")

        def bprop(x, out, dout):
            return (backward(x, dout),)

        self.op = ops.Custom(f"{so}:GeluForward", out_shape=lambda x: x, out_dtype=lambda x: x, func_type="aot",
                             bprop=bprop)

    def construct(self, x):
        return ops.cast(self.op(ops.cast(x, ms.float32)), x.dtype)
