"""Data pipeline: synthetic generator, COCO reading/validation, augmentations, padded batches."""
import json
import logging
import os

import cv2
import numpy as np
import pytest

from src.data import (
    AugmentConfig,
    CocoDetection,
    DatasetError,
    apply_plan,
    build_loader,
    eval_plan,
    plan_epoch,
    resize_shortest_edge_size,
    sample_train_plan,
)
from src.data.synthetic import generate_synthetic_coco

SMALL_AUG = AugmentConfig(train_short_sides=(224, 256, 288, 320), train_max_size=400,
                          test_short_side=320, test_max_size=400)
CANVASES = [[320, 320], [320, 400], [400, 320]]


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_coco(str(root), num_train=30, num_val=5, seed=7)
    return root


def _synthetic_split(root, split="train", **kwargs):
    return CocoDetection(str(root / "annotations" / f"instances_{split}.json"), str(root / split), **kwargs)


def _write_coco(tmp_path, images, annotations, categories=({"id": 3}, {"id": 7})):
    """A tiny dataset: ``images`` as (id, height, width) written as PNG files."""
    os.makedirs(tmp_path / "img", exist_ok=True)
    entries = []
    for image_id, h, w in images:
        name = f"{image_id}.png"
        cv2.imwrite(str(tmp_path / "img" / name), np.full((h, w, 3), image_id % 255, np.uint8))
        entries.append({"id": image_id, "file_name": name, "height": h, "width": w})
    anns = [{"id": i + 1, "iscrowd": 0, **a} for i, a in enumerate(annotations)]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": entries, "annotations": anns, "categories": list(categories)}))
    return str(path), str(tmp_path / "img")


def _iterate(loader):
    return list(loader.create_dict_iterator(num_epochs=1, output_numpy=True))


# ---------------------------------------------------------------- synthetic generator

def test_synthetic_is_byte_identical_for_a_seed(tmp_path):
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        generate_synthetic_coco(str(tmp_path / name), num_train=3, num_val=1, seed=seed)

    def files(name):
        root = tmp_path / name
        return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
                for d, _, fs in os.walk(root) for f in fs}

    assert files("a") == files("b")
    assert files("a") != files("c")


def test_synthetic_dataset_is_sane(synthetic_root):
    data = json.loads((synthetic_root / "annotations" / "instances_train.json").read_text())
    assert [c["id"] for c in data["categories"]] == [1, 3, 5, 7, 9, 11]
    dataset = _synthetic_split(synthetic_root, bad_box="error", bad_image="error")
    assert len(dataset) == 30 and not any(dataset.skipped.values())
    counts = np.zeros(6, int)
    for index, record in enumerate(dataset.records):
        assert 1 <= len(record.boxes) <= 4
        assert 256 <= record.height <= 320 and 256 <= record.width <= 320
        assert (record.boxes[:, :2] >= 0).all() and (record.boxes[:, 2] <= record.width).all()
        assert (record.boxes[:, 3] <= record.height).all()
        assert (record.boxes[:, 2:] - record.boxes[:, :2]).min() >= 8  # occlusion leaves >= 70 % visible
        assert dataset.read_image(index).shape == (record.height, record.width, 3)
        np.add.at(counts, record.labels, 1)
    assert (counts > 0).all(), counts


# ---------------------------------------------------------------- COCO reading

def test_category_ids_map_to_contiguous_labels_and_back(tmp_path):
    ann, img = _write_coco(
        tmp_path, [(5, 40, 50), (2, 30, 30), (9, 20, 20)],
        [{"image_id": 5, "category_id": 10, "bbox": [1, 2, 10, 20]},
         {"image_id": 5, "category_id": 3, "bbox": [0, 0, 50, 40]},
         {"image_id": 2, "category_id": 7, "bbox": [5, 5, 5, 5], "iscrowd": 1}],
        categories=[{"id": 10, "name": "ten"}, {"id": 3, "name": "three"}, {"id": 7, "name": "seven"}])
    train = CocoDetection(ann, img)
    assert train.cat_ids == [3, 7, 10] and train.class_names == ["three", "seven", "ten"]
    assert [r.image_id for r in train.records] == [5]  # 2 has only a crowd box, 9 has none
    np.testing.assert_array_equal(train.records[0].labels, [2, 0])
    np.testing.assert_array_equal(train.records[0].boxes, [[1, 2, 11, 22], [0, 0, 50, 40]])
    assert train.contiguous_to_cat_id(2) == 10
    np.testing.assert_array_equal(train.contiguous_to_cat_id(np.array([0, 1, 2])), [3, 7, 10])
    assert train.skipped["crowd_annotations"] == 1 and train.skipped["empty_images"] == 2
    evaluation = CocoDetection(ann, img, filter_empty=False)
    assert [r.image_id for r in evaluation.records] == [2, 5, 9]


