"""The official Focus-DETR training / test augmentations as numpy + cv2 code.

Official recipe (noah-research ``detr_dataset_mapper.py`` over detrex ``coco_detr.py``):
training = RandomFlip(horizontal, p=0.5) then ResizeShortestEdge(short side chosen from
480..800 step 32, max_size 1333); test = ResizeShortestEdge(800, max_size 1333). detrex's
crop branch (with probability 0.5: flip, short side from (400, 500, 600) without max size,
RandomCrop "absolute_range" (384, 600), then the multi-scale resize) is commented out in the
noah mapper, so it is off by default here (``random_crop=True`` turns it on).

Each augmentation is split in two so that batches can be planned ahead: ``sample_*_plan``
draws every random choice from the image size alone and returns a plan (a tuple of steps),
and ``apply_plan`` executes it on pixels and boxes. The random draws follow detectron2's
order (flip, then size, then crop) but come from the ``np.random.Generator`` passed in.
"""
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

INTERPOLATIONS = ("cv2", "pil")


@dataclass(frozen=True)
class AugmentConfig:
    train_short_sides: tuple = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
    train_max_size: int = 1333
    flip_prob: float = 0.5
    random_crop: bool = False
    crop_short_sides: tuple = (400, 500, 600)
    crop_size: tuple = (384, 600)  # RandomCrop "absolute_range": side drawn from [min, max]
    test_short_side: int = 800
    test_max_size: int = 1333
    # "cv2": cv2.INTER_LINEAR (fast, no antialiasing). "pil": PIL BILINEAR on uint8, what
    # detectron2 runs; it antialiases when shrinking, so it differs from cv2 on downscales.
    interpolation: str = "pil"  # as config/base.yaml: the official resize

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if not 0 < self.crop_size[0] <= self.crop_size[1]:
            raise ValueError(f"crop_size must be (min, max) with 0 < min <= max, got {self.crop_size}")


def resize_shortest_edge_size(height, width, short_side, max_size=None):
    """detectron2 ``ResizeShortestEdge.get_output_shape``: (new_h, new_w)."""
    scale = short_side / min(height, width)
    if height < width:
        new_h, new_w = float(short_side), scale * width
    else:
        new_h, new_w = scale * height, float(short_side)
    if max_size is not None and max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


def _choice(rng, values):
    return int(values[rng.integers(len(values))])


def sample_train_plan(rng, height, width, cfg):
    """Random training plan for an image of the given size: a tuple of steps
    ("hflip",), ("resize", new_h, new_w) or ("crop", y0, x0, crop_h, crop_w)."""
    use_crop = cfg.random_crop and rng.random() < 0.5
    steps = []
    if rng.random() < cfg.flip_prob:
        steps.append(("hflip",))
    h, w = height, width
    if use_crop:
        h, w = resize_shortest_edge_size(h, w, _choice(rng, cfg.crop_short_sides))
        steps.append(("resize", h, w))
        low, high = cfg.crop_size
        crop_h = int(rng.integers(min(h, low), min(h, high) + 1))
        crop_w = int(rng.integers(min(w, low), min(w, high) + 1))
        y0, x0 = int(rng.integers(h - crop_h + 1)), int(rng.integers(w - crop_w + 1))
        steps.append(("crop", y0, x0, crop_h, crop_w))
        h, w = crop_h, crop_w
    steps.append(("resize", *resize_shortest_edge_size(h, w, _choice(rng, cfg.train_short_sides),
                                                       cfg.train_max_size)))
    return tuple(steps)


def eval_plan(height, width, cfg):
    return (("resize", *resize_shortest_edge_size(height, width, cfg.test_short_side, cfg.test_max_size)),)


def plan_output_size(height, width, plan):
    """(h, w) of the image after ``plan``."""
    for step in plan:
        if step[0] == "resize":
            height, width = step[1], step[2]
        elif step[0] == "crop":
            height, width = step[3], step[4]
    return height, width


def resize_image(image, new_h, new_w, interpolation="pil"):
    if image.shape[:2] == (new_h, new_w):
        return image
    if interpolation == "pil":
        return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def apply_plan(image, boxes, plan, interpolation="pil"):
    """Run ``plan`` on a uint8 (H, W, 3) image and its (N, 4) xyxy pixel boxes.

    Boxes are clipped to the output image and those left with width or height <= 1e-5
    are removed (detectron2 ``filter_empty_instances``). Returns (image, boxes float32, keep)
    where ``keep`` is the (N,) bool mask of the input boxes that survived.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    for step in plan:
        h, w = image.shape[:2]
        if step[0] == "hflip":
            image = image[:, ::-1]
            boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1)
        elif step[0] == "resize":
            new_h, new_w = step[1], step[2]
            image = resize_image(np.ascontiguousarray(image), new_h, new_w, interpolation)
            boxes = boxes * np.array([new_w / w, new_h / h, new_w / w, new_h / h])
        elif step[0] == "crop":
            y0, x0, crop_h, crop_w = step[1:]
            image = image[y0:y0 + crop_h, x0:x0 + crop_w]
            boxes = boxes - np.array([x0, y0, x0, y0])
        else:
            raise ValueError(f"unknown augmentation step {step!r}")
    h, w = image.shape[:2]
    boxes = np.clip(boxes, 0.0, np.array([w, h, w, h], np.float64))
    keep = ((boxes[:, 2] - boxes[:, 0]) > 1e-5) & ((boxes[:, 3] - boxes[:, 1]) > 1e-5)
    return np.ascontiguousarray(image), boxes[keep].astype(np.float32), keep
