"""Training curves from ``metrics.jsonl``: every loss term, the learning rate, the gradient norm,
the throughput and the AP of every evaluation over iterations, one or more runs overlaid.

    python scripts/plot_logs.py OUTPUT_DIR [OUTPUT_DIR ...] [--out plots] [--names a b ...]

Writes OUT/losses.png (one panel per loss term, the total first), OUT/ap.png (AP, AP50, ... of
the evaluations), OUT/lr.png, OUT/grad_norm.png (with the skipped steps) and
OUT/throughput.png (images/s); a key that fits none of these goes to OUT/other.png, so every
number train.py logs is drawn. A run that was resumed repeats the iterations after its
checkpoint in metrics.jsonl; the last row of each iteration is drawn (the run that went on).
Headless (matplotlib's Agg backend).
"""
import argparse
import json
import math
import os

FIGURES = (  # (file name, which keys it draws); the first that matches a key takes it
    ("losses", lambda key: "loss" in key),
    ("ap", lambda key: key.startswith("eval_")),
    ("lr", lambda key: key == "lr"),
    ("grad_norm", lambda key: key in ("grad_norm", "skipped_steps")),
    ("throughput", lambda key: key == "images_per_s"),
    ("other", lambda key: True),
)


def read_metrics(path):
    """{key: (iterations, values)} of one metrics.jsonl, sorted by iteration, the last row of a
    repeated iteration winning per key (training and evaluation rows of an iteration are kept
    apart: they have no key in common besides ``iteration``)."""
    latest = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                iteration = int(row.pop("iteration"))
            except (ValueError, KeyError, TypeError) as e:
                raise SystemExit(f"{path}:{number}: not a metrics row ({e})") from e
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    latest.setdefault(key, {})[iteration] = float(value)
    return {key: (sorted(points), [points[i] for i in sorted(points)]) for key, points in latest.items()}


def figure_of(key):
    return next(name for name, matches in FIGURES if matches(key))


def panel_order(keys):
    """Total loss first, then the main terms, then the rest alphabetically."""
    first = ("total_loss", "loss_class", "loss_bbox", "loss_giou", "select_loss", "eval_AP", "eval_AP50", "eval_AP75")
    return sorted(keys, key=lambda k: (first.index(k) if k in first else len(first), k))


def plot(runs, out):
    """``runs``: [(name, {key: (iterations, values)})]. Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    keys = {key for _, series in runs for key in series}
    written = []
    for name, _ in FIGURES:
        panels = panel_order([k for k in keys if figure_of(k) == name])
        if not panels:
            continue
        cols = min(4, len(panels))
        rows = math.ceil(len(panels) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
        for ax, key in zip(axes.flat, panels):
            for run, series in runs:
                if key in series:
                    iterations, values = series[key]
                    ax.plot(iterations, values, marker="o" if len(values) < 20 else None, markersize=3, label=run)
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("iteration", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if key == "lr":
                ax.set_yscale("log")
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        if len(runs) > 1:
            axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out, f"{name}.png")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", metavar="OUTPUT_DIR", help="train.output_dir of each run")
    parser.add_argument("--out", default="plots", help="folder for the PNG files (default: plots)")
    parser.add_argument("--names", nargs="+", help="legend names, one per OUTPUT_DIR (default: folder names)")
    args = parser.parse_args(argv)
    names = args.names or [os.path.basename(os.path.normpath(d)) for d in args.dirs]
    if len(names) != len(args.dirs):
        parser.error(f"--names: {len(names)} names for {len(args.dirs)} folders")
    runs = []
    for name, folder in zip(names, args.dirs):
        path = os.path.join(folder, "metrics.jsonl")
        if not os.path.isfile(path):
            parser.error(f"{folder}: no metrics.jsonl (written by train.py into train.output_dir)")
        runs.append((name, read_metrics(path)))
    for path in plot(runs, args.out):
        print(f"plot_logs: wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
