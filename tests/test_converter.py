"""The official-checkpoint converter: clear errors for every kind of mismatch, and the
command line tool end to end."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from src.checkpoint import CheckpointMismatch, official_to_port, parameter_shapes
from src.tools.parity.golden import golden_state_dict

REPO = Path(__file__).resolve().parents[1]

PORT = {"transformer.decoder.class_embed.0.weight": (3, 4), "transformer.decoder.class_embed.0.bias": (3,),
        "backbone.layer1.0.bn1.moving_mean": (4,), "transformer.token_selector.alpha": (3,)}


def official(**changes):
    sd = {"class_embed.0.weight": np.ones((3, 4)), "class_embed.0.bias": np.zeros(3),
          "transformer.decoder.class_embed.0.weight": np.ones((3, 4)),
          "transformer.decoder.class_embed.0.bias": np.zeros(3),
          "backbone.res2.0.conv1.norm.running_mean": np.zeros(4), "transformer.alpha": np.zeros(3)}
    sd.update(changes)
    return {k: v for k, v in sd.items() if v is not None}


def test_mapping_and_aliases():
    out = official_to_port(official(), PORT)
    assert set(out) == set(PORT)
    assert all(v.dtype == np.float32 for v in out.values())


@pytest.mark.parametrize("changes, field, text", [
    ({"extra.weight": np.zeros(2)}, "unmapped", "extra.weight"),
    ({"transformer.alpha": None}, "missing", "transformer.token_selector.alpha"),
    ({"transformer.alpha": np.zeros(4)}, "mismatched", "transformer.alpha: (4,) -> transformer.token_selector.alpha"),
    ({"transformer.decoder.class_embed.0.bias": np.ones(3)}, "alias_conflicts",
     "transformer.decoder.class_embed.0.bias != class_embed.0.bias"),
])
def test_mismatch_errors_name_every_key(changes, field, text):
    with pytest.raises(CheckpointMismatch) as err:
        official_to_port(official(**changes), PORT)
    assert any(text in item for item in getattr(err.value, field))
    assert text in str(err.value)


def write_golden_npz(golden_dir, tmp_path, depth=50):
    entries = json.load(open(golden_dir / f"state_dict_r{depth}_4scale.json"))["entries"]  # all float32
    weights = golden_state_dict(str(golden_dir), entries, 7)
    path = tmp_path / f"official_r{depth}.npz"
    np.savez(path, **weights)
    return path, weights


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "src.tools.convert_checkpoint", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_cli_converts_and_loads(golden_dir, tmp_path):
    import mindspore as ms

    src_path, weights = write_golden_npz(golden_dir, tmp_path)
    dst = tmp_path / "r50.ckpt"
    out = run_cli("--src", src_path, "--config", REPO / "config/focus_detr_r50_4scale_36ep.yaml", "--dst", dst)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "625 parameters" in out.stdout
    params = ms.load_checkpoint(str(dst))
    np.testing.assert_array_equal(params["transformer.token_selector.alpha"].asnumpy(), weights["transformer.alpha"])
    np.testing.assert_array_equal(params["backbone.layer3.5.conv2.weight"].asnumpy(),
                                  weights["backbone.res4.5.conv2.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["official_r50.npz", "r50.ckpt"]


def test_cli_rejects_checkpoint_of_other_depth(golden_dir, tmp_path):
    src_path, _ = write_golden_npz(golden_dir, tmp_path, depth=101)
    dst = tmp_path / "wrong.ckpt"
    out = run_cli("--src", src_path, "--config", REPO / "config/focus_detr_r50_4scale_36ep.yaml", "--dst", dst)
    assert out.returncode == 1
    assert "official keys with no port parameter" in out.stderr and "backbone.res4.22.conv1.weight" in out.stderr
    assert not dst.exists()


def r50_port_shapes():
    from src.config import load_config
    from src.modeling.build import build_model

    model = build_model(load_config(str(REPO / "config/focus_detr_r50_4scale_12ep.yaml")).model,
                        load_config(str(REPO / "config/base.yaml")).kernels)
    return parameter_shapes(model)


def test_imagenet_resnet_weights_in_detectron2_and_torchvision_layouts(golden_dir, tmp_path):
    from src.checkpoint import read_backbone_state_dict, resnet_backbone_weights

    shapes = r50_port_shapes()
    backbone = {k: v for k, v in shapes.items() if k.startswith("backbone.")}
    # detectron2 layout (the official r50_v1.pkl): the golden key list's backbone entries
    entries = json.load(open(golden_dir / "state_dict_r50_4scale.json"))["entries"]
    d2 = {e["name"][len("backbone."):]: np.full(e["shape"], i, np.float32)
          for i, e in enumerate(entries) if e["name"].startswith("backbone.")}
    assert set(resnet_backbone_weights(d2, shapes)) == set(backbone)
    # torchvision layout with its classifier, saved as .npz under a 'module.' wrapper
    suffix = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
    tv = {}
    for name, shape in backbone.items():
        stem, _, last = name[len("backbone."):].rpartition(".")
        key = "module." + stem.replace("down_sample", "downsample") + "." + suffix.get(last, last)
        tv[key] = np.ones(shape, np.float32)
    tv["module.fc.weight"] = np.ones((1000, 2048), np.float32)
    np.savez(tmp_path / "r50_tv.npz", **tv)
    loaded = resnet_backbone_weights(read_backbone_state_dict(str(tmp_path / "r50_tv.npz")), shapes)
    assert set(loaded) == set(backbone)

    broken = dict(d2)
    del broken["res5.2.conv3.weight"]
    broken["res2.0.conv1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    broken["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointMismatch) as err:
        resnet_backbone_weights(broken, shapes)
    assert err.value.unmapped == ["extra.weight"]
    assert err.value.missing == ["backbone.layer4.2.conv3.weight"]
    assert err.value.mismatched[0].startswith("res2.0.conv1.weight: (1, 1, 1, 1)")
