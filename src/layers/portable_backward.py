"""Operators whose MindSpore backward is not portable, with a backward that is.

MindSpore 2.10 differentiates ``Concat`` into ``SplitWithSize`` and the exact GELU into a
``PowTensorScalar``; both primitives are documented for Ascend only (src/tools/op_platforms.yaml),
so a GPU training step holding them is not one MindSpore promises to run. Here the forward is
MindSpore's own operator (GELU: torch's formula of it) and the backward a ``bprop`` of primitives documented
for every device: slices of the output gradient for ``concat`` (exact: a copy), the closed-form
derivative of GELU with ``x * x`` for the square (equal to MindSpore's own to float rounding,
tests/test_layers.py). The portability check (src/tools/portability.py) finds any that are left.
``build_gelu`` is GELU's dispatch point: this Cell, or the fused CPU kernel (``src.ops``).
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


# erf(x) ~ x P(x^2) / Q(x^2) on [-4, 4] (erf(4) = 1 - 1.5e-8): the float32 rational function
# of Eigen and XLA; max abs error 4.4e-7 against scipy's float64 erf on a 2e6-point grid of [-6, 6]
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)


def rational_erf(x):
    """erf in additions, multiplications, one division and a clamp: MindSpore 2.10's ONNX exporter
    has no Erf (and its GeLU is the tanh approximation)."""
    x = ops.clamp(x, -4.0, 4.0)
    square = x * x
    numerator = _ERF_P[0]
    for c in _ERF_P[1:]:
        numerator = numerator * square + c
    denominator = _ERF_Q[0]
    for c in _ERF_Q[1:]:
        denominator = denominator * square + c
    return x * numerator / denominator


class GELU(nn.Cell):
    """Exact (erf) GELU, torch's default: x * Phi(x); d/dx = Phi(x) + x * phi(x).

    ``erf``: 'native' (MindSpore's Erf, the default) or 'rational' (``rational_erf``, for the ONNX
    export: ``kernels.gelu``)."""

    def __init__(self, erf="native"):
        super().__init__()
        if erf not in ("native", "rational"):
            raise ValueError(f"kernels.gelu: unknown erf {erf!r} (native | rational)")
        self.erf = rational_erf if erf == "rational" else ops.erf

    def construct(self, x):
        # torch's formula, x * 0.5 * (1 + erf(x * sqrt(1/2))); MindSpore's own divides by sqrt(2),
        # and in CPU graph mode a Div's output stays allocated until the graph ends (README,
        # "Graph-mode memory on CPU")
        return x * 0.5 * (1.0 + self.erf(x * (1.0 / math.sqrt(2.0))))

    def bprop(self, x, out, dout):
        cdf = 0.5 * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))
        pdf = ops.exp(x * x * -0.5) * (1.0 / math.sqrt(2.0 * math.pi))
        return (dout * (cdf + x * pdf),)


def build_gelu(impl="native"):
    """The dispatch point for the exact GELU (``kernels.gelu``).

    ``impl``: 'native' / 'rational' (``GELU`` with that erf), 'kernel' (one fused AOT C++ pass
    forward and backward, ``src.ops.GELUKernel``: CPU only; an error where it cannot be built or
    run), 'auto' (the kernel where available, else 'native' after one logged warning)."""
    if impl in ("native", "rational"):
        return GELU(impl)
    if impl in ("kernel", "auto"):
        from ..ops import gelu_kernel_or_none  # lazy: compiles the kernels on first use only

        kernel = gelu_kernel_or_none(required=impl == "kernel", fallback="native")
        return kernel if kernel is not None else GELU()
    raise ValueError(f"kernels.gelu: unknown implementation {impl!r} (auto | kernel | native | rational)")
