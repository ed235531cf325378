"""scripts/browse_dataset.py: pictures of the batches as the model receives them -- one per image,
on its canvas, the padding hatched, every ground-truth box outlined in its class colour where the
json puts it (scaled by the pipeline's resize)."""
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from src.data.synthetic import generate_synthetic_coco
from src.visualize import colour

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("browse_dataset", REPO / "scripts" / "browse_dataset.py")
browse_dataset = importlib.util.module_from_spec(spec)
spec.loader.exec_module(browse_dataset)
HEADER = 14 * 2 + 4  # two header lines above the canvas


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("browse")
    generate_synthetic_coco(str(root), num_train=4, num_val=3, seed=3)
    return root


def run(data, out, *args):
    assert browse_dataset.main(["--config", "config/quickstart.yaml", "--data", str(data), "--out", str(out),
                                *args]) == 0
    return sorted(out.glob("*.png"))


def test_val_pictures_show_the_json_boxes_on_the_canvas(data, tmp_path):
    pictures = run(data, tmp_path, "--split", "val")
    val = json.loads((data / "annotations/instances_val.json").read_text())
    assert len(pictures) == len(val["images"])
    labels = {c["id"]: k for k, c in enumerate(sorted(val["categories"], key=lambda c: c["id"]))}
    checked = 0
    for path in pictures:
        image_id = int(path.stem.split("_id")[1])
        info = next(i for i in val["images"] if i["id"] == image_id)
        picture = cv2.imread(str(path)).astype(int)
        canvas = picture[HEADER:]
        assert canvas.shape[:2] == (256, 256)  # quickstart's data.eval_canvases
        # the test resize: shortest side to data.test_short_side (208) within data.test_max_size (256)
        scale = min(208 / min(info["height"], info["width"]), 256 / max(info["height"], info["width"]))
        h, w = round(info["height"] * scale), round(info["width"] * scale)
        if h < 252:
            assert np.abs(canvas[h + 2:, :w].reshape(-1, 3).mean(0) - 80).max() < 20  # hatched grey
        for a in (a for a in val["annotations"] if a["image_id"] == image_id):
            x, y, bw, bh = (v * scale for v in a["bbox"])
            left, middle = int(round(x)), int(round(y + bh / 2))
            expected = np.array(colour(labels[a["category_id"]]))
            around = canvas[middle - 1:middle + 2, max(left - 1, 0):left + 2].reshape(-1, 3)
            assert (around == expected).all(1).any(), (path.name, a["id"])  # PNG: the exact colour, +-1 px
            checked += 1
    assert checked >= len(pictures)


def test_augmented_train_pictures(data, tmp_path):
    pictures = run(data, tmp_path, "--split", "train", "--augment", "--num", "3", "--epoch", "1")
    assert len(pictures) == 3 and all(p.name.startswith("train_e1_") for p in pictures)
    assert all(cv2.imread(str(p)).shape[:2] == (HEADER + 256, 256) for p in pictures)  # data.canvases
