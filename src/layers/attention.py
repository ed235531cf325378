"""Multi-head attention with torch ``nn.MultiheadAttention`` parameter layout, the
softmax-weighted sum at its core, and Swin's window attention core with its dispatch point."""
import math
from functools import lru_cache

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import XavierUniform, initializer

from .dense import Dense
from .elementwise import broadcast_constant
from .masking import masked_fill

# Finite "minus infinity": exp() underflows to exactly 0 like -inf, but a fully blocked row
# gives a uniform row instead of NaN.
MASK_VALUE = -1e30

_MATMUL_TA = ops.BatchMatMul(transpose_a=True)
_MATMUL_TB = ops.BatchMatMul(transpose_b=True)


class SoftmaxProduct(nn.Cell):
    """``softmax(logits, -1) @ v`` with a backward that keeps only the weights.

    Differentiated by MindSpore 2.10, the softmax's backward broadcasts its row sums implicitly,
    and in CPU graph mode that holds about eight (Lq, Lk) tensors per attention until the graph
    ends (``scripts/probe_graph_memory.py --grad``); the decoder's self-attention over 900
    queries and the denoising groups made it the largest part of the training graph. Here the
    weights are the forward's second output, which the ``bprop`` reads, and the row sums are
    broadcast explicitly: one (Lq, Lk) tensor is kept, the weights the backward needs. The
    formula is softmax's own, d logits = w * (dw - sum(w * dw)), with dw = dout @ v^T and
    dv = w^T @ dout. The weights are multiplied in v's dtype (float16 training) and kept in the
    logits' dtype, in which the softmax and its backward run."""

    def construct(self, logits, v):
        weights = ops.softmax(logits, -1)
        return ops.matmul(ops.cast(weights, v.dtype), v), weights

    def bprop(self, logits, v, out, dout):
        weights, dout = out[1], dout[0]
        grad_v = _MATMUL_TA(ops.cast(weights, v.dtype), dout)
        grad_weights = ops.cast(_MATMUL_TB(dout, v), weights.dtype)
        row = ops.sum(weights * grad_weights, -1, keepdim=True)
        return weights * (grad_weights - ops.broadcast_to(row, weights.shape)), grad_v


def query_key_product(q, k):
    """``q @ k^T`` for (..., Lq, D) q and (..., Lk, D) k, the transpose inside the product: a
    ``Transpose`` node's CPU kernel keeps two 8-byte indices per element for the compiled graph's
    life (README, "Graph-mode memory on CPU")."""
    return _MATMUL_TB(q, k)


@lru_cache(maxsize=None)
def head_rows(batch, length, num_heads, to_heads):
    """Row indices (int32 numpy) that move the head-sized rows of a (B, L, H * d) projection into
    (B, H, L, d) order (``to_heads``), or those of a (B, H, L, d) attention output back to
    (B, L, H * d). One row ``Gather`` instead of a 4-D ``Transpose``, whose CPU kernel keeps two
    8-byte indices per element for the compiled graph's life (README, "Graph-mode memory on CPU");
    the rows are copied, not computed, so the values are the transpose's bit for bit."""
    shape = (batch, length, num_heads) if to_heads else (batch, num_heads, length)
    return np.arange(batch * length * num_heads, dtype=np.int32).reshape(shape).transpose(0, 2, 1).ravel()


# one stateless Cell shared by every attention, kept out of the Cell trees it serves: a child
# Cell would be cast along with its parent by ``to_float`` (src/engine/mixed_precision.py), and
# the softmax must stay in the logits' dtype
_SOFTMAX_PRODUCT = SoftmaxProduct()


def softmax_product(logits, v):
    """``ops.matmul(ops.softmax(logits, -1), v)`` for (..., Lq, Lk) logits and (..., Lk, D) v.
    The weights are not returned: the backward ignores their gradient."""
    return _SOFTMAX_PRODUCT(logits, v)[0]


