"""Where the Swin backbone's time goes: graph-mode timings of its parts at one canvas.

    python scripts/profile_swin.py --config config/focus_detr_swin_tiny_224_4scale_36ep.yaml \
        [--height 800 --width 1333] [--repeat 5] [--mode graph|pynative] [KEY=VALUE ...]

A timing harness around sub-cells (per operator instead: ``scripts/profile_ops.py``, MindSpore's
profiler on the whole detector): the whole backbone is timed first, then each part of one regular and one shifted
block of every stage, compiled as its own graph on the input that part sees in the backbone,
then the patch embedding and patch merging. A part's time is the median of ``--repeat`` calls
after one warm-up call, outputs copied to the host. Each row gives the time of one call, how
often the backbone runs that part, and their product; the last line compares the sum of the
parts with the whole backbone (the parts, each in its own graph, also pay for their inputs and
outputs crossing a graph boundary); a second table sums each part over stages and block kinds.
Weights are random: the time depends on the shapes only.
"""
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import src  # noqa: F401,E402  (first: its process settings must precede mindspore; src.runtime)

# isort: split
import numpy as np  # noqa: E402
from mindspore import Tensor, nn  # noqa: E402

from src.cli import base_parser, load  # noqa: E402
from src.modeling.build import build_backbone  # noqa: E402
from src.runtime import cpu_name, exit_process  # noqa: E402


class _ToHeads(nn.Cell):
    def __init__(self, attn, size, shift):
        super().__init__()
        self.attn, self.size, self.shift = attn, size, shift

    def construct(self, qkv):
        return self.attn.to_heads(qkv, self.attn.qkv.bias, *self.size, self.shift)


class _Attend(nn.Cell):
    def __init__(self, attn, mask):
        super().__init__()
        self.attn, self.mask = attn, mask

    def construct(self, q, k, v):
        return self.attn.attend(q, k, v, self.mask)


class _FromHeads(nn.Cell):
    def __init__(self, attn, size, shift):
        super().__init__()
        self.attn, self.size, self.shift = attn, size, shift

    def construct(self, out):
        return self.attn.from_heads(out, *self.size, self.shift)


class _Residual(nn.Cell):
    def construct(self, x, y):
        return x + y


def median_seconds(cell, args, repeat):
    def run():
        start = time.perf_counter()
        out = cell(*args)
        for o in out if isinstance(out, tuple) else (out,):
            o.asnumpy()
        return time.perf_counter() - start

    run()
    return statistics.median(run() for _ in range(repeat))


def block_parts(block, x):
    """[(part, cell, args)] of one block on its input x (B, H, W, C), in the order they run."""
    b, h, w, c = x.shape
    attn, size, shift, mask = block.attn, (b, h, w), block.shift_size, block.window_mask(h, w)
    tokens = block.norm1(x).reshape(-1, c)
    qkv = attn.qkv(tokens)
    heads = attn.to_heads(qkv, attn.qkv.bias, *size, shift)
    attended = attn.attend(*heads, mask)
    merged = attn.from_heads(attended, *size, shift)
    hidden = block.mlp.fc1(x)
    return [
        ("norm1 (LayerNorm)", block.norm1, (x,)),
        ("qkv (Dense C->3C, on the map)", attn.qkv, (tokens,)),
        ("window partition and head split (one row gather)", _ToHeads(attn, size, shift), (qkv,)),
        ("attention core (QK^T, bias, mask, softmax, AV)", _Attend(attn, mask), heads),
        ("head merge and window reverse (one row gather)", _FromHeads(attn, size, shift), (attended,)),
        ("proj (Dense C->C)", attn.proj, (merged,)),
        ("residual add", _Residual(), (x, x)),
        ("norm2 (LayerNorm)", block.norm2, (x,)),
        ("fc1 (Dense C->4C)", block.mlp.fc1, (x,)),
        ("GELU", block.mlp.act, (hidden,)),
        ("fc2 (Dense 4C->C)", block.mlp.fc2, (hidden,)),
        ("residual add", _Residual(), (x, x)),
    ]


def main(argv=None):
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    cfg = load(args)
    if cfg.model.backbone.name != "swin":
        parser.error(f"--config: {args.config} has backbone {cfg.model.backbone.name!r}, not swin")
    net = build_backbone(cfg.model.backbone, cfg.kernels)
    net.set_train(False)
    image = Tensor(np.random.default_rng(0).normal(size=(1, 3, args.height, args.width)).astype(np.float32))
    whole = median_seconds(net, (image,), args.repeat)

    rows = []  # (part, calls per backbone, seconds per call)
    x = net.patch_embed(image)
    rows.append(("patch embedding", 1, median_seconds(net.patch_embed, (image,), args.repeat)))
    for i, layer in enumerate(net.layers):
        if i > max(net.out_indices):
            break
        for kind, first in (("regular", 0), ("shifted", 1)):
            calls = len(range(first, len(layer.blocks), 2))
            if calls == 0:
                continue
            block = layer.blocks[first]
            label = f"stage {i} ({x.shape[1]}x{x.shape[2]}x{x.shape[3]}), {kind}"
            for part, cell, cell_args in block_parts(block, x):
                rows.append((f"{label}: {part}", calls, median_seconds(cell, cell_args, args.repeat)))
        out, following = layer(x)
        if layer.has_downsample:
            rows.append((f"stage {i} patch merging", 1, median_seconds(layer.downsample, (out,), args.repeat)))
        x = following

    print(f"\n{cfg.model.backbone.variant} backbone at {args.height}x{args.width}, batch 1, {args.mode} mode, "
          f"{cpu_name()} ({os.cpu_count()} cores); ms per call, calls per backbone, ms per backbone, share")
    total = sum(calls * seconds for _, calls, seconds in rows)
    print(f"| {'part':75s} | {'ms/call':>8s} | calls | {'ms':>8s} | share |")
    print(f"|{'-' * 77}|{'-' * 10}|-------|{'-' * 10}|-------|")
    for part, calls, seconds in rows:
        print(f"| {part:75s} | {seconds * 1e3:8.1f} | {calls:5d} | {calls * seconds * 1e3:8.1f} | "
              f"{calls * seconds / total:5.1%} |")
    by_part = {}  # the same part summed over stages and block kinds
    for part, calls, seconds in rows:
        name = re.sub(r"^stage \d+ ", "", part.split(": ", 1)[-1])
        by_part[name] = by_part.get(name, 0.0) + calls * seconds
    print(f"\n| {'part, all stages':50s} | {'ms':>8s} | share |")
    print(f"|{'-' * 52}|{'-' * 10}|-------|")
    for name, seconds in sorted(by_part.items(), key=lambda item: -item[1]):
        print(f"| {name:50s} | {seconds * 1e3:8.1f} | {seconds / total:5.1%} |")
    print(f"\nsum of the parts {total:.3f} s, whole backbone {whole:.3f} s (one graph)")
    return 0


if __name__ == "__main__":
    exit_process(main())
