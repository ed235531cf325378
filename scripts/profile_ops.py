"""Where the detector's inference time goes, per operator: MindSpore's profiler on the compiled
inference net, summed by operator type and by the line of this project's source that emitted it.

    python scripts/profile_ops.py --config config/focus_detr_r50_4scale_36ep.yaml \
        [--height 800 --width 1333] [--calls 2] [--top 30] [--no-lines] [KEY=VALUE ...]

One warm-up call (the compile), then ``--calls`` profiled calls on a noise image; every figure is
per call. ``mindspore.Profiler`` records each CPU kernel's time in graph mode (the operator's
scope is its Cell path); to name the source line, the graph's IR is saved during the compile
(``save_graphs``, a temporary directory, about 2 GB for R50 at 800x1333, removed afterwards;
``--no-lines`` skips it) and each kernel is traced to the innermost line under ``src/``. Kernels
expanded after that IR (``Expand/...``: ``.sum()``, ``ops.matmul``) have no line (``?``).
"""
import collections
import csv
import glob
import os
import re
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import src  # noqa: F401,E402  (first: its process settings must precede mindspore; src.runtime)

# isort: split
import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from mindspore import Tensor  # noqa: E402

from src.cli import base_parser, load  # noqa: E402
from src.inference import build_inference_net  # noqa: E402
from src.runtime import cpu_name, exit_process  # noqa: E402

SOURCE_ROOT = os.path.join(ROOT, "src") + os.sep
_SCOPE = re.compile(r"Fullname with scope: \((\S+)\)")
_LINE = re.compile(r"In file (\S+?):(\d+)")


def source_lines(ir_dir):
    """{kernel full name: 'path:line' of the innermost project frame} from the last saved IR."""
    files = sorted(glob.glob(os.path.join(ir_dir, "*execute*.ir")), key=os.path.getmtime)
    if not files:
        return {}
    lines, where, current = open(files[-1]).read().splitlines(), {}, None
    for line in lines:
        scope = _SCOPE.search(line)
        if scope:
            current = scope.group(1)
            where[current] = None
            continue
        frame = _LINE.search(line)
        if current and frame and frame.group(1).startswith(SOURCE_ROOT):
            where[current] = f"{frame.group(1)[len(SOURCE_ROOT):]}:{frame.group(2)}"
    return where


def table(title, totals, counts, calls, top):
    print(f"\n{title}\n| ms per call | kernels per call | what |\n|---|---|---|")
    for key, ms_total in totals.most_common(top):
        print(f"| {ms_total / calls:.1f} | {counts[key] // calls} | {key} |")


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--calls", type=int, default=2, help="profiled calls after the warm-up")
    parser.add_argument("--top", type=int, default=30, help="rows of each table")
    parser.add_argument("--no-lines", action="store_true", help="do not save the IR to name source lines")
    args = parser.parse_args()
    cfg = load(args)
    work = tempfile.mkdtemp(prefix="profile_ops_")
    try:
        if not args.no_lines:
            ms.set_context(save_graphs=1, save_graphs_path=os.path.join(work, "ir"))
        net = build_inference_net(cfg)
        images = Tensor(np.random.default_rng(0).uniform(0, 255, (1, 3, args.height, args.width)).astype(np.float32))
        sizes = Tensor([[args.height, args.width]], ms.int32)
        for out in net(images, sizes, sizes):
            out.asnumpy()
        profiler = ms.Profiler(output_path=os.path.join(work, "profile"))
        for _ in range(args.calls):
            for out in net(images, sizes, sizes):
                out.asnumpy()
        profiler.analyse()
        details = glob.glob(os.path.join(work, "profile", "*", "FRAMEWORK", "cpu_op_detail_info_*.csv"))
        if not details:
            raise SystemExit("profile_ops: the profiler wrote no CPU operator table (cpu_op_detail_info_*.csv)")
        where = source_lines(os.path.join(work, "ir"))
        by_type, by_line, by_scope = collections.Counter(), collections.Counter(), collections.Counter()
        n_type, n_line, n_scope = collections.Counter(), collections.Counter(), collections.Counter()
        for row in csv.DictReader(open(details[0])):
            time_ms, name, kind = float(row["op_total_time(ms)"]), row["full_op_name"], row["op_type"]
            # the Cell path without instance numbers: model/backbone/layer3, model/transformer/encoder
            scope = "/".join(part.split("-")[0] for part in name.split("/")[1:4])
            for totals, counts, key in ((by_type, n_type, kind), (by_scope, n_scope, scope),
                                        (by_line, n_line, f"{kind} {where.get(name) or '?'}")):
                totals[key] += time_ms
                counts[key] += int(row["op_occurrences"])
        total = sum(by_type.values()) / args.calls
        print(f"profile_ops: {args.config} at {args.height}x{args.width}, {args.calls} calls, {total:.0f} ms of "
              f"kernels per call; MindSpore {ms.__version__}, {cpu_name()}")
        table("By operator type", by_type, n_type, args.calls, args.top)
        table("By Cell scope", by_scope, n_scope, args.calls, args.top)
        if not args.no_lines:
            table("By operator and source line", by_line, n_line, args.calls, args.top)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    exit_process(0)


if __name__ == "__main__":
    main()
