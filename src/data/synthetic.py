"""Synthetic COCO-format detection dataset of coloured shapes, for quick end-to-end runs.

Each image has a smooth low-saturation background (a linear gradient between two greyish
colours plus pixel noise) and 1..``max_objects`` filled shapes. A class is a (shape, colour
family) pair: shapes rectangle / ellipse / triangle, colour families red / blue / green /
yellow; each object gets its own size, aspect ratio and colour jittered inside its family.
Category ids are 1, 3, 5, ... (deliberately not contiguous) to exercise the id mapping.

Occlusion: shapes are painted in order, so later ones cover earlier ones. A new shape is
re-drawn (up to ``PLACEMENT_TRIES`` times, else the image keeps fewer objects) if it would
leave any earlier shape with less than ``MIN_VISIBLE`` of its pixels visible, or if it would
overlap an earlier shape of its own colour family (their union would read as one blob, which
makes the boxes ambiguous rather than hard). Every painted shape is therefore annotated, with
the tight box of its visible pixels (COCO-style modal box) and its visible pixel count as
``area``; no visible object is left unlabelled.

Images are lossless PNG and every random draw comes from a generator keyed by
(seed, split, image index), so the same arguments give byte-identical files.

CLI: ``python -m src.data.synthetic --root DIR --num-train N --num-val M --seed S``
"""
import argparse
import colorsys
import json
import os

import cv2
import numpy as np

SHAPES = ("rectangle", "ellipse", "triangle")
COLOUR_HUES = (("red", 0.0), ("blue", 0.62), ("green", 0.33), ("yellow", 0.15))  # hue in [0, 1)
MAX_CLASSES = len(SHAPES) * len(COLOUR_HUES)
MIN_VISIBLE = 0.7
PLACEMENT_TRIES = 20
SPLIT_KEYS = {"train": 0, "val": 1}


def categories(num_classes):
    """COCO categories: class k is shape k % 3 in colour family k // 3, with id 2k + 1."""
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in [1, {MAX_CLASSES}], got {num_classes}")
    return [{"id": 2 * k + 1, "name": f"{COLOUR_HUES[k // 3][0]}_{SHAPES[k % 3]}", "supercategory": "shape"}
            for k in range(num_classes)]


def _background(rng, height, width):
    ends = [np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, 0.2), rng.uniform(0.25, 0.9)))
            for _ in range(2)]
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    return 255.0 * (ends[0] + t[..., None] * (ends[1] - ends[0]))


def _shape_mask(rng, shape, height, width, x0, y0, box_w, box_h):
    mask = np.zeros((height, width), np.uint8)
    x1, y1 = x0 + box_w - 1, y0 + box_h - 1
    if shape == "rectangle":
        mask[y0:y1 + 1, x0:x1 + 1] = 1
    elif shape == "ellipse":
        cv2.ellipse(mask, (((x0 + x1) / 2, (y0 + y1) / 2), (box_w, box_h), 0.0), 1, -1)
    else:  # triangle: apex somewhere on one side of the box, base on the opposite side
        side, t = rng.integers(4), rng.uniform(0.2, 0.8)
        apex_x, apex_y = int(round(x0 + t * (x1 - x0))), int(round(y0 + t * (y1 - y0)))
        points = {0: [(apex_x, y0), (x0, y1), (x1, y1)], 1: [(apex_x, y1), (x0, y0), (x1, y0)],
                  2: [(x0, apex_y), (x1, y0), (x1, y1)], 3: [(x1, apex_y), (x0, y0), (x0, y1)]}[int(side)]
        cv2.fillPoly(mask, [np.array(points, np.int32)], 1)
    return mask.astype(bool)


