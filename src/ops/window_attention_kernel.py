"""Swin's window attention core as one AOT C++ kernel forward and one backward
(``window_attention_cpu.cpp``), CPU only.

Drop-in for ``src.layers.attention.window_attention_reference`` (MindSpore operators) within
float32 rounding (tests/test_ops.py). On CPU the reference's 49 x 49 products over thousands of
windows are slow batched products, followed by two broadcast adds and a softmax, each a pass
over logits the training graph keeps; the kernel keeps one window in cache and its backward
recomputes the softmax. On GPU and Ascend MindSpore's batched products are the fast path.
"""
import mindspore as ms
from mindspore import nn, ops

from .build import KernelUnavailable, current_device, library_path

HEAD_DIM = 32      # the head size the kernel is compiled for (every Swin variant's)
MAX_TOKENS = 64    # tokens per window it holds (a 7 x 7 window: 49)


class WindowAttentionKernel(nn.Cell):
    """(q, k, v, bias, mask=None) -> softmax(q k^T + bias + mask) v per window and head, as
    ``window_attention_reference``. Float32 inside (other dtypes are cast around the kernel); the
    mask, structure, gets no gradient. ``head_dim`` and ``tokens`` are checked here, so that
    ``kernels.window_attention=auto`` falls back where the kernel does not apply."""

    def __init__(self, head_dim=HEAD_DIM, tokens=49):
        super().__init__()
        device = current_device()
        if device != "CPU":
            raise KernelUnavailable(f"the window attention kernel exists for CPU only, not {device}")
        if head_dim != HEAD_DIM or not 1 <= tokens <= MAX_TOKENS:
            raise KernelUnavailable(f"the window attention kernel takes head size {HEAD_DIM} and at most "
                                    f"{MAX_TOKENS} tokens per window, not {head_dim} and {tokens}")
        so = library_path(device)
        backward = ops.Custom(
            f"{so}:WindowAttentionBackward", func_type="aot",
            out_shape=lambda q, k, v, bias, mask, dout: (q, q, q, [q[0], q[1], q[2], q[2]]),
            out_dtype=lambda q, k, v, bias, mask, dout: (q, q, q, q))

        def bprop(q, k, v, bias, mask, out, dout):
            dq, dk, dv, dlogits = backward(q, k, v, bias, mask, dout)
            return dq, dk, dv, dlogits.sum(0), ops.zeros_like(mask)

        self.op = ops.Custom(f"{so}:WindowAttentionForward", out_shape=lambda q, k, v, bias, mask: q,
                             out_dtype=lambda q, k, v, bias, mask: q, func_type="aot", bprop=bprop)

    def construct(self, q, k, v, bias, mask=None):
        f32 = ms.float32
        n = q.shape[2]
        mask = ops.zeros((1, n, n), f32) if mask is None else ops.cast(mask, f32)
        out = self.op(ops.cast(q, f32), ops.cast(k, f32), ops.cast(v, f32), ops.cast(bias, f32), mask)
        return ops.cast(out, q.dtype)
