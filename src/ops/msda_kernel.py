"""Fused kernel for the multi-scale deformable attention sampling core (CPU C++, GPU CUDA).

``MSDeformAttnCoreKernel`` is a drop-in replacement for
``src.layers.ms_deform_attn.MSDeformAttnCoreReference`` (same construct signature, same
semantics): an ``ops.Custom(func_type="aot")`` forward whose ``bprop`` is a second AOT kernel
returning the gradients for value, sampling locations and attention weights. The library of the
current device target comes from ``src.ops.build`` (compiled on first use, cached).
"""
import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.ops import CustomRegOp, DataType

from .build import current_device, library_path


@ms.constexpr
def spatial_shapes_tensor(spatial_shapes):
    """(L,2) int32 constant (h, w) per level from the static tuple."""
    return Tensor(np.array([[int(h), int(w)] for h, w in spatial_shapes], np.int32).reshape(-1, 2))


def _msda_reg_info(device):
    return (CustomRegOp("MSDAForward")
            .input(0, "value").input(1, "spatial_shapes").input(2, "sampling_locations").input(3, "attention_weights")
            .output(0, "output")
            .dtype_format(DataType.F32_Default, DataType.I32_Default, DataType.F32_Default, DataType.F32_Default,
                          DataType.F32_Default)
            .target(device).get_op_info())


def msda_ops(device="CPU"):
    """(forward, backward) ``ops.Custom`` primitives of the sampling core on ``device``, forward
    with bprop."""
    so = library_path(device)
    backward = ops.Custom(f"{so}:MSDABackward", out_shape=lambda v, s, loc, a, g: (v, loc, a),
                          out_dtype=lambda v, s, loc, a, g: (v, loc, a), func_type="aot")

    def bprop(value, shapes, locations, weights, out, dout):
        # the backward does not need ``out``; without this edge MindSpore may run it concurrently
        # with the forward, and the two OpenMP teams oversubscribe the cores (measured: ~30% slower)
        dout = ops.depend(dout, out)
        grad_value, grad_locations, grad_weights = backward(value, shapes, locations, weights, dout)
        return grad_value, ops.zeros_like(shapes), grad_locations, grad_weights

    # C++ InferShape/InferType + reg_info (out_shape=None): the form that also survives MINDIR
    # export and reload with dynamic shapes (MINDSPORE_NOTES section 4)
    forward = ops.Custom(f"{so}:MSDAForward", out_shape=None, out_dtype=None, func_type="aot",
                         bprop=bprop, reg_info=_msda_reg_info(device))
    return forward, backward


class MSDeformAttnCoreKernel(nn.Cell):
    """Fused sampling core of the current device target; same inputs, output and semantics as
    ``MSDeformAttnCoreReference``.

    value (B,S,M,D); spatial_shapes: static tuple of (h,w); sampling_locations
    (B,Q,M,L,P,2) (x,y) in [0,1]; attention_weights (B,Q,M,L,P) -> (B,Q,M*D) in value's dtype; the
    kernel computes in float32 (float16 inputs are cast around it). Building it
    compiles the kernels if needed and raises ``KernelUnavailable`` when that is impossible.
    """

    def __init__(self):
        super().__init__()
        self.forward_op, self.backward_op = msda_ops(current_device())

    def construct(self, value, spatial_shapes, sampling_locations, attention_weights):
        shapes = spatial_shapes_tensor(spatial_shapes)
        f32 = ms.float32
        out = self.forward_op(ops.cast(value, f32), shapes, ops.cast(sampling_locations, f32),
                              ops.cast(attention_weights, f32))
        return ops.cast(out, value.dtype)
