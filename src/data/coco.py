"""COCO instances json + image folder -> validated per-image records.

Follows detectron2's ``load_coco_json`` / ``get_detection_dataset_dicts`` for what training
sees: images in ascending id order, json category ids mapped to contiguous labels in sorted
id order, crowd annotations dropped, and (``filter_empty=True``, the official training
default) images left without annotations dropped; evaluation passes ``filter_empty=False``.

Structural errors (unparseable json, missing keys, wrong types, dangling ids) always raise
``DatasetError`` naming the file and the field. Bad boxes and bad images follow a policy:
``"error"`` raises, ``"skip"`` logs a warning and counts the item in ``dataset.skipped``.
"""
import json
import logging
import math
import os
import threading
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)

POLICIES = ("error", "skip")


def decode_image(path):
    """RGB uint8 (H, W, 3) of the image file ``path``, or None when it cannot be decoded (raises
    ``OSError`` when it cannot be read). ``cv2.imdecode`` rejects truncated JPEG/PNG data, unlike
    ``cv2.imread``, which fills a truncated JPEG with grey; OpenCV applies the EXIF orientation,
    as detectron2's reader does."""
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class DatasetError(ValueError):
    """A dataset file is malformed or unreadable; the message names the file and the field."""


@dataclass
class ImageRecord:
    image_id: int
    file_name: str  # full path
    height: int  # as declared in the json (checked against the decoded image)
    width: int
    boxes: np.ndarray  # (N, 4) float32 xyxy in pixels, inside the image
    labels: np.ndarray  # (N,) int32 contiguous labels 0..C-1


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read annotation file: {e}") from None
    except ValueError as e:  # JSONDecodeError and bad encodings
        raise DatasetError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: top level must be a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DatasetError(f"{path}: missing top-level key '{key}'")
        if not isinstance(data[key], list):
            raise DatasetError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
    return data


def _field(path, where, entry, key, kind):
    """``entry[key]`` checked to be an int, a str or a list of 4 finite numbers (``kind``)."""
    if not isinstance(entry, dict):
        raise DatasetError(f"{path}: {where} must be an object, got {type(entry).__name__}")
    if key not in entry:
        raise DatasetError(f"{path}: {where} has no field '{key}'")
    value = entry[key]
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "str":
        ok = isinstance(value, str)
    else:  # bbox
        ok = (isinstance(value, list) and len(value) == 4
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))
    if not ok:
        expected = {"int": "an integer", "str": "a string", "box": "a list of 4 finite numbers"}[kind]
        raise DatasetError(f"{path}: {where}.{key} must be {expected}, got {value!r}")
    return value


