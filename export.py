"""Export Focus-DETR with its post-processing to MINDIR or ONNX for one static input shape.

    python export.py --config config/focus_detr_r50_4scale_36ep.yaml --ckpt model.ckpt \
        --file_format MINDIR --batch 1 --height 800 --width 1344 [--output focus_detr_r50]

Graph inputs: images (B,3,H,W) float32 raw RGB 0..255 (the graph normalizes), each image
resized with the config's test resize and zero-padded bottom/right to H x W; image_sizes
(B,2) int32 [h, w] of the resized images; orig_sizes (B,2) int32 [h, w] of the originals.
Outputs: scores (B,K), labels (B,K) int32 (contiguous class ids), boxes (B,K,4) xyxy in
original pixels, keep (B,K) bool; K = model.num_select. With model.canvas: extent (default)
each image gives the official detections whatever H x W is (README, "Static canvases").
The graph uses the pure-MindSpore deformable attention and token gather/scatter (it runs on
any device); --custom-kernels keeps the config's CPU kernels instead (MINDIR only). ONNX (opset
11) also takes the four-corner gather for the deformable sampling (the exporter has no
GridSampler2D) and the rational erf in GELU (it has no Erf), and the file is repaired by
``src.tools.onnx_graph`` (the exporter's own file is not a valid model).
"""
import os
import time

import src  # noqa: F401  (first: its process settings must precede mindspore; src.runtime)

# isort: split
import mindspore as ms
import numpy as np
import onnx
from mindspore import Tensor

from src.cli import base_parser, load
from src.inference import build_inference_net
from src.runtime import exit_process
from src.tools.onnx_graph import repair

# The custom CPU kernels (kernels: auto | kernel) are AOT .so files whose absolute path is baked
# into the MINDIR, so a graph using them runs only on this machine's CPU. By default the export
# uses the pure-MindSpore implementations, which run on any device.
PORTABLE_KERNELS = ["kernels.msda=reference", "kernels.token_ops=reference", "kernels.gelu=native",
                    "kernels.window_attention=native", "kernels.layer_norm=native", "kernels.frozen_bn=native",
                    "kernels.position_embedding=native"]
# what MindSpore 2.10's ONNX exporter converts (README, "Export")
ONNX_KERNELS = ["kernels.msda=gather", "kernels.token_ops=reference", "kernels.gelu=rational",
                "kernels.window_attention=native", "kernels.layer_norm=native", "kernels.frozen_bn=native",
                "kernels.position_embedding=native"]
OUTPUT_NAMES = ("scores", "labels", "boxes", "keep")


def example_inputs(batch, height, width):
    """Inputs of the right shapes and dtypes (the graph is static: their values do not matter)."""
    sizes = Tensor(np.tile(np.array([[height, width]], np.int32), (batch, 1)))
    return Tensor(np.zeros((batch, 3, height, width), np.float32)), sizes, sizes


def export_onnx(net, inputs, path):
    """MindSpore's ONNX file of ``net``, repaired and with the outputs named, written to ``path``."""
    raw = path[:-len(".onnx")] + ".exporter.onnx"
    ms.onnx.export(net, *inputs, file_name=raw)
    model = repair(onnx.load(raw), OUTPUT_NAMES)
    os.remove(raw)
    onnx.save(model, path + ".tmp")
    os.replace(path + ".tmp", path)


def main(argv=None):
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", help="model weights (.ckpt written by train.py or the converter)")
    parser.add_argument("--random-init", action="store_true",
                        help="export untrained weights instead of --ckpt (file size / timing checks only)")
    parser.add_argument("--file_format", choices=("MINDIR", "ONNX"), default="MINDIR",
                        help="MINDIR (MindSpore, MindSpore Lite) or ONNX (onnxruntime and other ONNX runtimes); "
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
    if args.custom_kernels and args.file_format == "ONNX":
        parser.error("--custom-kernels: an ONNX file cannot hold MindSpore's custom CPU kernels")
    if not args.custom_kernels:
        args.opts = list(args.opts) + (ONNX_KERNELS if args.file_format == "ONNX" else PORTABLE_KERNELS)
    cfg = load(args)
    if args.random_init:
        ms.set_seed(cfg.train.seed)
    net = build_inference_net(cfg, args.ckpt)
    suffix = "." + args.file_format.lower()
    output = args.output or f"focus_detr_b{args.batch}_{args.height}x{args.width}"
    output = output[:-len(suffix)] if output.endswith(suffix) else output
    path = output + suffix
    start = time.perf_counter()
    inputs = example_inputs(args.batch, args.height, args.width)
    if args.file_format == "ONNX":
        export_onnx(net, inputs, path)
    else:
        ms.export(net, *inputs, file_name=output, file_format="MINDIR")
    seconds = time.perf_counter() - start
    print(f"export: wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB) in {seconds:.1f} s; inputs "
          f"images ({args.batch},3,{args.height},{args.width}) float32, image_sizes and orig_sizes "
          f"({args.batch},2) int32; outputs scores, labels, boxes, keep ({cfg.model.num_select} per image)")
    return 0


if __name__ == "__main__":
    exit_process(main())
