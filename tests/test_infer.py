"""infer.py on two synthetic images with a tiny random model: pictures, json detections inside
each image, class names from a COCO json, and the foreground-token picture; on a video: an
annotated video and per-frame detections equal to those of its frames as images.

infer.main runs several times in the test process: the compile cache stays off (MindSpore numbers
the graphs a process caches, so a second start in one process would continue the count; see
src.runtime.enable_compile_cache)."""
import json
from pathlib import Path

import cv2
import mindspore as ms
import numpy as np
import pytest

import infer
from src.config import load_config
from src.data.synthetic import generate_synthetic_coco
from src.modeling.build import build_model
from src.runtime import COMPILE_CACHE_ENV

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "config/quickstart.yaml")
LAYERS = 2
TINY = [f"model.num_encoder_layers={LAYERS}", "model.cascade=[1.0, 0.6]", "model.num_decoder_layers=2",
        "model.embed_dim=32", "model.num_heads=2", "model.ffn_dim=64", "model.num_queries=20", "model.num_select=20",
        "model.topk_sa=30", "data.test_short_side=96", "data.test_max_size=128", "data.eval_canvases=[[128, 128]]"]


@pytest.fixture(autouse=True)
def no_compile_cache(monkeypatch):
    monkeypatch.setenv(COMPILE_CACHE_ENV, "off")


def tiny_checkpoint(tmp_path):
    cfg = load_config(CONFIG, TINY)
    ms.set_seed(0)
    ckpt = str(tmp_path / "tiny.ckpt")
    ms.save_checkpoint(build_model(cfg.model, cfg.kernels), ckpt)
    return cfg, ckpt


def test_infer_writes_pictures_json_and_focus(tmp_path):
    data = tmp_path / "data"
    generate_synthetic_coco(str(data), num_train=0, num_val=2, size_range=(90, 128), num_classes=6, seed=3)
    cfg, ckpt = tiny_checkpoint(tmp_path)
    coco = data / "annotations" / "instances_val.json"
    out = tmp_path / "out"
    assert infer.main(["--config", CONFIG, "--ckpt", ckpt, "--input", str(data / "val"), "--output", str(out),
                       "--score-thr", "0", "--class-names", str(coco), "--show-focus"] + TINY) == 0

    names = {c["name"] for c in json.loads(coco.read_text())["categories"]}
    for entry in json.loads(coco.read_text())["images"]:
        stem = out / Path(entry["file_name"]).stem
        h, w = entry["height"], entry["width"]
        assert cv2.imread(str(stem) + ".jpg").shape == (h, w, 3)
        result = json.loads(Path(str(stem) + ".json").read_text())
        assert (result["height"], result["width"]) == (h, w)
        dets = result["detections"]
        assert dets, "score threshold 0 keeps every non-empty box"
        boxes = np.array([d["box_xyxy"] for d in dets])
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert {d["name"] for d in dets} <= names
        scale = infer.FOCUS_PANEL / max(h, w)
        panel_h, panel_w = round(h * scale), round(w * scale)
        focus = cv2.imread(str(stem) + "_focus.jpg")
        assert focus.shape == ((LAYERS + 1) * panel_h, cfg.model.num_levels * panel_w, 3)


def test_infer_video_equals_its_frames_as_images(tmp_path, capsys):
    data = tmp_path / "data"
    generate_synthetic_coco(str(data), num_train=0, num_val=4, size_range=(112, 112), num_classes=6, seed=5)
    video_path = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video_path, cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (112, 112))
    for name in sorted((data / "val").iterdir()):
        writer.write(cv2.imread(str(name)))
    writer.release()
    frames = tmp_path / "frames"  # the video decoded: the pixels the video run sees
    frames.mkdir()
    decoded = cv2.VideoCapture(video_path)
    count = 0
    while True:
        ok, frame = decoded.read()
        if not ok:
            break
        cv2.imwrite(str(frames / f"frame{count:03d}.png"), frame)
        count += 1
    assert count == 4
    _, ckpt = tiny_checkpoint(tmp_path)
    common = ["--config", CONFIG, "--ckpt", ckpt, "--score-threshold", "0"] + TINY  # 0: every non-empty box
    assert infer.main(common + ["--input", video_path, "--output", str(tmp_path / "video")]) == 0
    assert "frames/s" in capsys.readouterr().out
    assert infer.main(common + ["--input", str(frames), "--output", str(tmp_path / "images")]) == 0
    assert "[4/4]" in capsys.readouterr().out

    per_frame = [json.loads(line) for line in (tmp_path / "video" / "clip.jsonl").read_text().splitlines()]
    assert [f["frame"] for f in per_frame] == [0, 1, 2, 3]
    for k, frame in enumerate(per_frame):
        image = json.loads((tmp_path / "images" / f"frame{k:03d}.json").read_text())
        assert frame["detections"] and frame["detections"] == image["detections"], k
    annotated = cv2.VideoCapture(str(tmp_path / "video" / "clip.mp4"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    assert (int(annotated.get(cv2.CAP_PROP_FRAME_WIDTH)), int(annotated.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (112, 112)
