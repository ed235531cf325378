"""Compare the port against fixtures produced by the official PyTorch code.

    python -m src.tools.parity --golden DIR [--mode graph|pynative|both] [--kernels auto|kernel|pure]
        [--matcher auto|builtin|kernel|pyfunc] [--canvas H W] [--allow-partial] [--verbose]

Every fixture in DIR is compared: ``model_eval_*``; ``model_train_*`` (training forward with the
recorded denoising draws replayed, matchings, foreground targets and every loss);
``model_grad_*`` (the gradient of its training fixture's total loss w.r.t. every trainable
parameter, one ``value_and_grad`` of model + criterion, mapped to the official keys: norms, random
projections, full gradients, global norm, parameters without gradient); ``msda_core*`` (with the
sampling cores ``--kernels`` selects); the converter contract ``state_dict_*``. The fixture's
keys drive every comparison: an array whose port counterpart is missing is a FAIL row, and every
array no comparison reads (and every fixture this port cannot compare) is listed by name as
"not compared". One line per compared tensor: max abs error, max rel error (max abs error over
max |reference|; for gradients the error over the reference norm), the tolerance, index
agreement. Per-tensor gradient rows are printed when failing or with ``--verbose``; per-group
maxima always. Exit status 1 when any comparison is outside tolerance, a fixture failed, or
(unless ``--allow-partial``) anything was left uncompared.

Comparison rules (the golden README): selections are compared as sets per image; rows that
belong to a selection are aligned by token id before comparing values; everything after the
two-stage top-k runs teacher-forced on the fixture's indices; detections are matched by
(query, class). The post-processing top-k may differ only in entries whose score is within
the score tolerance of the k-th score. Gradient tolerances are the fixture JSON's
(``tolerances`` per ``params[].group``).

``--canvas H W`` places every model fixture's batch at the top-left of a larger H x W canvas
(``model.canvas: extent`` must make it change no result) and compares what does not depend on
the canvas layout: the detections of ``model_eval_*`` and the losses and gradients of
``model_grad_*``. Everything else is listed as not compared (so add ``--allow-partial``).
"""
import argparse
import glob
import json
import os
import time

import numpy as np

import src  # noqa: F401  (CPU start-up fix before the first convolution)
from src.runtime import exit_process
from src.tools.parity.golden import (
    KERNEL_CHOICES,
    FixtureArrays,
    build_golden_model,
    fixture_model_config,
    grad_fixture_inputs,
)
from src.tools.parity.grad import compare_grad, grad_pairing_rows
from src.tools.parity.model import compare_detections, compare_eval, compare_train
from src.tools.parity.ops import compare_key_list, compare_msda
from src.tools.parity.report import Row, account_arrays, not_compared, summary_line
from src.tools.parity.runs import run_eval_model, run_grad_model, run_train_model


def compare_fixture(path, golden_dir, mode, kernels="auto", matcher="auto", canvas=None):
    """Rows for one fixture file; a fixture that cannot be compared gives one 'not compared' row,
    and every array of a compared one is compared, consumed as an input or listed as not compared.
    With ``canvas`` (H, W) only the layout-free results are compared (see the module docstring)."""
    import gc

    stem = os.path.splitext(os.path.basename(path))[0]
    if os.path.basename(path).startswith("state_dict_") and path.endswith(".json"):
        return compare_key_list(stem, path, golden_dir)
    label = f"{stem}[{mode}]"
    meta_path = os.path.splitext(path)[0] + ".json"
    meta = json.load(open(meta_path)) if os.path.isfile(meta_path) else {}
    if not path.endswith(".npz"):
        return [not_compared(label, "-", "a JSON without arrays (no .npz of this name)")]
    g = FixtureArrays(np.load(path))
    supported = fixture_model_config(meta) is not None
    if canvas is not None and not stem.startswith(("model_eval_", "model_grad_")):
        return [not_compared(label, "-", "--canvas compares detections and gradients only")]
    if stem.startswith("msda_core"):
        rows = compare_msda(label, g, mode, kernels)
    elif stem.startswith("model_eval_") and supported:
        model = build_golden_model(golden_dir, meta, num_classes=g["pred_logits"].shape[-1], kernels=kernels)
        ours = run_eval_model(model, g, mode, canvas)
        rows = compare_detections(label, g, ours["det"]) if canvas else compare_eval(label, g, ours)
    elif stem.startswith("model_train_") and supported:
        model = build_golden_model(golden_dir, meta, num_classes=g["pred_logits"].shape[-1], kernels=kernels)
        rows = compare_train(label, g, meta, run_train_model(model, g, meta, mode, matcher))
    elif stem.startswith("model_grad_") and supported:
        paired = grad_fixture_inputs(path, golden_dir, meta)
        if isinstance(paired, Row):
            paired.fixture = label
            return [paired]
        train, train_g, train_meta, entries = paired
        model = build_golden_model(golden_dir, train_meta, num_classes=train_g["pred_logits"].shape[-1],
                                   kernels=kernels)
        rows = grad_pairing_rows(label, meta, train, train_meta)
        rows += compare_grad(label, g, meta, run_grad_model(model, train_g, train_meta, mode, matcher, canvas),
                             entries, train_meta)
    else:
        note = (f"backbone of {meta.get('model', '?')!r} not supported yet" if stem.startswith("model_")
                else "unknown fixture kind")
        return [not_compared(label, "-", note)]
    model = None
    gc.collect()
    return rows + account_arrays(label, g, meta, rows)


