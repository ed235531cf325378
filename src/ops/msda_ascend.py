"""Deformable sampling core on Ascend: MindSpore's built-in fused operator.

``ops.multi_scale_deformable_attn_function`` is backed by CANN's aclnn ``MultiScaleDeformableAttn``
(forward and grad) on Atlas A2/A3 training series; it is not available on the 910A series or on
other devices. ``MSDeformAttnCoreAscend`` adapts it to the core's interface (static spatial shapes
in, level start offsets computed here) and probes it once when built, so an unsupported device
raises ``KernelUnavailable`` (which 'auto' turns into one warning and the pure-MindSpore core).

The (x, y) order of the locations' last axis: MindSpore's documentation says (x, y), as
grid_sample and the reference use; Huawei's DrivingSDK describes the same aclnn kernel with
(y, x). ``LOCATION_ORDER`` follows the documentation, and ``tests/test_ops_devices.py`` decides
it against the reference on an Ascend machine (it compares both orders and fails with the one
that matches if this constant is wrong). NO ASCEND HARDWARE EXISTED ON THIS PROJECT'S MACHINES:
this path has never run; the test skips everywhere else.
"""
import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from .build import KernelUnavailable

LOCATION_ORDER = "xy"  # "yx" flips the last axis of the locations before the call


@ms.constexpr
def _shapes_and_offsets(spatial_shapes):
    """(L,2) int32 (h, w) and (L,) int32 first token of each level, from the static tuple."""
    shapes = np.array([[int(h), int(w)] for h, w in spatial_shapes], np.int32).reshape(-1, 2)
    offsets = np.concatenate([[0], np.cumsum(shapes[:, 0] * shapes[:, 1])[:-1]]).astype(np.int32)
    return Tensor(shapes), Tensor(offsets)


class MSDeformAttnCoreAscend(nn.Cell):
    """Same inputs, output and semantics as ``MSDeformAttnCoreReference``; value's head dimension
    must be a multiple of 8 (the aclnn kernel's constraint; 32 in every shipped config)."""

    def __init__(self, location_order=None, probe=True):
        super().__init__()
        self.swap_xy = (location_order or LOCATION_ORDER) == "yx"
        if probe:
            self._probe()

    def _probe(self):
        if ms.get_context("device_target") != "Ascend":
            raise KernelUnavailable("the fused deformable attention operator exists on Ascend only")
        value = Tensor(np.zeros((1, 1, 1, 8), np.float32))
        locations = Tensor(np.full((1, 1, 1, 1, 1, 2), 0.5, np.float32))
        weights = Tensor(np.ones((1, 1, 1, 1, 1), np.float32))
        try:
            self(value, ((1, 1),), locations, weights).asnumpy()
        except (RuntimeError, TypeError, ValueError) as e:  # unregistered kernel (910A) or no CANN op
            raise KernelUnavailable(f"ops.multi_scale_deformable_attn_function does not run on this Ascend "
                                    f"device ({str(e).strip().splitlines()[0] if str(e).strip() else e})") from e

    def construct(self, value, spatial_shapes, sampling_locations, attention_weights):
        shapes, offsets = _shapes_and_offsets(spatial_shapes)
        if self.swap_xy:  # a Python attribute: resolved at compile time
            sampling_locations = sampling_locations[..., ::-1]
        return ops.multi_scale_deformable_attn_function(value, shapes, offsets, sampling_locations,
                                                        attention_weights)
