"""Fine-tuning a checkpoint of another class count (``train.py --ckpt coco.ckpt model.num_classes=3``):
every weight that does not depend on the class count is loaded, the class-sized ones keep their
fresh (official) initialization and are named, any other mismatch is still refused; end to end
through the single-device launcher, an 80-class checkpoint trains and evaluates on 3 classes
(periodic evaluation, per-class AP and the best checkpoint included)."""
import json
import os
import subprocess
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from test_train import TINY

from src.checkpoint import CheckpointMismatch, load_for_fine_tuning, parameter_shapes
from src.checkpoint.training import best_checkpoint
from src.config import load_config
from src.modeling.build import build_model

REPO = Path(__file__).resolve().parents[1]


def tiny_model(num_classes, overrides=(), seed=0):
    cfg = load_config(str(REPO / "config/quickstart.yaml"), TINY + [f"model.num_classes={num_classes}", *overrides])
    ms.set_seed(seed)
    return build_model(cfg.model, cfg.kernels), cfg


@pytest.fixture(scope="module")
def coco_checkpoint(tmp_path_factory):
    """A checkpoint of the tiny quick-start architecture with 80 classes."""
    path = str(tmp_path_factory.mktemp("coco") / "coco80.ckpt")
    ms.save_checkpoint(tiny_model(80, seed=1)[0], path)
    return path


def values(model):
    return {p.name: p.asnumpy().copy() for p in model.get_parameters()}


def test_class_sized_parameters_are_exactly_those_the_class_count_shapes():
    model, cfg = tiny_model(3)
    other = parameter_shapes(tiny_model(80)[0])
    shaped = sorted(k for k, shape in parameter_shapes(model).items() if other[k] != shape)
    assert sorted(model.class_sized_parameters()) == shaped
    layers = cfg.model.num_decoder_layers
    assert len(shaped) == 2 * (layers + 1) + 1  # weight and bias of every class head, the label embedding
    assert "label_enc.embedding_table" in shaped


def test_fine_tuning_loads_all_but_the_class_sized_weights(coco_checkpoint):
    model = tiny_model(3, seed=2)[0]
    fresh = values(model)
    reinitialized = load_for_fine_tuning(model, coco_checkpoint)
    assert reinitialized == sorted(model.class_sized_parameters())
    saved = {k: v.asnumpy() for k, v in ms.load_checkpoint(coco_checkpoint).items()}
    for name, value in values(model).items():
        expected = fresh[name] if name in reinitialized else saved[name]
        np.testing.assert_array_equal(value, expected, err_msg=name)
    # the official initialization of a class head: prior probability 0.01 in the bias
    bias = [k for k in reinitialized if k.endswith("class_embed.0.bias")][0]
    np.testing.assert_allclose(values(model)[bias], -np.log(99.0), rtol=1e-6)


def test_same_class_count_loads_everything(coco_checkpoint):
    model = tiny_model(80, seed=2)[0]
    assert load_for_fine_tuning(model, coco_checkpoint) == []
    saved = ms.load_checkpoint(coco_checkpoint)
    for name, value in values(model).items():
        np.testing.assert_array_equal(value, saved[name].asnumpy(), err_msg=name)


def test_other_mismatches_are_still_refused(coco_checkpoint):
    model = tiny_model(3, ["model.ffn_dim=48"])[0]
    with pytest.raises(CheckpointMismatch) as error:
        load_for_fine_tuning(model, coco_checkpoint)
    text = str(error.value)
    assert "ffns" in text and "class_embed" not in text and "label_enc" not in text


def test_fine_tune_through_the_launcher_trains_and_evaluates(tiny_data, coco_checkpoint, tmp_path):
    out = tmp_path / "finetune"
    env = dict(os.environ, DEVICE_TARGET="CPU")
    done = subprocess.run(["bash", "scripts/run_standalone_train.sh", "config/quickstart.yaml", str(tiny_data),
                           str(out), *TINY, "train.max_iter=2", "train.eval_period=1", "--ckpt", coco_checkpoint],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    text = (out / "log.txt").read_text()
    assert f"loaded weights from {coco_checkpoint}" in text
    model = tiny_model(3)[0]
    assert (f"fine-tuning for model.num_classes=3: the checkpoint's class count differs, "
            f"{len(model.class_sized_parameters())} class-sized parameters keep their initialization: "
            f"{', '.join(sorted(model.class_sized_parameters()))}") in text
    assert "iter 2/2" in text
    stats = json.loads((out / "eval_results.json").read_text())
    assert 0.0 <= stats["AP"] <= 1.0 and 0.0 <= stats["AP50"] <= 1.0
    assert [r["name"] for r in stats["per_class"]] == [c["name"] for c in json.loads(
        (tiny_data / "annotations/instances_val.json").read_text())["categories"]]
    # the periodic evaluation after iteration 1 and the final one after 2, the better one kept
    evaluations = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "eval_AP" in r]
    assert [r["iteration"] for r in evaluations] == [1, 2]
    best = max(evaluations, key=lambda r: r["eval_AP"])  # the first one on a tie
    assert best_checkpoint(str(out))["iteration"] == best["iteration"]
