"""Operators whose MindSpore backward is not portable, with a backward that is.

MindSpore 2.10 differentiates ``Concat`` into ``SplitWithSize`` and the exact GELU into a
``PowTensorScalar``; both primitives are documented for Ascend only (src/tools/op_platforms.yaml),
so a GPU training step holding them is not one MindSpore promises to run. Here the forward is
MindSpore's own operator (identical results) and the backward a ``bprop`` of primitives documented
for every device: slices of the output gradient for ``concat`` (exact: a copy), the closed-form
derivative of GELU with ``x * x`` for the square (equal to MindSpore's own to float rounding,
tests/test_layers.py). The portability check (src/tools/portability.py) finds any that are left.
"""
import math

from mindspore import nn, ops


class Concat(nn.Cell):
    """``ops.concat(tensors, axis)``; the backward slices the output gradient per input."""

    def __init__(self, axis):
        super().__init__()
        self.axis = axis

    def construct(self, tensors):
        return ops.concat(tensors, self.axis)

    def bprop(self, tensors, out, dout):
        axis = self.axis % dout.ndim
        grads, start = (), 0
        for tensor in tensors:
            grads += (ops.narrow(dout, axis, start, tensor.shape[axis]),)
            start += tensor.shape[axis]
        return (grads,)


# one stateless Cell per axis, so plain functions inside construct can call them
_CONCAT = {axis: Concat(axis) for axis in range(-4, 4)}


def concat(tensors, axis=0):
    """Drop-in for ``ops.concat`` in anything that is differentiated."""
    return _CONCAT[axis](tuple(tensors))


class GELU(nn.Cell):
    """Exact (erf) GELU, torch's default: x * Phi(x); d/dx = Phi(x) + x * phi(x)."""

    def __init__(self):
        super().__init__()
        self.gelu = nn.GELU(approximate=False)

    def construct(self, x):
        return self.gelu(x)

    def bprop(self, x, out, dout):
        cdf = 0.5 * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))
        pdf = ops.exp(x * x * -0.5) * (1.0 / math.sqrt(2.0 * math.pi))
        return (dout * (cdf + x * pdf),)