def fixture_paths(golden_dir):
    """(the .npz fixtures plus every JSON that is neither an npz's metadata nor a key list, the
    converter key lists)."""
    arrays = sorted(glob.glob(os.path.join(golden_dir, "*.npz")))
    key_lists = sorted(glob.glob(os.path.join(golden_dir, "state_dict_*.json")))
    stems = {os.path.splitext(p)[0] for p in arrays}
    lone = [p for p in sorted(glob.glob(os.path.join(golden_dir, "*.json")))
            if os.path.splitext(p)[0] not in stems and p not in key_lists]
    return sorted(arrays + lone), key_lists


def main(argv=None):
    # named as it is run: argparse would name it after this file, __main__.py
    parser = argparse.ArgumentParser(prog="python -m src.tools.parity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden", required=True, help="fixture directory (npz + json + golden_weights.py)")
    parser.add_argument("--mode", choices=("graph", "pynative", "both"), default="both")
    parser.add_argument("--kernels", choices=tuple(KERNEL_CHOICES), default="auto",
                        help="operators of the models: the config default, the fused kernels, or pure MindSpore")
    parser.add_argument("--matcher", choices=("auto", "builtin", "kernel", "pyfunc"), default="auto",
                        help="assignment backend of the training fixtures' matcher (kernels.matcher)")
    parser.add_argument("--canvas", type=int, nargs=2, metavar=("H", "W"),
                        help="run the model fixtures on this larger canvas (detections and gradients compared)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="exit 0 even when a fixture or an array is left uncompared (failures still exit 1)")
    parser.add_argument("--verbose", action="store_true",
                        help="also print every per-tensor gradient row (by default only failing ones)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.golden):
        parser.error(f"--golden: no such directory {args.golden}")
    if not os.path.isfile(os.path.join(args.golden, "golden_weights.py")):
        parser.error(f"--golden: {args.golden} has no golden_weights.py")
    arrays, key_lists = fixture_paths(args.golden)
    if not arrays and not key_lists:
        parser.error(f"--golden: no fixtures (*.npz, state_dict_*.json) in {args.golden}")
    canvas = tuple(args.canvas) if args.canvas else None
    if canvas:
        key_lists = []
    modes = ("graph", "pynative") if args.mode == "both" else (args.mode,)
    rows = []
    for path in key_lists:
        rows.extend(_safe(compare_fixture, path, args.golden, modes[0]))
        print(*(r.line() for r in rows[-1:]), sep="\n", flush=True)
    for path in arrays:
        for mode in modes:
            start = time.time()
            new = _safe(compare_fixture, path, args.golden, mode, args.kernels, args.matcher, canvas)
            rows.extend(new)
            shown = [r.line() for r in new if args.verbose or not r.detail or not r.ok]
            print("\n".join(shown), flush=True)
            print(f"     {os.path.basename(path)} [{mode}] took {time.time() - start:.1f} s", flush=True)
    line, failed, skipped = summary_line(rows)
    partial = skipped and not args.allow_partial
    print(line + ("; exit 1: comparisons left out (--allow-partial to accept)" if partial else ""))
    return 1 if failed or partial else 0


def _safe(fn, path, *args):
    try:
        return fn(path, *args)
    except Exception as e:  # a broken fixture is a failure of that fixture, not of the run
        return [Row(os.path.basename(path), "-", ok=False, note=f"{type(e).__name__}: {e}"[:400])]


if __name__ == "__main__":
    exit_process(main())