class CocoDetection:
    """Records of one COCO-format split.

    Args:
        ann_file: instances json.
        image_dir: folder that ``file_name`` entries are relative to.
        filter_empty: drop images without (non-crowd, valid) annotations; True is the official
            training default, evaluation must pass False.
        bad_box: box with non-positive size, or reaching outside the image by more than
            ``box_tolerance`` pixels: "skip" (default) or "error". Overshoot up to the
            tolerance is clipped silently, as detectron2 clips every box.
        bad_image: missing file (checked here), or undecodable / wrong-size file (found when
            the loader reads it): "skip" (default) or "error".
    """

    def __init__(self, ann_file, image_dir, filter_empty=True, bad_box="skip", bad_image="skip",
                 box_tolerance=1.0):
        for name, policy in (("bad_box", bad_box), ("bad_image", bad_image)):
            if policy not in POLICIES:
                raise ValueError(f"{name} must be one of {POLICIES}, got {policy!r}")
        self.ann_file = ann_file
        self.image_dir = image_dir
        self.bad_box = bad_box
        self.bad_image = bad_image
        self.box_tolerance = float(box_tolerance)
        self.skipped = {"crowd_annotations": 0, "bad_boxes": 0, "empty_images": 0,
                        "missing_images": 0, "unreadable_images": 0}
        self._lock = threading.Lock()  # loader worker threads count unreadable images

        data = _read_json(ann_file)
        self._load_categories(data["categories"])
        images = self._load_images(data["images"])
        annotations = self._load_annotations(data["annotations"], images)
        self.records = []
        for image_id in sorted(images):
            entry = images[image_id]
            boxes, labels = annotations.get(image_id, ([], []))
            if filter_empty and not boxes:
                self.skipped["empty_images"] += 1
                continue
            path = os.path.join(image_dir, entry["file_name"])
            if not os.path.isfile(path):
                self._bad_image(f"{path}: image file not found (images id={image_id}, field 'file_name')",
                                "missing_images")
                continue
            self.records.append(ImageRecord(
                image_id, path, entry["height"], entry["width"],
                np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int32)))
        if any(self.skipped.values()):
            log.warning("%s: %d images kept; skipped %s", ann_file, len(self.records), self.skipped)

    def _load_categories(self, categories):
        names = {}
        for i, cat in enumerate(categories):
            cat_id = _field(self.ann_file, f"categories[{i}]", cat, "id", "int")
            if cat_id in names:
                raise DatasetError(f"{self.ann_file}: categories[{i}].id {cat_id} is duplicated")
            names[cat_id] = cat.get("name", str(cat_id))
        if not names:
            raise DatasetError(f"{self.ann_file}: 'categories' is empty")
        self.cat_ids = sorted(names)
        self.class_names = [names[c] for c in self.cat_ids]
        self.cat_id_to_label = {c: i for i, c in enumerate(self.cat_ids)}

    def _load_images(self, entries):
        images = {}
        for i, entry in enumerate(entries):
            where = f"images[{i}]"
            image_id = _field(self.ann_file, where, entry, "id", "int")
            _field(self.ann_file, where, entry, "file_name", "str")
            for key in ("height", "width"):
                if _field(self.ann_file, where, entry, key, "int") <= 0:
                    raise DatasetError(f"{self.ann_file}: {where}.{key} must be positive, got {entry[key]}")
            if image_id in images:
                raise DatasetError(f"{self.ann_file}: {where}.id {image_id} is duplicated")
            images[image_id] = entry
        return images

    def _load_annotations(self, entries, images):
        """image id -> (xyxy boxes, labels) of the kept annotations, in json order."""
        per_image = {}
        for i, ann in enumerate(entries):
            ann_id = _field(self.ann_file, f"annotations[{i}]", ann, "id", "int")
            where = f"annotations[{i}] (id={ann_id})"
            image_id = _field(self.ann_file, where, ann, "image_id", "int")
            cat_id = _field(self.ann_file, where, ann, "category_id", "int")
            bbox = _field(self.ann_file, where, ann, "bbox", "box")
            if image_id not in images:
                raise DatasetError(f"{self.ann_file}: {where}.image_id {image_id} is not in 'images'")
            if cat_id not in self.cat_id_to_label:
                raise DatasetError(f"{self.ann_file}: {where}.category_id {cat_id} is not in 'categories'")
            if ann.get("iscrowd", 0):
                self.skipped["crowd_annotations"] += 1
                continue
            box = self._checked_box(bbox, images[image_id], where)
            if box is None:
                continue
            boxes, labels = per_image.setdefault(image_id, ([], []))
            boxes.append(box)
            labels.append(self.cat_id_to_label[cat_id])
        return per_image

    def _checked_box(self, bbox, image, where):
        """xywh -> xyxy clipped to the image, or None for a skipped bad box."""
        x, y, w, h = (float(v) for v in bbox)
        width, height, tol = image["width"], image["height"], self.box_tolerance
        if not (w > 0 and h > 0):
            problem = "has non-positive width/height"
        elif x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
            problem = f"reaches outside the {width}x{height} image by more than {tol} px"
        else:
            box = [min(max(x, 0.0), width), min(max(y, 0.0), height),
                   min(x + w, float(width)), min(y + h, float(height))]
            if box[2] > box[0] and box[3] > box[1]:
                return box
            problem = "is empty once clipped to the image"
        message = f"{self.ann_file}: {where}.bbox {bbox} {problem} (image '{image['file_name']}')"
        if self.bad_box == "error":
            raise DatasetError(message)
        log.warning("skipping box: %s", message)
        self.skipped["bad_boxes"] += 1
        return None

    def _bad_image(self, message, counter):
        if self.bad_image == "error":
            raise DatasetError(message)
        log.warning("skipping image: %s", message)
        with self._lock:
            self.skipped[counter] += 1

    def __getstate__(self):  # locks do not pickle (multiprocessing loader workers)
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        return self.records[index]

    @property
    def num_classes(self):
        return len(self.cat_ids)

    def contiguous_to_cat_id(self, labels):
        """Contiguous label(s) 0..C-1 -> json category id(s) (int or integer array)."""
        ids = np.asarray(self.cat_ids, np.int64)[labels]
        return int(ids) if np.ndim(ids) == 0 else ids

    def read_image(self, index):
        """RGB uint8 (H, W, 3) image of record ``index``.

        Returns None under ``bad_image="skip"`` when the file cannot be read or decoded (corrupt or
        truncated, see ``decode_image``) or its size differs from the json, as detectron2's
        ``check_image_size`` requires.
        """
        record = self.records[index]
        try:
            image = decode_image(record.file_name)
        except OSError as e:
            self._bad_image(f"{record.file_name}: cannot read image file: {e}", "unreadable_images")
            return None
        if image is None:
            self._bad_image(f"{record.file_name}: cannot decode image (corrupt or truncated file)",
                            "unreadable_images")
            return None
        if image.shape[:2] != (record.height, record.width):
            self._bad_image(
                f"{record.file_name}: decoded size {image.shape[1]}x{image.shape[0]} differs from the "
                f"json width x height {record.width}x{record.height} (image id {record.image_id})",
                "unreadable_images")
            return None
        return image
