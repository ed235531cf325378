"""Time the matcher's assignment backends side by side in one run (``kernels.matcher``).

    python scripts/bench_matcher.py [--images 14] [--queries 900] [--gt 20] [--repeat 30] [--mode graph]

One training step solves (decoder layers + 1) x batch assignments (7 x 2 = 14 for the R50 recipe
at batch 2 per device); each backend solves all of them in one graph call on the same random
costs. Prints the median and spread of the calls after a warm-up, every backend's result checked
equal to the scipy reference, and as last line the ratios to the pyfunc (scipy) reference.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import src  # noqa: F401,E402  (first: its process settings must precede mindspore; src.runtime)

# isort: split
import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from mindspore import Tensor  # noqa: E402

from src.losses.assignment import AssignmentBuiltin, AssignmentPyfunc, assign_queries  # noqa: E402
from src.ops import LinearSumAssignmentKernel  # noqa: E402
from src.runtime import exit_process, set_mode  # noqa: E402

BACKENDS = {"pyfunc": AssignmentPyfunc, "builtin": AssignmentBuiltin, "kernel": LinearSumAssignmentKernel}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=14, help="assignments per call (layers x batch)")
    parser.add_argument("--queries", type=int, default=900)
    parser.add_argument("--gt", type=int, default=20, help="valid GT per image (all GT slots valid)")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--mode", choices=("graph", "pynative"), default="graph")
    args = parser.parse_args()
    set_mode(args.mode)
    rng = np.random.default_rng(0)
    cost = rng.random((args.images, args.queries, args.gt)).astype(np.float32)
    num_valid = np.full(args.images, args.gt, np.int32)
    expected = assign_queries(cost, num_valid)
    inputs = (Tensor(cost), Tensor(num_valid))
    print(f"{args.images} assignments of {args.queries} queries x {args.gt} GT per call, {args.mode} mode, "
          f"MindSpore {ms.__version__}, {os.cpu_count()} CPUs")
    medians = {}
    for name, cls in BACKENDS.items():
        cell = cls()
        start = time.perf_counter()
        out = cell(*inputs).asnumpy()
        first = time.perf_counter() - start
        if not np.array_equal(out, expected):
            raise SystemExit(f"{name}: assignment differs from scipy's")
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            cell(*inputs).asnumpy()
            times.append(time.perf_counter() - start)
        medians[name] = statistics.median(times)
        print(f"{name:8s} median {medians[name] * 1e3:8.2f} ms  min {min(times) * 1e3:8.2f}  "
              f"max {max(times) * 1e3:8.2f}  first call {first * 1e3:8.1f} ms  (equal to scipy)")
    ratios = " ".join(f"{name}_vs_pyfunc={medians[name] / medians['pyfunc']:.2f}" for name in medians)
    print(f"bench_matcher: images={args.images} queries={args.queries} gt={args.gt} " + ratios)


if __name__ == "__main__":
    main()
    exit_process(0)
