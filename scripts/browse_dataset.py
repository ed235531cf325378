"""Look at what the data pipeline feeds the model: pictures of the batches' images on their
static canvases, with the ground-truth boxes and class names as the model receives them.

    python scripts/browse_dataset.py --config CFG --data ROOT [--split train|val] [--augment]
        [--epoch E] [--num N] [--out browse] [KEY=VALUE ...]

Why: a converted dataset with swapped coordinates, boxes in the wrong units or images of the
wrong orientation trains for days before the AP shows it; these pictures show it at once.

What is drawn: the batches of ``src.data.build_loader``, exactly as training (``--augment``: the
epoch's shuffle, random resize / crop / flip of ``data.*``, on ``data.canvases``) or evaluation
(no ``--augment``: the test resize, on ``data.eval_canvases``) builds them, the first ``--num``
images (filler slots of a last batch skipped). The padding beyond the image (``image_sizes``) is
hatched grey so that it is told apart from dark image content; the boxes come from ``gt_boxes``
(cx, cy, w, h over the image size) and the names from the json's categories of ``gt_labels``.
Each picture is OUT/SPLIT_eEPOCH_NNN_idID.png (lossless: 1 px lines keep their colour) under two
header lines: image id and box count, image size and canvas.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cv2  # noqa: E402
import numpy as np  # noqa: E402

import src  # noqa: F401,E402  (CPU start-up fix before the first convolution)
from src.cli import base_parser, load  # noqa: E402
from src.data import build_loader  # noqa: E402
from src.engine.trainer import augment_config, build_dataset, canvases  # noqa: E402
from src.visualize import draw_boxes  # noqa: E402

HATCH = (72, 72, 72), (110, 110, 110)  # padding grey and its diagonal lines


def picture(image_chw, image_hw, boxes_cxcywh, labels, valid, names, header):
    """The BGR picture of one canvas slot under the lines of ``header``."""
    h, w = (int(v) for v in image_hw)
    rgb = np.clip(image_chw.transpose(1, 2, 0), 0, 255).astype(np.uint8).copy()
    pad = np.ones(rgb.shape[:2], bool)
    pad[:h, :w] = False
    rows, cols = np.indices(rgb.shape[:2])
    rgb[pad] = HATCH[0]
    rgb[pad & ((rows + cols) % 16 < 2)] = HATCH[1]
    boxes = boxes_cxcywh[valid] * np.array([w, h, w, h], np.float32)
    xyxy = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
    out = draw_boxes(rgb, xyxy, labels[valid], [names[int(label)] for label in labels[valid]])
    bar = np.zeros((14 * len(header) + 4, out.shape[1], 3), np.uint8)
    for k, line in enumerate(header):
        cv2.putText(bar, line, (3, 12 + 14 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1)
    return np.concatenate([bar, out], 0)


def main(argv=None):
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("train", "val"), default="train")
    parser.add_argument("--augment", action="store_true", help="the training pipeline (random resize, crop, flip)")
    parser.add_argument("--epoch", type=int, default=0, help="whose shuffle and augmentation (with --augment)")
    parser.add_argument("--num", type=int, default=16, help="how many images")
    parser.add_argument("--out", default="browse", help="folder for the pictures")
    args = parser.parse_args(argv)
    cfg = load(args)
    dc = cfg.data
    dataset = build_dataset(dc, args.split)
    shapes = dc.canvases if args.augment else dc.eval_canvases
    loader = build_loader(dataset, cfg.train.batch_size if args.augment else cfg.train.eval_batch_size, args.augment,
                          canvases(shapes), augment_config(dc), 1, cfg.train.seed, args.epoch, 0, dc.max_boxes)
    os.makedirs(args.out, exist_ok=True)
    written = 0
    for batch in loader.create_tuple_iterator(num_epochs=1, output_numpy=True):
        images, sizes, boxes, labels, valid, image_ids, _ = batch
        for i, image_id in enumerate(image_ids):
            if image_id < 0 or written == args.num:
                continue
            count = int(valid[i].sum())
            header = (f"{args.split} image id {image_id}, {count} box{'' if count == 1 else 'es'}",
                      f"image {sizes[i][0]}x{sizes[i][1]} on canvas {images.shape[2]}x{images.shape[3]}")
            path = os.path.join(args.out, f"{args.split}_e{args.epoch}_{written:03d}_id{image_id}.png")
            cv2.imwrite(path, picture(images[i], sizes[i], boxes[i], labels[i], valid[i], dataset.class_names, header))
            written += 1
        if written == args.num:
            break
    print(f"browse_dataset: wrote {written} pictures of {args.split}{' (augmented)' if args.augment else ''} "
          f"to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
