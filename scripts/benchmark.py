"""Focus-DETR against the same model with a dense encoder: analytic GFLOPs per module and
graph-mode inference latency, batch 1.

    python scripts/benchmark.py --config config/focus_detr_r50_4scale_36ep.yaml \
        [--height 800 --width 1333] [--repeat 5] [--flops-only] [KEY=VALUE ...]

Peak memory: the process's maximum resident set after each model's runs; Focus-DETR runs first,
so its figure is its own, the dense model's is the larger of the two.

Input: one image filling the whole H x W canvas (default 800x1333, the largest test size;
no padding, as the official batch-1 inference). Weights are random: neither the FLOPs nor
the latency depend on them, only on the shapes, which are static.

Dense baseline: the same config with model.focus_rho=1.0 and model.cascade all 1.0. Then
K_max = S (every token of the canvas) and every encoder layer runs deformable attention and
the FFN on all S tokens, as DINO's encoder does. It keeps Focus-DETR's additions (foreground
scoring, multi-category scores on the kept tokens, OESM self-attention among the top
topk_sa tokens), so the encoder ratio isolates the token sparsification; the "DINO encoder"
line also gives the analytic count without those additions.

FLOPs method: 2 x multiply-adds of the convolutions (all of them, frozen ones included),
dense layers, attention products (QK^T and AV) and the deformable sampling (per head channel,
level and point: 4 multiply-adds for the bilinear corners + 1 for the attention weight), for
the shapes the graph actually computes: the static rows R_l of each encoder layer, and the
value projection of every deformable attention over all S tokens (encoder and decoder).
Not counted: normalizations, activations, softmax, position embeddings, element-wise ops,
top-k, gathers/scatters and the post-processing. Papers (fvcore) report multiply-adds as
"FLOPs": divide our numbers by 2 to compare.
"""
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import src  # noqa: F401,E402  (first: its process settings must precede mindspore; src.runtime)

# isort: split
import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from mindspore import Tensor  # noqa: E402

from src.cli import base_parser  # noqa: E402
from src.config import load_config  # noqa: E402
from src.inference import build_inference_net  # noqa: E402
from src.modeling.backbone.resnet import ResNetBackbone  # noqa: E402
from src.modeling.backbone.swin import SwinBackbone  # noqa: E402
from src.runtime import (  # noqa: E402
    cpu_name,
    exit_process,  # noqa: E402
    set_mode,
)

MODULES = ("backbone", "neck", "encoder: foreground scoring", "encoder: MCSP class scores",
           "encoder: OESM self-attention", "encoder: deformable attention", "encoder: FFN",
           "two-stage selection", "decoder", "prediction heads")


