"""Where the training graph's memory goes: the resident set of one process after each stage of the
gradient that the gradient-parity test runs (``model_grad_r50``: model + criterion on the
``model_train_r50`` batch, two 384x384 images, every trainable parameter).

    python scripts/probe_training_memory.py [--golden ../shared/golden] [--mode graph] [--kernels kernel] [--forward]

Stages: the model built, the graph compiled (graph mode only: ``Cell.compile`` without running),
the first and second call. ``--forward`` runs the loss alone (no gradient), to tell the
backward's share from the forward's. MindSpore's memory pool gives nothing back to the system, so
each figure is what the process holds from then on (README, "Graph-mode memory on CPU").
"""
import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STEM = "model_grad_r50"


def resident_gb():
    """(current, peak) resident set of this process in GB."""
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return current / 2**30, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "golden"))
    parser.add_argument("--mode", choices=["graph", "pynative"], default="graph")
    parser.add_argument("--kernels", choices=["kernel", "pure"], default="kernel")
    parser.add_argument("--forward", action="store_true", help="the loss alone, no gradient")
    args = parser.parse_args(argv)
    import mindspore as ms

    from src.tools.parity.golden import build_golden_model, grad_fixture_inputs
    from src.tools.parity.runs import grad_step

    meta = json.load(open(os.path.join(args.golden, f"{STEM}.json")))
    _, train_g, train_meta, _ = grad_fixture_inputs(os.path.join(args.golden, f"{STEM}.npz"), args.golden, meta)

    def report(stage, seconds=None):
        current, peak = resident_gb()
        took = f" ({seconds:.1f} s)" if seconds is not None else ""
        print(f"{stage:10s}{took:>10s}: resident {current:5.2f} GB, peak {peak:5.2f} GB", flush=True)

    print(f"MindSpore {ms.__version__}, {args.mode} mode, kernels {args.kernels}, "
          f"{'loss only' if args.forward else 'loss and gradients'} of {STEM}")
    report("start")
    model = build_golden_model(args.golden, train_meta, num_classes=80, kernels=args.kernels)
    report("built")
    step, inputs, _ = grad_step(model, train_g, train_meta, args.mode)
    cell = step.net if args.forward else step
    if args.mode == "graph":
        began = time.perf_counter()
        cell.compile(*inputs)
        report("compiled", time.perf_counter() - began)
    for call in ("call 1", "call 2"):
        began = time.perf_counter()
        out = cell(*inputs)
        (out[0] if args.forward else out[0][0]).asnumpy()  # the total loss: waits for the call to end
        report(call, time.perf_counter() - began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
