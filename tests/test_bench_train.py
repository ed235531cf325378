"""scripts/bench_train.py end to end: the quick-start train step on a tiny canvas, in a subprocess
(as run by hand), ends with a parseable ``bench_train:`` line whose numbers are consistent.

The quick-start model is shrunk with KEY=VALUE overrides (which the test thereby covers): at its
own size the graph compile alone takes ~1.5 min on the 2-core CPU; 64x64 is the smallest canvas
(85 tokens) that holds the 20 queries, where the full quick start needs 96x96 for its 100."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.embed_dim=32", "model.num_heads=2", "model.ffn_dim=64", "model.num_encoder_layers=1",
        "model.cascade=[1.0]", "model.num_decoder_layers=1", "model.num_queries=20", "model.topk_sa=20",
        "model.num_select=20", "model.dn_number=6"]


def test_bench_train_quickstart_tiny_canvas():
    cmd = [sys.executable, "scripts/bench_train.py", "--config", "config/quickstart.yaml", "--height", "64",
           "--width", "64", "--batch", "1", "--boxes", "3", "--warmup", "1", "--repeat", "2"] + TINY
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert any("first call" in line for line in lines)  # progress while it runs
    last = lines[-1]
    assert last.startswith("bench_train: "), last
    fields = dict(item.split("=", 1) for item in last[len("bench_train: "):].split())
    assert fields["config"] == "config/quickstart.yaml"
    assert (fields["canvas"], fields["batch"], fields["mode"]) == ("64x64", "1", "graph")
    step_s, images_per_s = float(fields["step_s"]), float(fields["images_per_s"])
    assert step_s > 0
    assert images_per_s == pytest.approx(1 / step_s, rel=1e-2)
    assert float(fields["step_min_s"]) <= step_s <= float(fields["step_max_s"])
    assert float(fields["first_call_s"]) > 0 and float(fields["peak_rss_gb"]) > 0
    assert "msda:" in fields["kernels"]
