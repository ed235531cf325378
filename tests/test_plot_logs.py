"""scripts/plot_logs.py: the curves of metrics.jsonl as written by the trainer (every loss term,
lr, gradient norm, skipped steps, images/s, evaluation APs), two runs overlaid, one of them
resumed (its repeated iterations drawn from the last rows)."""
import importlib.util
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from src.engine.evaluator import STAT_NAMES
from src.losses.criterion import loss_keys

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("plot_logs", REPO / "scripts" / "plot_logs.py")
plot_logs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot_logs)


def training_row(iteration, scale):
    """A row with the keys Trainer.log writes."""
    losses = {k: scale * (1.0 + i / 10) / iteration for i, k in enumerate(loss_keys(2))}
    return dict(losses, iteration=iteration, total_loss=sum(losses.values()), lr=1e-4, grad_norm=scale,
                images_per_s=2.0, skipped_steps=0)


def write_run(folder, iterations, scale, evaluate_at=()):
    folder.mkdir()
    with open(folder / "metrics.jsonl", "w") as f:
        for it in iterations:
            f.write(json.dumps(training_row(it, scale)) + "\n")
            if it in evaluate_at:
                f.write(json.dumps({"iteration": it, **{f"eval_{k}": it / 100 for k in STAT_NAMES}}) + "\n")


def test_plots_every_key_of_two_runs(tmp_path):
    write_run(tmp_path / "a", range(1, 9), 1.0, evaluate_at=(4, 8))
    # b was killed after iteration 6 and resumed from its checkpoint of 4: 5 and 6 appear twice
    write_run(tmp_path / "b", [*range(1, 7), *range(5, 9)], 2.0, evaluate_at=(4,))
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
        f.write(json.dumps(dict(training_row(6, 3.0))) + "\n")
    series = plot_logs.read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert series["grad_norm"][0] == list(range(1, 9))
    assert series["grad_norm"][1] == [2.0] * 5 + [3.0, 2.0, 2.0]  # iteration 6: its last row
    assert series["eval_AP"] == ([4], [0.04])

    out = tmp_path / "plots"
    assert plot_logs.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["ap.png", "grad_norm.png", "losses.png", "lr.png",
                                                      "throughput.png"]
    panels = {"losses": len(loss_keys(2)) + 1, "ap": len(STAT_NAMES), "grad_norm": 2, "lr": 1, "throughput": 1}
    for name, count in panels.items():
        image = cv2.imread(str(out / f"{name}.png"))
        cols = min(4, count)
        # figure size 4.5 x 3.2 inches per panel at 80 dpi: one panel for each key
        assert image.shape[:2] == (round(3.2 * 80 * math.ceil(count / cols)), round(4.5 * 80 * cols)), name
        assert np.unique(image.reshape(-1, 3), axis=0).shape[0] > 10  # something is drawn


def test_bad_rows_and_folders_are_named(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"iteration": 1, "lr": 0.1}\nnot json\n')
    with pytest.raises(SystemExit, match=r"metrics.jsonl:2: not a metrics row"):
        plot_logs.read_metrics(tmp_path / "run" / "metrics.jsonl")
    with pytest.raises(SystemExit):
        plot_logs.main([str(tmp_path / "missing")])
    assert "no metrics.jsonl" in capsys.readouterr().err
