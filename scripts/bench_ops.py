"""Benchmark the custom CPU kernels against the pure-MindSpore implementations, and our
deformable-attention block against the same block in PyTorch, side by side in one run.

    python scripts/bench_ops.py [--mode graph|pynative] [--rounds 3] [--repeat 3] [--scale 1.0] [--ops msda ...]
        [--skip gather] [--force]

* ``msda`` (encoder): the sampling core at the R50 800x1333 encoder shapes (levels 100x167,
  50x84, 25x42, 13x21 = 22223 tokens at strides 8..64; B=2, Q = half the tokens (keep ratio
  0.5), M=8, D=32, L=4, P=4) for 'reference' (grid_sample), 'gather' (four-corner gather) and
  'kernel' (fused AOT). ``msda_dec`` (decoder): the same value maps with Q = 900 + 200 queries
  (two-stage queries + denoising queries).
* ``row_gather`` / ``row_scatter``: token rows (B=2, 22223 x 256, K = 3000) for 'reference'
  (``ops.gather(batch_dims=1)`` / ``tensor_scatter_update``, what the model uses), 'elements'
  (``gather_elements`` / ``tensor_scatter_elements`` on a broadcast index, the naive formulation),
  'kernel', and 'alone': the same CPU kernels called through ctypes on numpy buffers, without
  MindSpore (the difference to 'kernel' is MindSpore's graph launch and output allocation).
* ``block``: a whole deformable-attention block, projections included (B=2, levels 68x113,
  34x57, 17x29, 9x15 = 10250 tokens, every token a query), MindSpore with the kernel ('kernel')
  against PyTorch's CPU implementation written with ``F.grid_sample`` ('torch', when torch is
  installed: ``pip install torch==2.13.0``; both use every core of the machine).
* ``window_attention``: Swin's window attention core at Swin-T's first stage at 800x1333 (1392
  windows of 7 x 7 tokens, 3 heads of 32, a 0 / -100 mask): 'native' (MindSpore's operators,
  ``window_attention_reference``) against 'kernel' (fused AOT, CPU only).
* ``layer_norm``: LayerNorm over the channels of Swin-T's first-stage map at 800x1333
  (200 x 334 tokens x 96): 'native' (``nn.LayerNorm``) against 'kernel' (fused AOT, CPU only).
* ``frozen_bn``: the end of an R50 bottleneck on its res2 map at 800x1333 (256 x 200 x 334):
  frozen BatchNorm, shortcut, ReLU, 'native' (MindSpore's BatchNorm, Add, ReLU) against 'kernel'
  (fused AOT, CPU only; forward+backward: the gradients of x and the shortcut).
* ``position_embedding``: the image's sine position embedding of the four R50 levels at 800x1333
  (B=1, 22223 positions x 256 channels, padding masks of an image filling 92 % of each side):
  'native' (MindSpore's Sin, Cos, Concat) against 'kernel' (fused AOT, CPU only); the embedding
  has no gradient (it comes from the mask), so forward+backward is the gradient of a weight
  multiplying it, what a training step adds.

Each implementation runs in its own subprocess (clean peak RSS; a crash in one does not stop
the others); one whose estimated peak memory exceeds 80% of MemAvailable is skipped (say so)
unless --force, because the OOM killer may pick another process. Forward and forward+backward
are timed after one warm-up (which includes graph compilation), median of --repeat runs, each
synced; the row operators at least ROW_OPS_MIN_REPEAT runs (a few milliseconds each: their
median of 3 moved by a fifth between runs on the development VM). Forward+backward is, for
msda and the block, value_and_grad of a weighted sum of the output (gradients for every float
input, and for the block's parameters); for the row ops, the forward and the backward for a
given output gradient (the gradients of x and rows), because a loss on the (B,S,C) output
would add its own full-size multiply and gradient to both sides.
``--scale`` shrinks the token and query counts (map sides by sqrt(scale)) for a quick run.
The whole comparison runs ``--rounds`` times, each round every implementation once in the same
order; a speed-up is taken within each round (the two sides minutes apart at most, so a machine
that slows down for a while moves both) and reported as the median over the rounds with its range:
one run of a single round moved the row gather's ratio between 2.9x and 6.0x on different days.
The last line is machine-readable:
    bench_ops: rounds=<n> msda_speedup=<x>[<min>-<max>] msda_speedup_vs_gather=<x>[..] gather_speedup=<x>[..]
        scatter_speedup=<x>[..] vs_torch=<r>[..] window_attention_speedup=<x>[..] layer_norm_speedup=<x>[..]
        frozen_bn_speedup=<x>[..] position_embedding_speedup=<x>[..]
(x = reference (gather, native) forward+backward median wall time over the kernel's; r = our block's
forward+backward time over PyTorch's; median over the rounds, [range]; na = not measured)
"""
import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MSDA_IMPLS = ("reference", "gather", "kernel")
TOKEN_IMPLS = ("reference", "elements", "kernel", "alone")  # row_gather and row_scatter each
BLOCK_IMPLS = ("torch", "kernel")
WINDOW_IMPLS = ("native", "kernel")
LAYER_NORM_IMPLS = ("native", "kernel")
FROZEN_BN_IMPLS = ("native", "kernel")
POSITION_EMBEDDING_IMPLS = ("native", "kernel")
OPS = {"msda": MSDA_IMPLS, "msda_dec": MSDA_IMPLS, "row_gather": TOKEN_IMPLS, "row_scatter": TOKEN_IMPLS,
       "block": BLOCK_IMPLS, "window_attention": WINDOW_IMPLS,
       "layer_norm": LAYER_NORM_IMPLS, "frozen_bn": FROZEN_BN_IMPLS, "position_embedding": POSITION_EMBEDDING_IMPLS}
