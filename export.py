"""Export Focus-DETR with its post-processing to MINDIR for one static input shape.

    python export.py --config config/focus_detr_r50_4scale_36ep.yaml --ckpt model.ckpt \
        --file_format MINDIR --batch 1 --height 800 --width 1344 [--output focus_detr_r50]

Graph inputs: images (B,3,H,W) float32 raw RGB 0..255 (the graph normalizes), each image
resized with the config's test resize and zero-padded bottom/right to H x W; image_sizes
(B,2) int32 [h, w] of the resized images; orig_sizes (B,2) int32 [h, w] of the originals.
Outputs: scores (B,K), labels (B,K) int32 (contiguous class ids), boxes (B,K,4) xyxy in
original pixels, keep (B,K) bool; K = model.num_select. With model.canvas: extent (default)
each image gives the official detections whatever H x W is (README, "Static canvases").
The graph uses the pure-MindSpore deformable attention and token gather/scatter (it runs on
any device); --custom-kernels keeps the config's CPU kernels instead.
"""
import os
import time

import mindspore as ms
import numpy as np
from mindspore import Tensor

import src  # noqa: F401  (CPU start-up fix before the first convolution)
from src.cli import base_parser, load
from src.inference import build_inference_net
from src.runtime import exit_process

# The custom CPU kernels (kernels: auto | kernel) are AOT .so files whose absolute path is baked
# into the MINDIR, so a graph using them runs only on this machine's CPU. By default the export
# uses the pure-MindSpore implementations, which run on any device.
PORTABLE_KERNELS = ["kernels.msda=reference", "kernels.token_ops=reference"]


def example_inputs(batch, height, width):
    """Inputs of the right shapes and dtypes (the graph is static: their values do not matter)."""
    sizes = Tensor(np.tile(np.array([[height, width]], np.int32), (batch, 1)))
    return Tensor(np.zeros((batch, 3, height, width), np.float32)), sizes, sizes


def main(argv=None):
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", help="model weights (.ckpt written by train.py or the converter)")
    parser.add_argument("--random-init", action="store_true",
                        help="export untrained weights instead of --ckpt (file size / timing checks only)")
    parser.add_argument("--file_format", choices=("MINDIR",), default="MINDIR",
                        help="MINDIR only: MindSpore 2.10's ONNX exporter refuses this graph (README, Export), "
                        "AIR needs an Ascend host")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--height", type=int, required=True, help="canvas height")
    parser.add_argument("--width", type=int, required=True, help="canvas width")
    parser.add_argument("--output", help="output file name (default focus_detr_b{B}_{H}x{W}.mindir)")
    parser.add_argument("--custom-kernels", action="store_true",
                        help="keep the config's custom CPU kernels (the MINDIR then needs their .so at the same path)")
    args = parser.parse_args(argv)
    if bool(args.ckpt) == args.random_init:
        parser.error("give exactly one of --ckpt CKPT and --random-init")
    if args.ckpt and not os.path.isfile(args.ckpt):
        parser.error(f"--ckpt: no such file {args.ckpt}")
    if not args.custom_kernels:
        args.opts = list(args.opts) + PORTABLE_KERNELS
    cfg = load(args)
    if args.random_init:
        ms.set_seed(cfg.train.seed)
    net = build_inference_net(cfg, args.ckpt)
    output = args.output or f"focus_detr_b{args.batch}_{args.height}x{args.width}"
    output = output[:-len(".mindir")] if output.endswith(".mindir") else output
    start = time.perf_counter()
    ms.export(net, *example_inputs(args.batch, args.height, args.width), file_name=output,
              file_format=args.file_format)
    seconds = time.perf_counter() - start
    path = output + ".mindir"
    print(f"export: wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB) in {seconds:.1f} s; inputs "
          f"images ({args.batch},3,{args.height},{args.width}) float32, image_sizes and orig_sizes "
          f"({args.batch},2) int32; outputs scores, labels, boxes, keep ({cfg.model.num_select} per image)")
    return 0


if __name__ == "__main__":
    exit_process(main())
