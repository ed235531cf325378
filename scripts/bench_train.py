"""Training-step benchmark: seconds per iteration of the whole compiled train step of a config
at one static canvas and batch size.

    python scripts/bench_train.py --config config/focus_detr_r50_4scale_36ep.yaml \
        [--height 512 --width 512] [--batch 2] [--boxes 10] [--warmup 2] [--repeat 5] \
        [--mode graph|pynative] [--device CPU] [KEY=VALUE ...]

Why: ``scripts/benchmark.py`` times inference only, and a training log's img/s mixes in data
loading and varies with the canvas of each batch. This script times what an iteration of
``train.py`` costs on the device, with nothing else in it: forward, criterion (Hungarian
matching included), backward, loss scaling, gradient clipping and the AdamW update, i.e.
``TrainStep`` of ``src/engine/train_step.py``, at one fixed input shape.

What runs is what training runs: the config and the KEY=VALUE overrides are loaded, and the
mode and device set, by ``src.cli`` exactly as in ``train.py``; the model comes from
``build_model`` with random weights (seed ``train.seed``; no pretrained file is needed or
read, the step time depends on the shapes only); and the mixed precision, criterion,
parameter groups, AdamW, loss scale, EMA and ``TrainStep`` are built by the trainer's own
constructor (``src.engine.trainer.Trainer``, given no dataset). Every iteration draws its
host-side denoising queries with ``Trainer.denoising`` and takes its learning rate from the
trainer's schedule, as ``Trainer.train`` does. ``train.batch_size`` is set to ``--batch`` and
``data.canvases`` to the benchmarked canvas; ``train.output_dir`` is a temporary directory
(nothing is written to it).

Inputs: synthetic batches in the trainer's padded static-shape layout (``src/data/loader.py``):
images (B, 3, H, W) float32 uniform in 0..255 filling the whole canvas (image_sizes = H, W),
``data.max_boxes`` GT slots per image of which the first ``--boxes`` are valid, random
cxcywh boxes inside the image and random labels. One fixed batch is reused; the denoising
noise is new every iteration.

Timing: the first call (graph compile + one step) is reported on its own; then ``--warmup``
untimed steps, then ``--repeat`` timed steps. A step's time runs from the ``TrainStep`` call
until its outputs are on the host (as the trainer reads ``applied`` every iteration); the
host-side denoising and tensor creation are timed apart (``host_s``). images/s =
batch / median step time. Peak memory is the process's maximum resident set size
(``getrusage``), which includes the compile. The last line of the output is one
machine-readable ``bench_train: key=value ...`` line.

Reproduce (2-core CPU, see README for the numbers of a given revision):

    export ONEDNN_MAX_CPU_ISA=AVX2
    python scripts/bench_train.py --config config/quickstart.yaml --batch 2
    python scripts/bench_train.py --config config/focus_detr_r50_4scale_36ep.yaml \
        --height 512 --width 512 --batch 2 --warmup 2 --repeat 5
"""
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

import src  # noqa: F401,E402  (CPU start-up fix before the first convolution)
from src.cli import base_parser, load  # noqa: E402
from src.runtime import (
    cpu_name,  # noqa: E402
    exit_process,  # noqa: E402
)

START = time.perf_counter()


def progress(message):
    print(f"[bench_train {time.perf_counter() - START:7.1f}s] {message}", flush=True)


def peak_rss_gb():
    # ru_maxrss is in kilobytes on Linux (bytes on macOS)
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1024 ** 3 if sys.platform == "darwin" else 1024 ** 2)


def default_canvas(data_cfg):
    """The config's largest training canvas; without static canvases the largest padded batch
    training can see (longest short side x max size)."""
    if data_cfg.canvases:
        return max((tuple(int(v) for v in c) for c in data_cfg.canvases), key=lambda c: c[0] * c[1])
    return max(data_cfg.train_short_sides), data_cfg.train_max_size


def main(argv=None):
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, help="canvas height (default: the config's largest canvas)")
    parser.add_argument("--width", type=int, help="canvas width (default: the config's largest canvas)")
    parser.add_argument("--batch", type=int, default=2, help="images per step (default 2)")
    parser.add_argument("--boxes", type=int, default=10,
                        help="valid GT boxes per image (default 10, at most data.max_boxes)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first call")
    parser.add_argument("--repeat", type=int, default=5, help="timed steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic batch")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeat < 1 or args.warmup < 0 or args.boxes < 0:
        parser.error("--batch and --repeat must be >= 1, --warmup and --boxes >= 0")
    if (args.height is None) != (args.width is None):
        parser.error("give both --height and --width, or neither")

    cfg = load(args)  # config + overrides, mode and device: as train.py
    height, width = (args.height, args.width) if args.height else default_canvas(cfg.data)
    output_dir = tempfile.mkdtemp(prefix="bench_train_")
    # the trainer's view of this run: one device, this batch, this one static canvas
    args.opts = list(args.opts) + [f"train.batch_size={args.batch}", f"data.canvases=[[{height}, {width}]]",
                                   f"train.output_dir={output_dir}"]
    try:
        return bench(args, load(args), height, width, output_dir)
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)


