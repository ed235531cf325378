"""This port against the official PyTorch code, side by side in one run: inference latency, first
call and peak memory of the same model on the same image, each in a process of its own.

    python scripts/bench_vs_official.py --official-root OUT --official-python PYTHON \
        [--configs config/focus_detr_r50_4scale_36ep.yaml ...] [--height 800 --width 1333] \
        [--repeat 5] [--rounds 2] [KEY=VALUE ...]

OUT is the official code assembled by ``scripts/prepare_official.sh`` and PYTHON an interpreter
with torch and the official code's dependencies (listed there). Each of our configs is paired with
the official config of the same name (``focus_detr_r50_4scale_36ep.yaml`` with
``projects/focus_detr/configs/focus_detr_resnet/focus_detr_r50_4scale_36ep.py``); KEY=VALUE
overrides apply to ours only.

What is measured, the same way for both: one image of --height x --width (uniform noise in
[0, 255], seed 0, filling the canvas, batch 1), random weights (neither time nor memory depends on
them), the first call (ours compiles the graph in it; the compile cache is off), then the median
of --repeat calls. Peak memory is the whole process's maximum resident set (``wait4``), imports
included. --rounds alternates the two implementations (ours, official, ours, official, ...) and
reports the medians over rounds, since this machine's speed moves between minutes.
Ours runs in graph mode with the config's kernels; the official code runs in eval mode under
``torch.no_grad()`` with torch's default threads. The second start is not measured here
(``scripts/bench_startup.py``). The last line is one machine-readable ``bench_vs_official:`` line.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT = "bench_vs_official_worker:"
DEFAULT_CONFIGS = ("config/focus_detr_r50_4scale_36ep.yaml", "config/focus_detr_swin_tiny_224_4scale_36ep.yaml")


def noise_image(height, width):
    import numpy as np

    return np.random.default_rng(0).uniform(0, 255, (3, height, width)).astype(np.float32)


def timed_calls(call, repeat):
    """(first call, list of ``repeat`` later calls) in seconds."""
    def once():
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    first = once()
    return first, [once() for _ in range(repeat)]


def run_port(config, opts, height, width, repeat):
    sys.path.insert(0, REPO)
    import src  # noqa: F401  (first: its process settings must precede mindspore; src.runtime)

    # isort: split
    import mindspore as ms
    from mindspore import Tensor

    from src.config import load_config
    from src.inference import build_inference_net
    from src.runtime import set_mode

    set_mode("graph")
    cfg = load_config(config, opts)
    ms.set_seed(cfg.train.seed)
    net = build_inference_net(cfg)
    images = Tensor(noise_image(height, width)[None])
    sizes = Tensor([[height, width]], ms.int32)

    def call():
        for out in net(images, sizes, sizes):
            out.asnumpy()

    return timed_calls(call, repeat), f"MindSpore {ms.__version__}, graph mode"


def official_config(root, config):
    name = os.path.splitext(os.path.basename(config))[0]
    family = "focus_detr_swin" if "swin" in name else "focus_detr_resnet"
    path = os.path.join(root, "detrex", "projects", "focus_detr", "configs", family, name + ".py")
    if not os.path.isfile(path):
        raise SystemExit(f"bench_vs_official: no official config for {config}: {path} not found")
    return path


def run_official(root, config, height, width, repeat):
    sys.path[:0] = [os.path.join(root, "detrex"), os.path.join(root, "detectron2")]
    import torch
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(official_config(root, config))
    cfg.model.device = "cpu"
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    inputs = [{"image": torch.from_numpy(noise_image(height, width)), "height": height, "width": width}]

    def call():
        with torch.no_grad():
            model(inputs)[0]["instances"].pred_boxes.tensor.numpy()

    return timed_calls(call, repeat), f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def run_worker(args):
    if args.worker == "port":
        (first, later), version = run_port(args.configs[0], args.opts, args.height, args.width, args.repeat)
    else:
        (first, later), version = run_official(args.official_root, args.configs[0], args.height, args.width,
                                               args.repeat)
    print(RESULT, json.dumps({"first_s": first, "calls_s": later, "version": version}), flush=True)
    os._exit(0)  # skips the frameworks' teardown, which can stall after the figures are out


def measure(cmd, env):
    """(worker result, peak resident GB) of one worker process."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    lines = [line for line in output.splitlines() if line.startswith(RESULT)]
    if os.waitstatus_to_exitcode(status) != 0 or not lines:
        raise SystemExit(f"bench_vs_official: {' '.join(cmd[:4])} ... failed:\n{output[-4000:]}")
    return json.loads(lines[-1][len(RESULT):]), usage.ru_maxrss / 2**20


def compare(args, config):
    common = ["--configs", config, "--height", str(args.height), "--width", str(args.width),
              "--repeat", str(args.repeat), "--official-root", args.official_root, *args.opts]
    me = os.path.abspath(__file__)
    commands = {"port": [sys.executable, me, "--worker", "port", *common],
                "official": [args.official_python, me, "--worker", "official", *common]}
    env = dict(os.environ, FOCUS_DETR_COMPILE_CACHE="off")
    runs = {side: [] for side in commands}
    for round_index in range(args.rounds):
        for side, cmd in commands.items():
            result, peak = measure(cmd, env)
            runs[side].append((statistics.median(result["calls_s"]), result["first_s"], peak, result["version"]))
            print(f"  round {round_index + 1} {side:>8}: median {runs[side][-1][0]:6.2f} s  first call "
                  f"{result['first_s']:6.2f} s  peak {peak:5.2f} GB  ({result['version']})", flush=True)
    return {side: [statistics.median(values) for values in list(zip(*rows))[:3]] for side, rows in runs.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-root", required=True, help="the tree scripts/prepare_official.sh assembled")
    parser.add_argument("--official-python", default=sys.executable, help="interpreter with torch and its deps")
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--repeat", type=int, default=5, help="timed calls after the first")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of ours and the official")
    parser.add_argument("opts", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--worker", choices=("port", "official"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.official_root = os.path.abspath(args.official_root)
    if args.worker:
        return run_worker(args)
    for config in args.configs:
        official_config(args.official_root, config)  # fail before an hour of measuring
    sys.path.insert(0, REPO)
    from src.runtime import cpu_name

    summary = []
    print(f"{cpu_name()}, {os.cpu_count()} cores; {args.height}x{args.width}, batch 1, random weights, "
          f"median of {args.repeat} calls, medians over {args.rounds} rounds")
    rows = []
    for config in args.configs:
        figures = compare(args, config)
        (lat, first, peak), (lat_o, first_o, peak_o) = figures["port"], figures["official"]
        name = os.path.splitext(os.path.basename(config))[0]
        rows.append(f"| {name} | {lat:.2f} / {lat_o:.2f} ({lat / lat_o:.2f}) | {first:.1f} / {first_o:.1f} | "
                    f"{peak:.2f} / {peak_o:.2f} ({peak / peak_o:.2f}) |")
        summary += [f"{name}_latency_ratio={lat / lat_o:.3f}", f"{name}_peak_ratio={peak / peak_o:.3f}",
                    f"{name}_first_call_ratio={first / first_o:.2f}"]
    print("| config | latency s ours / official (ratio) | first call s ours / official | "
          "peak GB ours / official (ratio) |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    print("bench_vs_official: " + " ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