def window_attention_reference(q, k, v, bias, mask=None):
    """Swin's window attention core, ``softmax(q k^T + bias + mask) v``, in MindSpore operators.

    q (scaled), k, v: (B_, H, N, d) of B_ = images x W windows; bias: (H, N, N); mask: None or
    (W, N, N) additive, window b reading mask[b % W]. Bias and mask are broadcast explicitly, the
    mask at run time (README, "Graph-mode memory on CPU"; ``src/layers/elementwise.py``)."""
    b_, heads, n, _ = q.shape
    attn = query_key_product(q, k)
    attn = attn + ops.broadcast_to(bias[None], attn.shape)
    if mask is not None:
        nw = mask.shape[0]
        attn = attn.reshape(b_ // nw, nw, heads, n, n)
        attn = (attn + broadcast_constant(mask.reshape(1, nw, 1, n, n), attn.shape, attn)).reshape(b_, heads, n, n)
    return softmax_product(attn, v)


def build_window_attention(impl="native", head_dim=32, tokens=49):
    """The dispatch point for Swin's window attention core (``kernels.window_attention``):
    a callable of ``window_attention_reference``'s arguments.

    ``impl``: 'native' (``window_attention_reference``), 'kernel' (forward and backward each one
    fused AOT C++ pass per window, ``src.ops.WindowAttentionKernel``: CPU, head size 32, windows
    of at most 64 tokens; an error elsewhere), 'auto' (the kernel where it applies, else 'native'
    after one logged warning)."""
    if impl == "native":
        return window_attention_reference
    if impl in ("kernel", "auto"):
        from ..ops import window_attention_kernel_or_none  # lazy: compiles the kernels on first use only

        kernel = window_attention_kernel_or_none(head_dim, tokens, required=impl == "kernel", fallback="native")
        return kernel if kernel is not None else window_attention_reference
    raise ValueError(f"kernels.window_attention: unknown implementation {impl!r} (auto | kernel | native)")


class MultiheadAttention(nn.Cell):
    """Batch-first MHA ``out = W_o softmax(QK^T/sqrt(d) + mask) V`` without dropout.

    Parameters: ``in_proj_weight`` (3E,E) and ``in_proj_bias`` (3E) packed q,k,v as torch,
    ``out_proj.weight``/``out_proj.bias``. ``attn_mask`` (Lq,Lk) and ``key_padding_mask``
    (B,Lk) are bool with True = blocked.
    """

    def __init__(self, embed_dim=256, num_heads=8):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.in_proj_weight = Parameter(initializer(XavierUniform(), (3 * embed_dim, embed_dim), ms.float32))
        self.in_proj_bias = Parameter(Tensor(np.zeros(3 * embed_dim, np.float32)))
        self.out_proj = Dense(embed_dim, embed_dim)
        self.out_proj.bias.set_data(Tensor(np.zeros(embed_dim, np.float32)))
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.matmul_t = ops.MatMul(transpose_b=True)

    def _project(self, x, part):
        e = self.embed_dim
        # raw Parameters are not cast by Cell.to_float: follow the activations' dtype (float16 training)
        w = ops.cast(self.in_proj_weight[part * e:(part + 1) * e], x.dtype)
        b = ops.cast(self.in_proj_bias[part * e:(part + 1) * e], x.dtype)
        bsz, n, _ = x.shape
        # one 2-D product and BiasAdd, as nn.Dense (a broadcast add of the bias is held in CPU graph memory)
        y = ops.bias_add(self.matmul_t(x.reshape(bsz * n, e), w), b)
        rows = Tensor(head_rows(bsz, n, self.num_heads, True))
        return ops.gather(y.reshape(-1, self.head_dim), rows, 0).reshape(bsz, self.num_heads, n, self.head_dim)

    def construct(self, query, key, value, attn_mask=None, key_padding_mask=None):
        q = self._project(query, 0) * self.scale
        k = self._project(key, 1)
        v = self._project(value, 2)
        # masking and softmax in float32: MASK_VALUE overflows float16 to -inf (NaN on blocked rows)
        # the key transposed by its own node here (small at the decoder's sizes): with
        # query_key_product the two-worker relaunch test's rounding noise reached an Adam-stepped
        # backbone weight (README, "Distributed training", why not bit for bit)
        logits = ops.cast(ops.matmul(q, k.transpose(0, 1, 3, 2)), ms.float32)  # (B,H,Lq,Lk)
        if attn_mask is not None:
            logits = masked_fill(logits, attn_mask[None, None], MASK_VALUE)
        if key_padding_mask is not None:
            logits = masked_fill(logits, key_padding_mask[:, None, None, :], MASK_VALUE)
        out = softmax_product(logits, v)
        bsz, n = out.shape[0], out.shape[2]
        rows = Tensor(head_rows(bsz, n, self.num_heads, False))
        return self.out_proj(ops.gather(out.reshape(-1, self.head_dim), rows, 0).reshape(bsz, n, self.embed_dim))
