"""Start-up benchmark: wall seconds and peak resident memory of a whole ``infer.py`` / ``eval.py`` /
``train.py`` process, started three times side by side: with the compile cache off, with an empty cache (the first
start, which also saves the graphs), and again (the second start, which loads them).

    python scripts/bench_startup.py --entry infer --config config/focus_detr_r50_4scale_36ep.yaml \
        [--height 800 --width 1333] [KEY=VALUE ...]
    python scripts/bench_startup.py --entry train --config config/quickstart.yaml

Why: in graph mode most of a start is compiling (``src.runtime.enable_compile_cache`` says when
a start may load the graphs of an earlier one); this measures what a user waits for, imports,
weights and data included. The peak resident set (the process's own, from ``wait4``) shows what
compiling costs in memory: a graph loaded from the cache skips the compiler's working memory.

What runs: ``infer`` draws the detections of one synthetic image of --height x --width with
``data.eval_canvases`` set to that canvas; ``eval`` evaluates two synthetic images of that
size on it; both use a checkpoint of the config's model with random weights (seed 0) written
here. ``train`` runs ``train.max_iter=2`` iterations on six synthetic images at the config's
own single ``data.canvases`` shape (a config with several gets no cache, see above). The
synthetic data has the model's classes, at most 12 (eval and train set ``model.num_classes`` to
12 for a config with more). Every process gets ``FOCUS_DETR_COMPILE_CACHE`` set to ``off`` or
to a fresh folder under a temporary directory that is deleted afterwards. The last line is one machine-readable
``bench_startup: key=value ...`` line.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def write_inputs(args, tmp):
    """(checkpoint or None, dataset root, image path) for the benchmarked entry."""
    import cv2
    import mindspore as ms

    import src  # noqa: F401  (CPU start-up fix before the first convolution)
    from src.config import load_config
    from src.data.synthetic import MAX_CLASSES, generate_synthetic_coco
    from src.modeling.build import build_model

    cfg = load_config(args.config, args.opts)
    if args.entry != "infer" and cfg.model.num_classes > MAX_CLASSES:  # the synthetic data has no more
        args.opts.append(f"model.num_classes={MAX_CLASSES}")
        cfg = load_config(args.config, args.opts)
    data = os.path.join(tmp, "data")
    side = min(args.height, args.width)
    if args.entry == "train":
        generate_synthetic_coco(data, num_train=6, num_val=2, size_range=(96, 128), seed=1,
                                num_classes=cfg.model.num_classes, max_objects=2, min_object_size=24)
        return None, data, None
    generate_synthetic_coco(data, num_train=0, num_val=2, size_range=(side, side), seed=1,
                            num_classes=min(cfg.model.num_classes, MAX_CLASSES))
    image = cv2.imread(os.path.join(data, "val", sorted(os.listdir(os.path.join(data, "val")))[0]))
    path = os.path.join(tmp, "image.png")
    cv2.imwrite(path, cv2.resize(image, (args.width, args.height)))
    ms.set_seed(0)
    ckpt = os.path.join(tmp, "random.ckpt")
    ms.save_checkpoint(build_model(cfg.model, cfg.kernels), ckpt)
    return ckpt, data, path


def command(args, tmp, ckpt, data, image, run):
    canvas = f"data.eval_canvases=[[{args.height}, {args.width}]]"
    out = os.path.join(tmp, run)
    if args.entry == "infer":
        return ["infer.py", "--config", args.config, "--ckpt", ckpt, "--input", image, "--output", out, canvas]
    if args.entry == "eval":
        return ["eval.py", "--config", args.config, "--ckpt", ckpt, "--data", data, canvas,
                f"train.output_dir={out}"]
    return ["train.py", "--config", args.config, "--data", data, "--no-eval", "train.max_iter=2",
            "train.checkpoint_period=0", f"train.output_dir={out}"]


def run_measured(cmd, env, log_path):
    """(wall seconds, exit code, peak resident GB, output) of one process."""
    with open(log_path, "w+") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        return seconds, proc.returncode, usage.ru_maxrss / 2**20, log.read()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entry", choices=("infer", "eval", "train"), required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("opts", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_startup_")
    try:
        ckpt, data, image = write_inputs(args, tmp)
        cache = os.path.join(tmp, "cache")
        times, peaks = {}, {}
        for run, root in (("cache_off", "off"), ("first_start", cache), ("second_start", cache)):
            env = dict(os.environ, FOCUS_DETR_COMPILE_CACHE=root)
            cmd = [sys.executable, *command(args, tmp, ckpt, data, image, run), *args.opts]
            times[run], code, peaks[run], output = run_measured(cmd, env, os.path.join(tmp, f"{run}.log"))
            if code != 0:
                raise SystemExit(f"{run}: {args.entry} failed:\n{output[-4000:]}")
            lines = [line for line in output.splitlines() if "compile cache:" in line]
            print(f"{run:>12}: {times[run]:6.1f} s  peak {peaks[run]:5.2f} GB   "
                  f"{lines[0].split('compile cache:')[1].strip() if lines else ''}")
        import mindspore as ms

        from src.runtime import cpu_name
        print(f"{cpu_name()}, {os.cpu_count()} cores, MindSpore {ms.__version__}; second/off "
              f"{times['second_start'] / times['cache_off']:.2f}")
        canvas = [] if args.entry == "train" else [f"canvas={args.height}x{args.width}"]
        print("bench_startup: " + " ".join([f"entry={args.entry}", f"config={os.path.basename(args.config)}", *canvas]
                                           + [f"{k}_s={v:.1f}" for k, v in times.items()]
                                           + [f"{k}_gb={v:.2f}" for k, v in peaks.items()]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
