"""eval.py end to end on a synthetic COCO-format set: the AP table, the result files, and a
clear refusal of a checkpoint that does not fit the config."""
import json
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import pytest

from src.config import load_config
from src.data.synthetic import generate_synthetic_coco
from src.modeling.build import build_model

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.num_encoder_layers=1", "model.cascade=[1.0]", "model.num_decoder_layers=2", "model.embed_dim=32",
        "model.num_heads=2", "model.ffn_dim=64", "model.num_queries=20", "model.num_select=20", "model.topk_sa=30",
        "model.num_classes=3", "data.test_short_side=96", "data.test_max_size=128",
        "data.eval_canvases=[[128, 128]]", "train.eval_batch_size=2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    generate_synthetic_coco(str(root), num_train=1, num_val=5, size_range=(96, 128), num_classes=3, seed=4,
                            max_objects=2, min_object_size=24)
    cfg = load_config(str(REPO / "config/quickstart.yaml"), TINY)
    ms.set_seed(0)
    ckpt = root / "tiny.ckpt"
    ms.save_checkpoint(build_model(cfg.model, cfg.kernels), str(ckpt))
    data = [f"data.val_json={root}/annotations/instances_val.json", f"data.val_images={root}/val"]
    return root, ckpt, data


def run_eval(ckpt, overrides):
    return subprocess.run([sys.executable, "eval.py", "--config", "config/quickstart.yaml", "--ckpt", str(ckpt)]
                          + overrides, cwd=REPO, capture_output=True, text=True, timeout=900)


def test_eval_prints_coco_table_and_writes_results(setup, tmp_path):
    root, ckpt, data = setup
    out = run_eval(ckpt, TINY + data + [f"train.output_dir={tmp_path}"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in out.stdout
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("eval: AP=")
    stats = json.loads((tmp_path / "eval_results.json").read_text())
    assert set(stats) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    detections = json.loads((tmp_path / "coco_instances_results.json").read_text())
    images = {i["id"] for i in json.loads((root / "annotations/instances_val.json").read_text())["images"]}
    categories = {c["id"] for c in json.loads((root / "annotations/instances_val.json").read_text())["categories"]}
    assert detections and {d["image_id"] for d in detections} <= images
    assert {d["category_id"] for d in detections} <= categories  # mapped back to the json's ids


def test_eval_refuses_a_checkpoint_of_another_model(setup, tmp_path):
    _, ckpt, data = setup
    out = run_eval(ckpt, TINY + data + ["model.embed_dim=64", f"train.output_dir={tmp_path}"])
    assert out.returncode != 0
    assert "checkpoint does not match the model" in out.stderr and "shape mismatches" in out.stderr
