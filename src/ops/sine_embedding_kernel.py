"""The image's sine position embedding from its running counts as one AOT C++ kernel
(``sine_embedding_cpu.cpp``), CPU only.

What ``src.layers.position_embedding.PositionEmbeddingSine`` computes after its normalized counts
(tests/test_ops.py): the official division by ``dim_t``, sin on the even channels and cos on the
odd ones, interleaved, y's channels then x's, written once per position instead of as divisions,
sines, cosines and concatenations over the whole map. The counts come from the padding mask,
which has no gradient: the backward is zeros.
"""
import mindspore as ms
from mindspore import nn, ops

from .build import KernelUnavailable, current_device, library_path


class SineEmbeddingKernel(nn.Cell):
    """``construct(y_embed, x_embed, pair_dim_t)``: (B, h, w) counts and the K distinct
    frequencies -> (B, h, w, 4K); float32 inside (other dtypes are cast around it)."""

    def __init__(self):
        super().__init__()
        device = current_device()
        if device != "CPU":
            raise KernelUnavailable(f"the sine position embedding kernel exists for CPU only, not {device}")

        def bprop(y_embed, x_embed, pair_dim_t, out, dout):
            return ops.zeros_like(y_embed), ops.zeros_like(x_embed), ops.zeros_like(pair_dim_t)

        self.op = ops.Custom(f"{library_path(device)}:SineEmbeddingForward", func_type="aot",
                             out_shape=lambda y, x, dim_t: list(y) + [4 * dim_t[0]],
                             out_dtype=lambda y, x, dim_t: y, bprop=bprop)

    def construct(self, y_embed, x_embed, pair_dim_t):
        f32 = ms.float32
        out = self.op(ops.cast(y_embed, f32), ops.cast(x_embed, f32), ops.cast(pair_dim_t, f32))
        return ops.cast(out, y_embed.dtype)