# ---------------------------------------------------------------- transforms

def test_flip_mirrors_boxes_exactly():
    image = np.arange(4 * 10 * 3, dtype=np.uint8).reshape(4, 10, 3)
    out, boxes, keep = apply_plan(image, np.array([[1, 2, 4, 3]]), (("hflip",),))
    np.testing.assert_array_equal(out, image[:, ::-1])
    np.testing.assert_array_equal(boxes, [[6, 2, 9, 3]])
    assert keep.all()


def test_resize_scales_boxes():
    image = np.zeros((40, 50, 3), np.uint8)
    out, boxes, _ = apply_plan(image, np.array([[10, 4, 20, 40]]), (("resize", 80, 150),))
    assert out.shape == (80, 150, 3)
    np.testing.assert_allclose(boxes, [[30, 8, 60, 80]])


@pytest.mark.parametrize("size, expected", [
    ((480, 640), (800, 1067)),   # 640 * 800 / 480 = 1066.67
    ((640, 427), (1199, 800)),   # 640 * 800 / 427 = 1199.06
    ((500, 1500), (444, 1333)),  # 2400 > 1333: 800 * 1333 / 2400 = 444.33
    ((800, 800), (800, 800)),
])
def test_test_resize_follows_detectron2_rule(size, expected):
    assert resize_shortest_edge_size(*size, 800, 1333) == expected
    assert eval_plan(*size, AugmentConfig()) == (("resize",) + expected,)


def test_official_training_plan_is_flip_then_multiscale_resize():
    rng = np.random.default_rng(0)
    plans = [sample_train_plan(rng, 480, 640, AugmentConfig()) for _ in range(200)]
    flips = sum(p[0] == ("hflip",) for p in plans)
    assert 60 < flips < 140
    shorts = {p[-1][1] for p in plans}
    assert shorts <= set(range(480, 801, 32)) and len(shorts) > 5
    assert all(p[-1][0] == "resize" and len(p) <= 2 for p in plans)  # no crop by default


def test_crop_keeps_boxes_consistent():
    image = np.zeros((100, 100, 3), np.uint8)
    boxes = np.array([[10, 10, 30, 30], [50, 60, 90, 95], [0, 0, 5, 5]], float)
    out, kept, keep = apply_plan(image, boxes, (("crop", 20, 8, 60, 70),))
    assert out.shape == (60, 70, 3)
    np.testing.assert_array_equal(keep, [True, True, False])
    np.testing.assert_allclose(kept, [[2, 0, 22, 10], [42, 40, 70, 60]])

    cfg = AugmentConfig(random_crop=True, train_short_sides=(256,), train_max_size=400)
    rng = np.random.default_rng(1)
    crops = 0
    for _ in range(30):
        plan = sample_train_plan(rng, 300, 420, cfg)
        steps = [s for s in plan if s[0] != "hflip"]
        if len(steps) == 3:  # resize (400|500|600), crop, resize (256)
            crops += 1
            (_, rh, rw), (_, y0, x0, ch, cw), _ = steps
            assert rh in (400, 500, 600)
            assert min(rh, 384) <= ch <= min(rh, 600) and min(rw, 384) <= cw <= min(rw, 600)
            assert y0 + ch <= rh and x0 + cw <= rw
        marked = np.zeros((300, 420, 3), np.uint8)
        marked[100:200, 150:300] = 255
        out, out_boxes, keep = apply_plan(marked, np.array([[150, 100, 300, 200]]), plan)
        assert out.shape[:2] == plan[-1][1:]
        ys, xs = np.nonzero(out[..., 0] > 127)
        assert keep[0] == (len(xs) > 0)
        if keep[0]:  # the box still covers exactly the bright pixels
            x0, y0, x1, y1 = out_boxes[0]
            assert abs(xs.min() - x0) <= 1 and abs(xs.max() + 1 - x1) <= 1
            assert abs(ys.min() - y0) <= 1 and abs(ys.max() + 1 - y1) <= 1
    assert 5 < crops < 25


# ---------------------------------------------------------------- loader