def bench(args, cfg, height, width, output_dir):
    boxes = min(args.boxes, cfg.data.max_boxes)
    if boxes < args.boxes:
        progress(f"--boxes {args.boxes} > data.max_boxes {cfg.data.max_boxes} (the GT slots the trainer "
                 f"pads to): using {boxes}")

    import mindspore as ms
    from mindspore import Tensor

    from src.data.synthetic import random_train_batch
    from src.engine.logger import setup_logger
    from src.engine.trainer import Trainer
    from src.modeling.build import build_model

    # train.py's logger: the project's INFO lines (e.g. what an ``auto`` kernel resolved to) show
    logger = setup_logger(output_dir)
    device = ms.get_context("device_target")
    kernels = dict(cfg.kernels)
    progress(f"{args.config} canvas {height}x{width} batch {args.batch} boxes {boxes}/{cfg.data.max_boxes}, "
             f"{args.mode} mode on {device}, amp {cfg.train.amp_level}, kernels {kernels}")

    ms.set_seed(cfg.train.seed)
    model = build_model(cfg.model, cfg.kernels)
    trainer = Trainer(cfg, model, None, None, logger)  # mixed precision, criterion, AdamW, loss scale, TrainStep
    trainer.model.set_train(True)
    num_params = sum(int(np.prod(p.shape)) for p in trainer.optimizer.params)
    progress(f"model and train step built: {num_params / 1e6:.2f} M trainable parameters")

    rng = np.random.default_rng(args.seed)
    images, image_sizes, gt_boxes, gt_labels, gt_valid = random_train_batch(
        rng, args.batch, height, width, cfg.data.max_boxes, boxes, cfg.model.num_classes)
    fixed = (Tensor(images), Tensor(image_sizes), Tensor(gt_boxes), Tensor(gt_labels), Tensor(gt_valid))
    skipped = 0

    def iteration(i):
        """One training iteration as Trainer.train runs it: (host seconds, step seconds, loss)."""
        nonlocal skipped
        start = time.perf_counter()
        dn_inputs, dn_targets = trainer.denoising(i, gt_boxes, gt_labels, gt_valid)
        lr = Tensor(trainer.schedule(i), ms.float32)
        mid = time.perf_counter()
        total, _, _, applied = trainer.step(*fixed, dn_inputs, dn_targets, lr)
        ok, loss = bool(applied.asnumpy()), float(total.asnumpy())
        end = time.perf_counter()
        skipped += not ok
        return mid - start, end - mid, loss

    progress("first call (compile + one step); this can take minutes")
    host0, first, loss = iteration(0)
    first += host0
    progress(f"first call {first:.2f} s, loss {loss:.4f}")
    for i in range(args.warmup):
        _, step, loss = iteration(1 + i)
        progress(f"warmup {i + 1}/{args.warmup}: {step:.3f} s, loss {loss:.4f}")
    hosts, steps = [], []
    for i in range(args.repeat):
        host, step, loss = iteration(1 + args.warmup + i)
        hosts.append(host)
        steps.append(step)
        progress(f"step {i + 1}/{args.repeat}: {step:.3f} s (host {host * 1e3:.1f} ms), loss {loss:.4f}")

    step_s, host_s = statistics.median(steps), statistics.median(hosts)
    images_per_s = args.batch / step_s
    rss = peak_rss_gb()
    kernels_text = ",".join(f"{k}:{v}" for k, v in kernels.items())
    print(f"\n{args.config}: training step at canvas {height}x{width}, batch {args.batch}, "
          f"{boxes} GT boxes per image ({cfg.data.max_boxes} slots), amp {cfg.train.amp_level}")
    print(f"  MindSpore {ms.__version__}, {args.mode} mode, device {device}, "
          f"{cpu_name()} ({os.cpu_count()} cores), kernels {kernels}")
    print(f"  first call (compile + run): {first:.2f} s")
    print(f"  step (median of {args.repeat} after {args.warmup} warm-up): {step_s:.3f} s "
          f"(min {min(steps):.3f}, max {max(steps):.3f}); host denoising + tensors {host_s * 1e3:.1f} ms")
    print(f"  throughput: {images_per_s:.3f} images/s; peak RSS {rss:.2f} GB; "
          f"skipped (non-finite) steps: {skipped} of {1 + args.warmup + args.repeat}")
    print(f"bench_train: config={args.config} canvas={height}x{width} batch={args.batch} mode={args.mode} "
          f"device={device} step_s={step_s:.4f} step_min_s={min(steps):.4f} step_max_s={max(steps):.4f} "
          f"images_per_s={images_per_s:.4f} first_call_s={first:.2f} host_s={host_s:.4f} "
          f"peak_rss_gb={rss:.2f} kernels={kernels_text} mindspore={ms.__version__}", flush=True)
    return 0


if __name__ == "__main__":
    exit_process(main())