def conv_out(size, conv, axis):
    k, s = conv.kernel_size[axis], conv.stride[axis]
    if conv.pad_mode == "same":
        return -(-size // s)
    if conv.pad_mode == "valid":
        return -(-(size - k + 1) // s)
    pad = (conv.padding,) * 4 if isinstance(conv.padding, int) else conv.padding  # top, bottom, left, right
    return (size + pad[2 * axis] + pad[2 * axis + 1] - k) // s + 1


def conv_flops(conv, h, w):
    """(FLOPs, out_h, out_w) of one nn.Conv2d on an h x w input."""
    oh, ow = conv_out(h, conv, 0), conv_out(w, conv, 1)
    kh, kw = conv.kernel_size
    return 2 * conv.in_channels // conv.group * kh * kw * conv.out_channels * oh * ow, oh, ow


def swin_flops(backbone, h, w):
    """Swin FLOPs and the (h, w) of its outputs: 4x4 patch conv, then per block qkv/proj/MLP
    dense layers and the window-attention products on the window-padded map, patch merging."""
    ceil = lambda a, b: -(-a // b)  # noqa: E731
    h, w = ceil(h, 4), ceil(w, 4)
    c, ws = backbone.embed_dim, backbone.window_size
    total = 2 * 3 * 16 * c * h * w
    sizes = []
    for i, depth in enumerate(backbone.depths):
        n = ceil(h, ws) * ws * ceil(w, ws) * ws  # tokens after padding to whole windows
        per_block = dense(n, c, 3 * c) + 2 * 2 * n * ws * ws * c + dense(n, c, c) + mlp(n, (c, 4 * c, c))
        total += depth * per_block
        sizes.append((h, w))
        if i < len(backbone.depths) - 1:
            h, w = ceil(h, 2), ceil(w, 2)
            total += dense(h * w, 4 * c, 2 * c)
            c *= 2
    return total, [sizes[i] for i in backbone.out_indices]


def backbone_flops(backbone, h, w):
    if isinstance(backbone, SwinBackbone):
        return swin_flops(backbone, h, w)
    return resnet_flops(backbone, h, w)


def resnet_flops(backbone, h, w):
    """Backbone FLOPs and the (h, w) of res3, res4, res5, walking the blocks' convolutions."""
    if not isinstance(backbone, ResNetBackbone):
        raise ValueError("the FLOPs count covers ResNet and Swin backbones only")
    total, h, w = conv_flops(backbone.conv1, h, w)
    h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1  # max-pool 3x3, stride 2, padding 1
    sizes = []
    for layer in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4):
        for block in layer:
            if block.down_sample is not None:
                total += conv_flops(block.down_sample[0], h, w)[0]
            for conv in (block.conv1, block.conv2, getattr(block, "conv3", None)):
                if conv is not None:
                    f, h, w = conv_flops(conv, h, w)
                    total += f
        sizes.append((h, w))
    return total, sizes[1:]


def neck_flops(neck, res_sizes):
    total, shapes = 0, []
    for conv_norm, (h, w) in zip(neck.convs, res_sizes):
        f, oh, ow = conv_flops(conv_norm.conv, h, w)
        total += f
        shapes.append((oh, ow))
    h, w = res_sizes[-1]
    for conv_norm in neck.extra_convs:
        f, h, w = conv_flops(conv_norm.conv, h, w)
        total += f
        shapes.append((h, w))
    return total, shapes


def dense(n, d_in, d_out):
    return 2 * n * d_in * d_out


def mlp(n, dims):
    return sum(dense(n, a, b) for a, b in zip(dims[:-1], dims[1:]))


def mha(n, e):
    """Self-attention among n tokens: q/k/v/out projections and the two products."""
    return 4 * dense(n, e, e) + 2 * 2 * n * n * e


def deformable(nq, nv, m):
    """Value projection over nv tokens, offsets/weights/output over nq queries, the sampling."""
    e, samples = m.embed_dim, m.num_heads * m.num_levels * m.num_points
    return (dense(nv, e, e) + dense(nq, e, 2 * samples) + dense(nq, e, samples) + dense(nq, e, e)
            + 2 * nq * m.num_levels * m.num_points * e * 5)


def model_flops(model, m, height, width):
    """{module: FLOPs}, the encoder rows R_l and the token count S for an H x W canvas."""
    flops = dict.fromkeys(MODULES, 0)
    flops["backbone"], res_sizes = backbone_flops(model.backbone, height, width)
    flops["neck"], shapes = neck_flops(model.neck, res_sizes)
    s = sum(h * w for h, w in shapes)
    e, c, q = m.embed_dim, m.num_classes, m.num_queries
    _, rows = model.transformer.token_selector.layer_rows(s)
    # enc_output on src + pos, then the MaskPredictor (LN, E->E, [local, global] -> E/2 -> E/4 -> 1)
    flops["encoder: foreground scoring"] = dense(s, e, e) + mlp(s, (e, e, e // 2, e // 4, 1))
    for r in rows:
        flops["encoder: MCSP class scores"] += dense(r, e, c)
        flops["encoder: OESM self-attention"] += mha(min(m.topk_sa, r), e)
        flops["encoder: deformable attention"] += deformable(r, s, m)
        flops["encoder: FFN"] += 2 * dense(r, e, m.ffn_dim)
    flops["two-stage selection"] = dense(s, e, e) + dense(s, e, c) + mlp(s, (e, e, e, 4)) + dense(q, e, c)
    per_decoder_layer = (mlp(q, (2 * e, e, e)) + mha(q, e) + deformable(q, s, m) + 2 * dense(q, e, m.ffn_dim)
                         + mlp(q, (e, e, e, 4)))  # query-pos head, self/cross attention, FFN, box refinement
    flops["decoder"] = m.num_decoder_layers * per_decoder_layer
    flops["prediction heads"] = m.num_decoder_layers * (dense(q, e, c) + mlp(q, (e, e, e, 4)))
    return flops, rows, s


def dino_encoder_flops(m, s):
    """DINO's encoder: deformable attention and FFN on all s tokens in every layer, nothing else."""
    return m.num_encoder_layers * (deformable(s, s, m) + 2 * dense(s, m.embed_dim, m.ffn_dim))


def latency(net, height, width, repeat):
    """(first call incl. compile, median of ``repeat`` timed calls) in seconds."""
    images = Tensor(np.random.default_rng(0).uniform(0, 255, (1, 3, height, width)).astype(np.float32))
    sizes = Tensor(np.array([[height, width]], np.int32))

    def run():
        start = time.perf_counter()
        for out in net(images, sizes, sizes):
            out.asnumpy()
        return time.perf_counter() - start

    first = run()
    return first, statistics.median(run() for _ in range(repeat))


def main(argv=None):
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--repeat", type=int, default=5, help="timed calls after the warm-up call")
    parser.add_argument("--flops-only", action="store_true")
    args = parser.parse_args(argv)
    set_mode(args.mode, args.device)
    focus_cfg = load_config(args.config, args.opts)
    layers = focus_cfg.model.num_encoder_layers
    dense_cfg = load_config(args.config, list(args.opts) + ["model.focus_rho=1.0", f"model.cascade={[1.0] * layers}"])
    results = {}
    for name, cfg in (("Focus-DETR", focus_cfg), ("dense encoder", dense_cfg)):
        ms.set_seed(cfg.train.seed)
        net = build_inference_net(cfg)
        flops, rows, tokens = model_flops(net.model, cfg.model, args.height, args.width)
        timing = None if args.flops_only else latency(net, args.height, args.width, args.repeat)
        # the process's peak so far: Focus-DETR's own (it runs first), then the larger of the two
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        results[name] = (flops, rows, timing, peak_gb)
        del net

    print(f"\n{args.config} at {args.height}x{args.width} (canvas = image, batch 1), S = {tokens} tokens, "
          f"MindSpore {ms.__version__}, {args.mode} mode, kernels msda={focus_cfg.kernels.msda} "
          f"token_ops={focus_cfg.kernels.token_ops}, {cpu_name()} ({os.cpu_count()} cores)")
    for name, (_, rows, _, _) in results.items():
        print(f"  {name}: encoder layers update {', '.join(map(str, rows))} tokens")
    print("\nGFLOPs (2 x multiply-adds; see the docstring for what is counted)")
    print(f"| {'module':30s} | {'Focus-DETR':>10s} | {'dense':>10s} |")
    print(f"|{'-' * 32}|{'-' * 12}|{'-' * 12}|")
    sparse, full = results["Focus-DETR"][0], results["dense encoder"][0]
    for module in MODULES:
        print(f"| {module:30s} | {sparse[module] / 1e9:10.2f} | {full[module] / 1e9:10.2f} |")
    enc = [sum(v for k, v in f.items() if k.startswith("encoder")) for f in (sparse, full)]
    total = [sum(f.values()) for f in (sparse, full)]
    for label, a, b in (("encoder", *enc), ("total", *total)):
        print(f"| {label + ' GFLOPs':30s} | {a / 1e9:10.2f} | {b / 1e9:10.2f} |")
    ratios = [f"encoder FLOPs {enc[0] / enc[1]:.3f}", f"total FLOPs {total[0] / total[1]:.3f}"]
    if not args.flops_only:
        (first_f, lat_f), (first_d, lat_d) = results["Focus-DETR"][2], results["dense encoder"][2]
        print(f"| {f'latency s (median of {args.repeat})':30s} | {lat_f:10.2f} | {lat_d:10.2f} |")
        print(f"| {'first call s (compile + run)':30s} | {first_f:10.2f} | {first_d:10.2f} |")
        print(f"| {'peak RSS GB (process so far)':30s} | {results['Focus-DETR'][3]:10.2f} | "
              f"{results['dense encoder'][3]:10.2f} |")
        ratios.append(f"latency {lat_f / lat_d:.3f}")
    print("\nFocus-DETR / dense: " + ", ".join(ratios))
    print(f"DINO encoder (deformable attention + FFN on all {tokens} tokens, no scoring/OESM/MCSP): "
          f"{dino_encoder_flops(focus_cfg.model, tokens) / 1e9:.2f} GFLOPs (analytic)")
    return 0


if __name__ == "__main__":
    exit_process(main())