def test_train_batches_are_static_padded_and_normalized(synthetic_root):
    dataset = _synthetic_split(synthetic_root)
    plan = plan_epoch(dataset, 4, True, CANVASES, SMALL_AUG, seed=3, epoch=1)
    batches = _iterate(build_loader(dataset, 4, True, CANVASES, SMALL_AUG, num_workers=1, seed=3, epoch=1,
                                    max_boxes=6))
    assert len(batches) == len(plan) >= 5
    for batch, slots in zip(batches, plan):
        images, sizes = batch["images"], batch["image_sizes"]
        assert images.dtype == np.float32 and images.shape[:2] == (4, 3)
        assert list(images.shape[2:]) in CANVASES
        assert batch["gt_boxes"].shape == (4, 6, 4) and batch["gt_boxes"].dtype == np.float32
        assert batch["gt_labels"].dtype == np.int32 and batch["gt_valid"].dtype == np.bool_
        assert batch["image_ids"].dtype == np.int32 and batch["orig_sizes"].dtype == np.int32
        for i, (index, steps) in enumerate(slots):
            record = dataset.records[index]
            h, w = sizes[i]
            assert (h, w) == (steps[-1][1], steps[-1][2])
            assert batch["image_ids"][i] == record.image_id
            assert tuple(batch["orig_sizes"][i]) == (record.height, record.width)
            assert not images[i, :, h:].any() and not images[i, :, :, w:].any()
            expected, boxes, keep = apply_plan(dataset.read_image(index), record.boxes, steps)
            np.testing.assert_array_equal(images[i, :, :h, :w], expected.transpose(2, 0, 1))
            n = int(batch["gt_valid"][i].sum())
            assert n == len(boxes) and not batch["gt_valid"][i, n:].any()
            cxcywh = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)
            np.testing.assert_allclose(batch["gt_boxes"][i, :n], cxcywh / [w, h, w, h], rtol=1e-6)
            np.testing.assert_array_equal(batch["gt_labels"][i, :n], record.labels[keep])
        # the canvas is the smallest that holds the batch
        smaller = [c for c in CANVASES if c[0] * c[1] < images.shape[2] * images.shape[3]]
        assert not any(c[0] >= sizes[:, 0].max() and c[1] >= sizes[:, 1].max() for c in smaller)


def test_loader_is_deterministic_and_resumable(synthetic_root):
    dataset = _synthetic_split(synthetic_root)

    def ids(**kwargs):
        loader = build_loader(dataset, 4, True, CANVASES, SMALL_AUG, num_workers=2, seed=5, **kwargs)
        return [b["image_ids"].tolist() for b in _iterate(loader)]

    full = ids(epoch=0)
    assert ids(epoch=0, start_step=2) == full[2:]
    assert ids(epoch=1) != full


def test_shards_are_disjoint_and_equal_length(synthetic_root):
    dataset = _synthetic_split(synthetic_root)
    train = [plan_epoch(dataset, 2, True, CANVASES, SMALL_AUG, seed=0, shard_id=s, num_shards=3) for s in range(3)]
    seen = [{slot[0] for batch in shard for slot in batch} for shard in train]
    assert len({len(shard) for shard in train}) == 1
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    evaluation = [plan_epoch(dataset, 4, False, CANVASES, SMALL_AUG, shard_id=s, num_shards=2) for s in range(2)]
    seen = [[slot[0] for batch in shard for slot in batch if slot] for shard in evaluation]
    assert sorted(seen[0] + seen[1]) == list(range(len(dataset)))


def test_eval_keeps_every_image_and_marks_fillers(synthetic_root):
    dataset = _synthetic_split(synthetic_root, "val", filter_empty=False)
    batches = _iterate(build_loader(dataset, 2, False, CANVASES, SMALL_AUG, num_workers=1))
    ids = np.concatenate([b["image_ids"] for b in batches])
    assert sorted(ids[ids >= 0].tolist()) == [1, 2, 3, 4, 5] and (ids == -1).sum() == len(ids) - 5
    for batch in batches:
        for i in np.nonzero(batch["image_ids"] == -1)[0]:
            assert not batch["images"][i].any() and not batch["gt_valid"][i].any()
            np.testing.assert_array_equal(batch["image_sizes"][i], batch["images"].shape[2:])


def test_max_boxes_keeps_the_first_and_warns(synthetic_root, caplog):
    dataset = _synthetic_split(synthetic_root)
    with caplog.at_level(logging.WARNING):
        batches = _iterate(build_loader(dataset, 4, True, CANVASES, SMALL_AUG, num_workers=1, max_boxes=1))
    assert all(b["gt_valid"].sum(1).max() <= 1 for b in batches)
    assert sum("max_boxes=1" in r.getMessage() for r in caplog.records) == 1


# ---------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("text, needle", [
    ("{not json", "not valid JSON"),
    (json.dumps({"images": [], "categories": []}), "'annotations'"),
    (json.dumps({"images": {}, "annotations": [], "categories": []}), "'images' must be a list"),
    (json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 4}], "annotations": [],
                 "categories": [{"id": 1}]}), "images[0] has no field 'height'"),
    (json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
                 "annotations": [{"id": 8, "image_id": 1, "category_id": 1, "bbox": [0, 0, "1", 1]}],
                 "categories": [{"id": 1}]}), "annotations[0] (id=8).bbox must be a list of 4 finite numbers"),
])
def test_malformed_json_names_file_and_field(tmp_path, text, needle):
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(DatasetError) as error:
        CocoDetection(str(path), str(tmp_path))
    assert str(path) in str(error.value) and needle in str(error.value)


