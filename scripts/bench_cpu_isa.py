"""Measure the oneDNN ISA cap that every entry point applies (README, "CPU note").

    python scripts/bench_cpu_isa.py [--resnet] [--repeat 3]

Runs the same convolution (and optionally a ResNet-50 forward at 800x1216) in two fresh
processes, one with ONEDNN_MAX_CPU_ISA=ALL (oneDNN's own choice) and one with AVX2, and
prints both median timings and their ratio. The variable is read once per process, so the
two settings cannot share one.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(resnet, repeat):
    import numpy as np
    from mindspore import Tensor, nn

    from src.runtime import set_mode

    set_mode("pynative")
    if resnet:
        from src.modeling.backbone.resnet import ResNetBackbone

        net, x = ResNetBackbone(50), np.random.rand(1, 3, 800, 1216)
    else:
        net, x = nn.Conv2d(64, 64, 3, pad_mode="pad", padding=1), np.random.rand(1, 64, 200, 304)
    net.set_train(False)
    x = Tensor(x.astype(np.float32))
    net(x)  # warm-up: kernel selection and allocation
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = net(x)
        (out[0] if isinstance(out, tuple) else out).asnumpy()
        times.append(time.perf_counter() - start)
    print(json.dumps({"median_s": sorted(times)[len(times) // 2]}))


def run(isa, resnet, repeat):
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA=isa, PYTHONPATH=ROOT)
    cmd = [sys.executable, __file__, "--worker", "--repeat", str(repeat)] + (["--resnet"] if resnet else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["median_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resnet", action="store_true", help="ResNet-50 backbone at 800x1216 instead of one conv")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.resnet, args.repeat)
        return
    what = "ResNet-50 backbone forward, 1x3x800x1216" if args.resnet else "conv 3x3 64->64 on 1x64x200x304"
    default = run("ALL", args.resnet, args.repeat)
    capped = run("AVX2", args.resnet, args.repeat)
    print(f"{what} (median of {args.repeat}, PyNative, CPU)")
    print(f"  ONEDNN_MAX_CPU_ISA=ALL   {default:8.3f} s")
    print(f"  ONEDNN_MAX_CPU_ISA=AVX2  {capped:8.3f} s")
    print(f"  speed-up {default / capped:.1f}x")


if __name__ == "__main__":
    main()