def generate_image(rng, num_classes, size_range=(256, 320), max_objects=4, min_object_size=32):
    """One RGB uint8 image and its objects as (label, visible mask) pairs, in paint order."""
    height, width = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
    image = _background(rng, height, width)
    owner = np.full((height, width), -1, np.int16)  # index of the object seen at each pixel
    full_areas, labels = [], []
    max_side = max(min_object_size, int(0.6 * min(height, width)))
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _ in range(PLACEMENT_TRIES):
            label = int(rng.integers(num_classes))
            box_w, box_h = (int(v) for v in rng.integers(min_object_size, max_side + 1, size=2))
            x0, y0 = int(rng.integers(width - box_w + 1)), int(rng.integers(height - box_h + 1))
            mask = _shape_mask(rng, SHAPES[label % 3], height, width, x0, y0, box_w, box_h)
            same_colour = [j for j, other in enumerate(labels) if other // 3 == label // 3]
            if (all(np.count_nonzero((owner == j) & ~mask) >= MIN_VISIBLE * area
                    for j, area in enumerate(full_areas))
                    and not np.isin(owner[mask], same_colour).any()):
                break
        else:
            break
        hue = (COLOUR_HUES[label // 3][1] + rng.uniform(-0.03, 0.03)) % 1.0
        colour = colorsys.hsv_to_rgb(hue, rng.uniform(0.7, 1.0), rng.uniform(0.65, 1.0))
        image[mask] = 255.0 * np.array(colour)
        owner[mask] = len(full_areas)
        full_areas.append(np.count_nonzero(mask))
        labels.append(label)
    image += rng.normal(0.0, 6.0, image.shape)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return image, [(label, owner == j) for j, label in enumerate(labels)]


def _write_split(root, split, num_images, num_classes, seed, size_range, max_objects, min_object_size):
    cats = categories(num_classes)
    os.makedirs(os.path.join(root, split), exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        rng = np.random.default_rng([seed, SPLIT_KEYS[split], index])
        image, objects = generate_image(rng, num_classes, size_range, max_objects, min_object_size)
        file_name = f"{index + 1:06d}.png"
        cv2.imwrite(os.path.join(root, split, file_name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "height": image.shape[0], "width": image.shape[1]})
        for label, visible in objects:
            ys, xs = np.nonzero(visible)
            x0, y0 = int(xs.min()), int(ys.min())
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": cats[label]["id"],
                "bbox": [float(x0), float(y0), float(xs.max() + 1 - x0), float(ys.max() + 1 - y0)],
                "area": float(len(xs)), "iscrowd": 0})
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    info = {"description": "synthetic coloured shapes (src.data.synthetic)", "seed": seed, "split": split}
    with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w", encoding="utf-8") as f:
        json.dump({"info": info, "images": images, "annotations": annotations, "categories": cats}, f)


def generate_synthetic_coco(root, num_train, num_val, size_range=(256, 320), num_classes=6, seed=0,
                            max_objects=4, min_object_size=32):
    """Write ``root/{train,val}/*.png`` and ``root/annotations/instances_{train,val}.json``.

    ``size_range`` bounds the image height and width (each drawn independently);
    ``min_object_size`` is the smallest side of a shape before occlusion.
    """
    if min_object_size > 0.6 * size_range[0]:
        raise ValueError(f"min_object_size {min_object_size} is too large for images of {size_range[0]} px")
    for split, count in (("train", num_train), ("val", num_val)):
        _write_split(root, split, count, num_classes, seed, size_range, max_objects, min_object_size)


def random_train_batch(rng, batch, height, width, max_boxes, boxes, num_classes):
    """A training batch in the loader's padded layout (``src/data/loader.py``) without any file:
    random images filling the (height, width) canvas, the first ``boxes`` of ``max_boxes`` GT
    slots valid with random boxes inside the image. For benchmarks and graph checks, whose
    results depend on the shapes only. Returns (images, image_sizes, gt_boxes, gt_labels, gt_valid)."""
    images = rng.uniform(0.0, 255.0, (batch, 3, height, width)).astype(np.float32)
    image_sizes = np.tile(np.array([height, width], np.int32), (batch, 1))
    gt_boxes = np.zeros((batch, max_boxes, 4), np.float32)
    gt_labels = np.zeros((batch, max_boxes), np.int32)
    gt_valid = np.zeros((batch, max_boxes), bool)
    wh = rng.uniform(0.05, 0.5, (batch, boxes, 2))
    centre = wh / 2 + rng.uniform(0.0, 1.0, (batch, boxes, 2)) * (1.0 - wh)
    gt_boxes[:, :boxes] = np.concatenate([centre, wh], axis=-1)
    gt_labels[:, :boxes] = rng.integers(0, num_classes, (batch, boxes))
    gt_valid[:, :boxes] = True
    return images, image_sizes, gt_boxes, gt_labels, gt_valid


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-classes", type=int, default=6)
    parser.add_argument("--min-size", type=int, default=256, help="smallest image height/width")
    parser.add_argument("--max-size", type=int, default=320, help="largest image height/width")
    parser.add_argument("--max-objects", type=int, default=4)
    args = parser.parse_args(argv)
    generate_synthetic_coco(args.root, args.num_train, args.num_val, (args.min_size, args.max_size),
                            args.num_classes, args.seed, args.max_objects)
    print(f"wrote {args.num_train} train / {args.num_val} val images to {args.root}")


if __name__ == "__main__":
    main()