@pytest.mark.parametrize("annotation, needle", [
    ({"image_id": 1, "category_id": 4, "bbox": [0, 0, 5, 5]}, "(id=1).category_id 4 is not in 'categories'"),
    ({"image_id": 6, "category_id": 3, "bbox": [0, 0, 5, 5]}, "(id=1).image_id 6 is not in 'images'"),
])
def test_unknown_ids_name_the_annotation(tmp_path, annotation, needle):
    ann, img = _write_coco(tmp_path, [(1, 20, 20)], [annotation])
    with pytest.raises(DatasetError) as error:
        CocoDetection(ann, img)
    assert ann in str(error.value) and needle in str(error.value)


@pytest.mark.parametrize("bbox, needle", [
    ([2, 2, 0, 5], "non-positive width/height"),
    ([2, 2, -3, 5], "non-positive width/height"),
    ([15, 2, 10, 5], "outside the 20x20 image"),
    ([-4, 2, 10, 5], "outside the 20x20 image"),
])
def test_bad_box_policy(tmp_path, caplog, bbox, needle):
    ann, img = _write_coco(tmp_path, [(1, 20, 20)], [{"image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 4]},
                                                     {"image_id": 1, "category_id": 7, "bbox": bbox}])
    with pytest.raises(DatasetError) as error:
        CocoDetection(ann, img, bad_box="error")
    assert ann in str(error.value) and "annotations[1] (id=2).bbox" in str(error.value)
    assert needle in str(error.value)
    with caplog.at_level(logging.WARNING):
        dataset = CocoDetection(ann, img)
    assert dataset.skipped["bad_boxes"] == 1 and len(dataset.records[0].boxes) == 1
    assert any(needle in r.getMessage() for r in caplog.records)


def test_small_overshoot_is_clipped(tmp_path):
    ann, img = _write_coco(tmp_path, [(1, 20, 20)], [{"image_id": 1, "category_id": 3, "bbox": [-0.5, 2, 20.9, 5]}])
    dataset = CocoDetection(ann, img, bad_box="error")
    np.testing.assert_allclose(dataset.records[0].boxes, [[0, 2, 20, 7]])


def test_missing_image_policy(tmp_path, caplog):
    ann, img = _write_coco(tmp_path, [(1, 20, 20), (2, 20, 20)],
                           [{"image_id": i, "category_id": 3, "bbox": [1, 1, 4, 4]} for i in (1, 2)])
    os.remove(os.path.join(img, "2.png"))
    with pytest.raises(DatasetError) as error:
        CocoDetection(ann, img, bad_image="error")
    assert os.path.join(img, "2.png") in str(error.value) and "file_name" in str(error.value)
    with caplog.at_level(logging.WARNING):
        dataset = CocoDetection(ann, img)
    assert [r.image_id for r in dataset.records] == [1] and dataset.skipped["missing_images"] == 1
    assert any("2.png" in r.getMessage() for r in caplog.records)


def test_truncated_image_policy(tmp_path, caplog):
    ann, img = _write_coco(tmp_path, [(i, 40, 60) for i in (1, 2, 3)],
                           [{"image_id": i, "category_id": 3, "bbox": [1, 1, 20, 20]} for i in (1, 2, 3)])
    bad = os.path.join(img, "2.png")
    cv2.imwrite(bad, np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    with open(bad, "r+b") as f:
        f.truncate(os.path.getsize(bad) // 2)
    aug = AugmentConfig(train_short_sides=(40,), train_max_size=60, test_short_side=40, test_max_size=60)

    strict = CocoDetection(ann, img, bad_image="error")
    with pytest.raises(DatasetError, match="cannot decode") as error:
        strict.read_image(1)
    assert bad in str(error.value)
    with pytest.raises(RuntimeError) as error:
        _iterate(build_loader(strict, 3, False, None, aug, num_workers=1))
    assert bad in str(error.value)

    with caplog.at_level(logging.WARNING):
        lenient = CocoDetection(ann, img)
        train = _iterate(build_loader(lenient, 3, True, None, aug, num_workers=1))
        evaluation = _iterate(build_loader(lenient, 3, False, None, aug, num_workers=1))
    assert lenient.skipped["unreadable_images"] == 2
    assert any(bad in r.getMessage() for r in caplog.records)
    assert 2 not in train[0]["image_ids"] and (train[0]["image_ids"] > 0).all()  # replaced by a readable one
    assert sorted(evaluation[0]["image_ids"].tolist()) == [-1, 1, 3]