BASE_LEVELS = ((100, 167), (50, 84), (25, 42), (13, 21))
BLOCK_LEVELS = ((68, 113), (34, 57), (17, 29), (9, 15))
DECODER_QUERIES = 900 + 200
# Swin-T's first stage at 800x1333: 29 x 48 windows of 7 x 7 tokens, 3 heads of 32, shifted (masked)
WINDOWS, WINDOW_HEADS, WINDOW_TOKENS, HEAD_DIM = 29 * 48, 3, 49, 32
# Swin-T's first stage at 800x1333: 200 x 334 tokens of 96 channels
LAYER_NORM_SHAPE = (1, 200, 334, 96)
# R50's res2 output at 800x1333: the end of a bottleneck block (frozen BatchNorm, shortcut, ReLU)
FROZEN_BN_SHAPE = (1, 256, 200, 334)
ROW_OPS_MIN_REPEAT = 20


def scaled(levels, scale):
    f = math.sqrt(scale)
    return tuple((max(1, round(h * f)), max(1, round(w * f))) for h, w in levels)


def msda_setup(scale, op="msda"):
    shapes = scaled(BLOCK_LEVELS if op == "block" else BASE_LEVELS, scale)
    tokens = sum(h * w for h, w in shapes)
    queries = {"msda": tokens // 2, "msda_dec": max(1, round(DECODER_QUERIES * scale)), "block": tokens}[op]
    return dict(shapes=shapes, B=2, S=tokens, Q=queries, M=8, D=32, L=4, P=4)


def token_setup(scale):
    tokens = sum(h * w for h, w in msda_setup(scale)["shapes"])  # the encoder's token count
    return dict(B=2, S=tokens, C=256, K=max(1, round(3000 * scale)))


def token_arrays(scale):
    """The row operators' inputs and output gradients as numpy arrays (the same for every
    implementation): x, idx, rows, count, grad_rows (of the gather), grad (of the scatter)."""
    import numpy as np
    cfg = token_setup(scale)
    b, s, c, k = (cfg[n] for n in "BSCK")
    rng = np.random.default_rng(0)
    return dict(x=rng.standard_normal((b, s, c), np.float32),
                idx=np.stack([rng.permutation(s)[:k] for _ in range(b)]).astype(np.int32),
                rows=rng.standard_normal((b, k, c), np.float32), count=np.array([k, k // 2], np.int32),
                grad_rows=rng.standard_normal((b, k, c), np.float32),
                grad=rng.standard_normal((b, s, c), np.float32))


def encoder_like_locations(rng, shapes, b, q, m, p):
    """Locations as the encoder makes them: one reference point per query, every head and point
    a few pixels of its level away from it (a fraction fall outside the map near the borders)."""
    import numpy as np
    ref = rng.uniform(0, 1, (b, q, 1, 1, 1, 2))
    size = np.array([[w, h] for h, w in shapes], np.float64)[None, None, None, :, None, :]
    offsets = rng.normal(0, 2.0, (b, q, m, len(shapes), p, 2)) / size
    return (ref + offsets).astype(np.float32)


def _sync(result):
    """Wait for the result (asnumpy on every output; MindSpore may return before CPU kernels finish)."""
    if isinstance(result, (tuple, list)):
        for r in result:
            _sync(r)
    else:
        result.asnumpy()


def timed(fn, repeat):
    """(first call wall, median wall, median process CPU time) in seconds, each call synced."""
    t0 = time.perf_counter()
    _sync(fn())
    first = time.perf_counter() - t0
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        _sync(fn())
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return first, statistics.median(walls), statistics.median(cpus)


def run_one(op, impl, mode, repeat, scale):
    """One implementation in this process; returns a dict of timings."""
    import numpy as np
    if op == "block" and impl == "torch":
        return run_torch_block(repeat, scale)
    if impl == "alone":
        return run_kernel_alone(op, repeat, scale)
    import src  # noqa: F401  (first: its process settings must precede mindspore; src.runtime)

    # isort: split
    import mindspore as ms
    from mindspore import Tensor, nn

    from src.runtime import set_mode

    set_mode(mode)
    rng = np.random.default_rng(0)
    if op == "block":
        fwd, fwd_bwd = mindspore_block(scale, rng)
    elif op == "window_attention":
        fwd, fwd_bwd = window_attention(impl, scale, rng)
    elif op == "layer_norm":
        fwd, fwd_bwd = layer_norm(impl, scale, rng)
    elif op == "frozen_bn":
        fwd, fwd_bwd = frozen_bn(impl, scale, rng)
    elif op == "position_embedding":
        fwd, fwd_bwd = position_embedding(impl, scale, rng)
    elif op in ("msda", "msda_dec"):
        from src.layers.ms_deform_attn import MSDeformAttnCoreGather, MSDeformAttnCoreReference
        from src.ops.msda_kernel import MSDeformAttnCoreKernel
        cfg = msda_setup(scale, op)
        shapes = cfg["shapes"]
        b, s, q, m, d, lv, p = (cfg[k] for k in "BSQMDLP")
        core = {"reference": MSDeformAttnCoreReference, "gather": MSDeformAttnCoreGather,
                "kernel": MSDeformAttnCoreKernel}[impl]()
        args = [Tensor(rng.standard_normal((b, s, m, d), np.float32)),
                Tensor(encoder_like_locations(rng, shapes, b, q, m, p)),
                Tensor(rng.dirichlet(np.ones(lv * p), (b, q, m)).reshape(b, q, m, lv, p).astype(np.float32))]
        grad_output = Tensor(rng.standard_normal((b, q, m * d), np.float32))

        class Forward(nn.Cell):
            def __init__(self):
                super().__init__()
                self.core = core

            def construct(self, value, locations, weights):
                return self.core(value, shapes, locations, weights)

        class Loss(nn.Cell):
            def __init__(self):
                super().__init__()
                self.core = core

            def construct(self, value, locations, weights, g):
                return (self.core(value, shapes, locations, weights) * g).sum()

        forward = Forward()
        backward = ms.value_and_grad(Loss(), grad_position=(0, 1, 2))
        fwd = lambda: forward(*args)  # noqa: E731
        fwd_bwd = lambda: backward(*args, grad_output)  # noqa: E731
    else:
        from mindspore import ops

        from src.layers.token_ops import RowGatherReference, RowScatterReference
        from src.ops.token_kernel import RowGatherKernel, RowScatterKernel

        class RowGatherElements(nn.Cell):  # the naive formulation: a (B,K,C) broadcast index
            def construct(self, x, idx):
                full = ops.broadcast_to(idx[..., None], (idx.shape[0], idx.shape[1], x.shape[2]))
                return ops.gather_elements(x, 1, full)

        class RowScatterElements(nn.Cell):
            def construct(self, x, idx, rows, count):
                keep = ops.arange(idx.shape[1], dtype=ms.int32)[None, :] < count[:, None]
                full = ops.broadcast_to(idx[..., None], (idx.shape[0], idx.shape[1], x.shape[2]))
                rows = ops.where(keep[..., None], rows, ops.gather_elements(x, 1, full))
                return ops.tensor_scatter_elements(x, full, rows, 1)
        gather, scatter = {"reference": lambda: (RowGatherReference(), RowScatterReference()),
                           "elements": lambda: (RowGatherElements(), RowScatterElements()),
                           "kernel": lambda: (RowGatherKernel(), RowScatterKernel())}[impl]()
        t = {name: Tensor(a) for name, a in token_arrays(scale).items()}

        # forward + backward for a given output gradient, without a loss: a loss on the
        # (B,S,C) scatter output would add its own full-size multiply and gradient to both sides
        if op == "row_gather":
            class Forward(nn.Cell):
                def __init__(self):
                    super().__init__()
                    self.op = gather

                def construct(self, x, idx):
                    return self.op(x, idx)
            inputs, grad_output = (t["x"], t["idx"]), t["grad_rows"]
        else:
            class Forward(nn.Cell):
                def __init__(self):
                    super().__init__()
                    self.op = scatter

                def construct(self, x, idx, rows, count):
                    return self.op(x, idx, rows, count)
            inputs, grad_output = (t["x"], t["idx"], t["rows"], t["count"]), t["grad"]

        class ForwardBackward(nn.Cell):
            def __init__(self):
                super().__init__()
                self.forward = Forward()
                self.grad = ops.GradOperation(get_all=True, sens_param=True)

            def construct(self, *args):
                # the output too, as in training: otherwise the graph drops a forward the
                # backward does not need
                return self.forward(*args[:-1]), self.grad(self.forward)(*args)

        forward, backward = Forward(), ForwardBackward()
        fwd = lambda: forward(*inputs)  # noqa: E731
        fwd_bwd = lambda: backward(*inputs, grad_output)  # noqa: E731
    return measure(op, impl, fwd, fwd_bwd, repeat)


def window_attention(impl, scale, rng):
    """(forward, value_and_grad of a weighted sum for q, k, v and the bias) of Swin's window
    attention core, ``impl`` 'native' (MindSpore's operators) or 'kernel'."""
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, nn

    from src.layers.attention import build_window_attention

    core = build_window_attention(impl, HEAD_DIM, WINDOW_TOKENS)
    windows, n = max(1, round(WINDOWS * scale)), WINDOW_TOKENS
    q, k, v, g = (Tensor(rng.standard_normal((windows, WINDOW_HEADS, n, HEAD_DIM), np.float32)) for _ in range(4))
    bias = Tensor(rng.standard_normal((WINDOW_HEADS, n, n), np.float32))
    region = rng.integers(0, 4, (windows, n))
    mask = Tensor(np.where(region[:, :, None] == region[:, None, :], 0.0, -100.0).astype(np.float32))

    class Forward(nn.Cell):
        def __init__(self):
            super().__init__()
            self.core = core

        def construct(self, q, k, v, bias, mask):
            return self.core(q, k, v, bias, mask)

    class Loss(Forward):
        def construct(self, q, k, v, bias, mask, g):
            return (self.core(q, k, v, bias, mask) * g).sum()

    forward, backward = Forward(), ms.value_and_grad(Loss(), grad_position=(0, 1, 2, 3))
    return (lambda: forward(q, k, v, bias, mask)), (lambda: backward(q, k, v, bias, mask, g))


def layer_norm(impl, scale, rng):
    """(forward, value_and_grad of a weighted sum for x, gamma and beta) of a LayerNorm over the
    channels of Swin-T's first-stage map, ``impl`` 'native' (``nn.LayerNorm``) or 'kernel'."""
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, nn

    from src.layers.layer_norm import build_layer_norm

    b, h, w, c = LAYER_NORM_SHAPE
    shape = (b, max(1, round(h * math.sqrt(scale))), max(1, round(w * math.sqrt(scale))), c)
    norm = build_layer_norm(c, impl)
    x, g = (Tensor(rng.standard_normal(shape, np.float32)) for _ in range(2))

    class Loss(nn.Cell):
        def __init__(self):
            super().__init__()
            self.norm = norm

        def construct(self, x, g):
            return (self.norm(x) * g).sum()

    loss = Loss()
    backward = ms.value_and_grad(loss, grad_position=0, weights=loss.trainable_params())
    return (lambda: norm(x)), (lambda: backward(x, g))


def frozen_bn(impl, scale, rng):
    """(forward, value_and_grad of a weighted sum for x and the shortcut) of the ResNet norm
    ending a bottleneck block, relu(frozen_bn(x) + shortcut), ``impl`` 'native' (MindSpore's
    BatchNorm, Add, ReLU) or 'kernel'."""
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, nn

    from src.modeling.backbone.resnet_norm import FrozenBatchNorm2d

    b, c, h, w = FROZEN_BN_SHAPE
    shape = (b, c, max(1, round(h * math.sqrt(scale))), max(1, round(w * math.sqrt(scale))))
    norm = FrozenBatchNorm2d(c, impl=impl)
    x, shortcut, g = (Tensor(rng.standard_normal(shape, np.float32)) for _ in range(3))

    class Loss(nn.Cell):
        def __init__(self):
            super().__init__()
            self.norm = norm

        def construct(self, x, shortcut, g):
            return (self.norm(x, shortcut, relu=True) * g).sum()

    backward = ms.value_and_grad(Loss(), grad_position=(0, 1))
    return (lambda: norm(x, shortcut, relu=True)), (lambda: backward(x, shortcut, g))


def position_embedding(impl, scale, rng):
    """(forward, value_and_grad of sum(embedding * weight) for the weights) of the four levels'
    sine embeddings, ``impl`` 'native' (MindSpore's operators) or 'kernel'."""
    import mindspore as ms
    import numpy as np
    from mindspore import Parameter, ParameterTuple, Tensor, nn

    from src.layers.position_embedding import PositionEmbeddingSine

    masks = []
    for h, w in BASE_LEVELS:
        h, w = max(1, round(h * math.sqrt(scale))), max(1, round(w * math.sqrt(scale)))
        mask = np.zeros((1, h, w), bool)
        mask[:, int(0.92 * h) + 1:] = True
        mask[:, :, int(0.92 * w) + 1:] = True
        masks.append(Tensor(mask))
    embedding = PositionEmbeddingSine(128, 20, 0.0, impl=impl)

    class Embed(nn.Cell):
        def __init__(self):
            super().__init__()
            self.embedding = embedding

        def construct(self, masks):
            return tuple(self.embedding(m) for m in masks)

    class Loss(nn.Cell):
        def __init__(self):
            super().__init__()
            self.embedding = embedding
            self.weights = ParameterTuple(Parameter(Tensor(rng.standard_normal(m.shape + (256,), np.float32)),
                                                    name=f"w{i}") for i, m in enumerate(masks))

        def construct(self, masks):
            total = 0.0
            for m, w in zip(masks, self.weights):
                total = total + (self.embedding(m) * w).sum()
            return total

    forward, loss = Embed(), Loss()
    backward = ms.value_and_grad(loss, grad_position=None, weights=loss.trainable_params())
    masks = tuple(masks)
    return (lambda: forward(masks)), (lambda: backward(masks))


def measure(op, impl, fwd, fwd_bwd, repeat):
    if op.startswith("row_"):
        repeat = max(repeat, ROW_OPS_MIN_REPEAT)
    first_f, fwd_t, fwd_cpu = timed(fwd, repeat)
    first_b, fwd_bwd_t, fwd_bwd_cpu = timed(fwd_bwd, repeat)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return dict(op=op, impl=impl, fwd=fwd_t, fwd_bwd=fwd_bwd_t, first_fwd=first_f, first_fwd_bwd=first_b,
                fwd_cpu=fwd_cpu, fwd_bwd_cpu=fwd_bwd_cpu, peak_rss_mb=peak)


def block_inputs(rng, cfg):
    """query (= value, encoder self-attention), positional embedding, padding mask, reference points."""
    import numpy as np
    b, s = cfg["B"], cfg["S"]
    query = rng.standard_normal((b, s, cfg["M"] * cfg["D"]), np.float32)
    pos = rng.standard_normal((b, s, cfg["M"] * cfg["D"]), np.float32)
    ref = rng.uniform(0.02, 0.98, (b, s, cfg["L"], 2)).astype(np.float32)
    return query, pos, ref


def mindspore_block(scale, rng):
    """(forward, forward+backward) closures of our MultiScaleDeformableAttention with the kernel."""
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, nn

    from src.layers.ms_deform_attn import MultiScaleDeformableAttention
    cfg = msda_setup(scale, "block")
    shapes = cfg["shapes"]
    block = MultiScaleDeformableAttention(cfg["M"] * cfg["D"], cfg["M"], cfg["L"], cfg["P"], impl="kernel")
    query, pos, ref = (Tensor(a) for a in block_inputs(rng, cfg))
    mask = Tensor(np.zeros((cfg["B"], cfg["S"]), np.bool_))

    class Forward(nn.Cell):
        def __init__(self):
            super().__init__()
            self.block = block

        def construct(self, q, p, r):
            return self.block(q, p, q, mask, r, shapes)

    class Loss(nn.Cell):
        def __init__(self):
            super().__init__()
            self.forward = Forward()

        def construct(self, q, p, r):
            return self.forward(q, p, r).sum()

    forward, loss = Forward(), Loss()
    backward = ms.value_and_grad(loss, grad_position=(0, 1, 2), weights=loss.trainable_params())
    return (lambda: forward(query, pos, ref)), (lambda: backward(query, pos, ref))


def run_torch_block(repeat, scale):
    """The same block in PyTorch (CPU, every core): projections, softmax, F.grid_sample sampling
    per level (zeros padding, align_corners=False), output projection and residual."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn as tnn
    cfg = msda_setup(scale, "block")
    shapes, b, s, m, d, lv, p = cfg["shapes"], cfg["B"], cfg["S"], cfg["M"], cfg["D"], cfg["L"], cfg["P"]
    e = m * d
    torch.manual_seed(0)
    value_proj, output_proj = tnn.Linear(e, e), tnn.Linear(e, e)
    offsets_proj, weights_proj = tnn.Linear(e, m * lv * p * 2), tnn.Linear(e, m * lv * p)
    normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float32)
    query, pos, ref = (torch.from_numpy(a) for a in block_inputs(np.random.default_rng(0), cfg))

    def forward(q_in, pos_in, ref_in):
        q = q_in + pos_in
        v = value_proj(q_in).view(b, s, m, d)
        offsets = offsets_proj(q).view(b, s, m, lv, p, 2)
        weights = weights_proj(q).view(b, s, m, lv * p).softmax(-1).view(b, s, m, lv, p)
        grids = 2 * (ref_in[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]) - 1
        sampled, start = [], 0
        for level, (h, w) in enumerate(shapes):
            v_l = v[:, start:start + h * w].permute(0, 2, 3, 1).reshape(b * m, d, h, w)
            g_l = grids[:, :, :, level].permute(0, 2, 1, 3, 4).reshape(b * m, s, p, 2)
            sampled.append(F.grid_sample(v_l, g_l, mode="bilinear", padding_mode="zeros", align_corners=False))
            start += h * w
        stacked = torch.stack(sampled, -2).flatten(-2)  # (B*M, D, Q, L*P)
        attn = weights.permute(0, 2, 1, 3, 4).reshape(b * m, 1, s, lv * p)
        out = (stacked * attn).sum(-1).view(b, m * d, s).transpose(1, 2)
        return q_in + output_proj(out)

    inputs = [t.clone().requires_grad_(True) for t in (query, pos, ref)]

    def fwd():
        with torch.no_grad():
            return forward(*inputs)

    def fwd_bwd():
        for t in inputs:
            t.grad = None
        out = forward(*inputs).sum()
        out.backward()
        return out

    class Synced:  # torch runs eagerly: the result is ready when the call returns
        def asnumpy(self):
            return None

    return measure("block", "torch", lambda: (fwd(), Synced())[1], lambda: (fwd_bwd(), Synced())[1], repeat)


# rough peak-memory model of the msda implementations, in units of B*M*Q*L*P*D float32
# (calibrated at scale 1: reference 6.6 GB; gather was OOM-killed with ~9 GB available)
MSDA_MEMORY_UNITS = {"reference": 18, "gather": 32, "kernel": 2}


def run_kernel_alone(op, repeat, scale):
    """The CPU row kernels called directly (ctypes on numpy buffers, no MindSpore, no framework
    output allocation): what is left of the 'kernel' rows is MindSpore's graph launch and memory."""
    import ctypes

    import numpy as np

    from src.ops.build import library_path
    lib = ctypes.CDLL(str(library_path("CPU")))
    arrays = token_arrays(scale)
    x, rows = arrays["x"], arrays["rows"]
    arrays.update(out_rows=np.empty_like(rows), out=np.empty_like(x), dx=np.empty_like(x), drows=np.empty_like(rows))

    def call(name, *keys):
        """A no-argument call of the AOT entry ``name`` on the arrays ``keys``."""
        bufs = [arrays[key] for key in keys]
        n = len(bufs)
        shape_arrays = [(ctypes.c_int64 * a.ndim)(*a.shape) for a in bufs]
        argv = ((ctypes.c_void_p * n)(*[a.ctypes.data for a in bufs]), (ctypes.c_int * n)(*[a.ndim for a in bufs]),
                (ctypes.POINTER(ctypes.c_int64) * n)(*[ctypes.cast(a, ctypes.POINTER(ctypes.c_int64))
                                                       for a in shape_arrays]),
                (ctypes.c_char_p * n)(*[str(a.dtype).encode() for a in bufs]))
        fn = getattr(lib, name)

        def run():
            if fn(n, *argv, None, None) != 0:
                raise RuntimeError(f"{name} failed")
        return run

    if op == "row_gather":
        forward = call("RowGather", "x", "idx", "out_rows")
        backward = call("RowGatherGrad", "x", "idx", "grad_rows", "dx")
    else:
        forward = call("RowScatter", "x", "idx", "rows", "count", "out")
        backward = call("RowScatterGrad", "x", "idx", "rows", "count", "grad", "dx", "drows")

    def fwd():
        forward()
        return ()  # nothing for timed() to sync: the call returns when the kernel is done

    def fwd_bwd():
        forward()
        backward()
        return ()
    return measure(op, "alone", fwd, fwd_bwd, repeat)


def mem_available():
    try:
        with open("/proc/meminfo") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemAvailable"))
    except (OSError, StopIteration):
        return None


def run_subprocess(op, impl, args):
    if op in ("msda", "msda_dec"):
        c = msda_setup(args.scale, op)
        need = MSDA_MEMORY_UNITS[impl] * c["B"] * c["M"] * c["Q"] * c["L"] * c["P"] * c["D"] * 4 + 5e8
        have = mem_available()
        if have is not None and need > 0.8 * have and not args.force:
            return dict(op=op, impl=impl, error=f"skipped: needs ~{need / 1e9:.1f} GB, {have / 1e9:.1f} GB "
                        f"available (the OOM killer may pick another process); use --scale or --force")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", op, impl, "--mode", args.mode,
           "--repeat", str(args.repeat), "--scale", str(args.scale)]
    t0 = time.perf_counter()
    # os.environ explicitly: importing MindSpore here set OMP_NUM_THREADS=1 in the C environment,
    # which a child would inherit, running the OpenMP kernels on one thread
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    if proc.returncode < 0:
        why = f"killed by signal {-proc.returncode}" + (" (out of memory?)" if proc.returncode == -9 else "")
    else:
        why = f"exit {proc.returncode}: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
    return dict(op=op, impl=impl, error=f"{why} after {time.perf_counter() - t0:.0f}s")


def fmt(v):
    return f"{v * 1000:9.1f}" if isinstance(v, float) else f"{'-':>9s}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("graph", "pynative"), default="graph")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="times the whole comparison runs (ratios per round)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 800x1333 token/query counts")
    parser.add_argument("--ops", nargs="*", default=list(OPS), choices=OPS, help="operators to run (default all)")
    parser.add_argument("--skip", nargs="*", default=[], help="implementations to skip, e.g. reference")
    parser.add_argument("--force", action="store_true", help="run even where memory looks insufficient")
    parser.add_argument("--child", nargs=2, metavar=("OP", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_one(*args.child, args.mode, args.repeat, args.scale)), flush=True)
        return

    from src.ops.build import library_path
    library_path()  # build outside the timed subprocesses
    mc, tc, bc = msda_setup(args.scale), token_setup(args.scale), msda_setup(args.scale, "block")
    print(f"mode={args.mode} rounds={args.rounds} repeat={args.repeat} (row ops >= {ROW_OPS_MIN_REPEAT}) "
          f"scale={args.scale} threads=OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'default')} "
          f"cpus={os.cpu_count()}")
    print(f"msda: B={mc['B']} S={mc['S']} Q={mc['Q']} M={mc['M']} D={mc['D']} L={mc['L']} P={mc['P']} "
          f"levels={list(mc['shapes'])}")
    print(f"token ops: B={tc['B']} S={tc['S']} C={tc['C']} K={tc['K']} "
          "(row_gather: K rows out; row_scatter: K rows back, count=(K, K/2))")
    print(f"msda_dec: the same maps, Q={msda_setup(args.scale, 'msda_dec')['Q']} decoder queries")
    print(f"block: B={bc['B']} S=Q={bc['S']} levels={list(bc['shapes'])} embed={bc['M'] * bc['D']}")
    print(f"window_attention: {max(1, round(WINDOWS * args.scale))} windows x {WINDOW_HEADS} heads, "
          f"{WINDOW_TOKENS} tokens x {HEAD_DIM}, masked (Swin-T stage 1)")
    print(f"layer_norm: {LAYER_NORM_SHAPE} at scale 1 (Swin-T stage 1), over the last axis")
    print(f"frozen_bn: {FROZEN_BN_SHAPE} at scale 1 (R50 res2), frozen BatchNorm + shortcut + ReLU")
    print(f"position_embedding: levels {list(BASE_LEVELS)} at scale 1 (R50), B=1, 256 channels")
    plan = [(op, impl) for op in OPS if op in args.ops for impl in OPS[op] if impl not in args.skip]
    rounds = []  # each round runs every implementation once, in the same order: side by side
    for k in range(args.rounds):
        rounds.append({(op, impl): run_subprocess(op, impl, args) for op, impl in plan})
        print(f"round {k + 1}/{args.rounds} done", flush=True)

    def ratios(op, base, key):
        """This round-by-round ratio base / kernel of ``key`` (rounds where either failed left out)."""
        pairs = [(r.get((op, base), {}), r.get((op, "kernel"), {})) for r in rounds]
        return [a[key] / k[key] for a, k in pairs if key in a and key in k]

    def median_of(values):
        return statistics.median(values) if values else None

    print(f"\n{'op':18s} {'impl':10s} {'fwd ms':>9s} {'f+b ms':>9s} {'fwd cpu':>9s} {'f+b cpu':>9s} "
          f"{'1st fwd':>9s} {'1st f+b':>9s} {'peak MB':>8s} {'fwd x':>6s} {'f+b x':>6s} {'f+b x range':>12s}")
    for op, impl in plan:
        runs = [r[(op, impl)] for r in rounds if "error" not in r[(op, impl)]]
        if not runs:
            print(f"{op:18s} {impl:10s} {rounds[0][(op, impl)]['error']}")
            continue
        med = {key: median_of([r[key] for r in runs]) for key in runs[0] if isinstance(runs[0][key], float)}
        spread = ratios(op, impl, "fwd_bwd")
        fwd_x, fwd_bwd_x = median_of(ratios(op, impl, "fwd")), median_of(spread)
        print(f"{op:18s} {impl:10s} " + " ".join(fmt(med[k]) for k in (
            "fwd", "fwd_bwd", "fwd_cpu", "fwd_bwd_cpu", "first_fwd", "first_fwd_bwd"))
              + f" {max(r['peak_rss_mb'] for r in runs):8.0f} "
              + " ".join(f"{c:6.1f}" if c else "     -" for c in (fwd_x, fwd_bwd_x))
              + (f" {min(spread):5.1f}-{max(spread):<6.1f}" if spread and impl != "kernel" else f" {'-':>12s}"))
    print(f"(ms: median over {args.rounds} rounds of each round's median wall time; cpu: the same of the process\n"
          " CPU time, all threads; 1st: first call incl. compile; f+b: msda/block: value_and_grad of a weighted\n"
          " sum (every float input's gradient, the block's parameters'); row ops: forward + backward for a given\n"
          " output gradient; x: this implementation over the kernel, taken within each round, median and range\n"
          " over the rounds)")

    def show(op, base):
        values = ratios(op, base, "fwd_bwd")
        if base == "torch":  # reported as ours over PyTorch's time
            values = [1 / v for v in values]
        return f"{median_of(values):.2f}[{min(values):.2f}-{max(values):.2f}]" if values else "na"
    print(f"bench_ops: rounds={args.rounds} msda_speedup={show('msda', 'reference')} "
          f"msda_speedup_vs_gather={show('msda', 'gather')} "
          f"gather_speedup={show('row_gather', 'reference')} "
          f"scatter_speedup={show('row_scatter', 'reference')} "
          f"vs_torch={show('block', 'torch')} "
          f"window_attention_speedup={show('window_attention', 'native')} "
          f"layer_norm_speedup={show('layer_norm', 'native')} "
          f"frozen_bn_speedup={show('frozen_bn', 'native')} "
          f"position_embedding_speedup={show('position_embedding', 'native')}")

if __name__ == "__main__":
    main()
