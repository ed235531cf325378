"""COCO evaluation with pycocotools: detections in original image coordinates with the
dataset's own category ids."""
import contextlib
import io
import json
import os

import numpy as np
from mindspore import Tensor

from .logger import Progress

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def predict(net, loader, logger=None, log_period=50, batch_size=1):
    """Run ``net`` (an ``InferenceNet``: the detections export and the demo give) over ``loader``;
    returns COCO result dicts with contiguous labels. Logs progress (batches, images/s, ETA)
    every ``log_period`` batches and after the first."""
    net.set_train(False)
    results = []
    total = loader.get_dataset_size()
    progress = Progress(0, total, batch_size)
    for step, batch in enumerate(loader.create_tuple_iterator(num_epochs=1, output_numpy=True)):
        images, sizes, _, _, _, image_ids, orig_sizes = batch
        scores, labels, boxes, keep = (d.asnumpy() for d in net(Tensor(images), Tensor(sizes), Tensor(orig_sizes)))
        for b, image_id in enumerate(image_ids):
            if image_id < 0:  # filler slot of the last batch
                continue
            for s, label, box in zip(scores[b][keep[b]], labels[b][keep[b]], boxes[b][keep[b]]):
                results.append({"image_id": int(image_id), "label": int(label), "score": float(s),
                                "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]})
        if logger and ((step + 1) % log_period == 0 or step == 0 or step + 1 == total):
            speed, eta = progress.report(step)
            logger.info(f"eval: {step + 1}/{total} batches  {speed:.2f} img/s  eta: {eta}")
    return results


RESULT_COLUMNS = 7  # image_id, label, score, x, y, w, h


def results_to_rows(results):
    """``predict`` results as a (N, 7) float32 array (image ids < 2**24 are exact)."""
    return np.array([[r["image_id"], r["label"], r["score"], *r["bbox"]] for r in results],
                    np.float32).reshape(-1, RESULT_COLUMNS)


def rows_to_results(rows):
    return [{"image_id": int(row[0]), "label": int(row[1]), "score": float(row[2]),
             "bbox": [float(v) for v in row[3:7]]} for row in rows]


def coco_evaluate(dataset, results, output_dir=None):
    """COCO box AP of ``results`` (from ``predict``) against ``dataset``'s json. Returns
    ({name: value}, the printed summary table, per-class rows: one {"category_id", "name", "AP",
    "AP50"} per category of the json, AP None for a category without ground truth)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    detections = [dict(r, category_id=int(dataset.contiguous_to_cat_id(r["label"]))) for r in results]
    for d in detections:
        del d["label"]
    if output_dir:
        with open(os.path.join(output_dir, "coco_instances_results.json"), "w") as f:
            json.dump(detections, f)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(dataset.ann_file)
    if not detections:
        empty = [dict(category_id=c, name=n, **dict.fromkeys(("AP", "AP50"), 0.0 if gt.getAnnIds(catIds=[c]) else None))
                 for c, n in zip(dataset.cat_ids, dataset.class_names)]
        return {k: 0.0 for k in STAT_NAMES}, "no detections", empty
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        dt = gt.loadRes(detections)
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.params.imgIds = sorted(r.image_id for r in dataset.records)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {k: float(v) for k, v in zip(STAT_NAMES, evaluator.stats[:6])}
    return stats, summary.getvalue(), per_class_ap(evaluator, dict(zip(dataset.cat_ids, dataset.class_names)))


def per_class_ap(evaluator, names):
    """AP and AP50 of every category from an accumulated ``COCOeval``: its precision array
    (IoU thresholds x recall points x categories x areas x max detections; -1 where a category
    has no ground truth) at area 'all' and 100 detections, averaged as ``summarize`` averages
    the overall AP -- so the mean over the categories with ground truth is the overall AP.
    ``names``: {category id: name}."""
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    at_50 = int(np.argmin(np.abs(evaluator.params.iouThrs - 0.5)))
    rows = []
    for k, cat_id in enumerate(evaluator.params.catIds):
        values = {}
        for key, p in (("AP", precision[:, :, k]), ("AP50", precision[at_50, :, k])):
            valid = p[p > -1]
            values[key] = float(valid.mean()) if valid.size else None
        rows.append(dict(category_id=int(cat_id), name=names[cat_id], **values))
    return rows


def format_per_class(rows):
    """The per-class rows as a table (percent; '-' for a category without ground truth)."""
    width = max([8] + [len(r["name"]) for r in rows])
    lines = [f"| {'category':<{width}s} |     AP |   AP50 |", f"|{'-' * (width + 2)}|--------|--------|"]
    for r in rows:
        cells = [f"{100 * r[k]:6.2f}" if r[k] is not None else f"{'-':>6s}" for k in ("AP", "AP50")]
        lines.append(f"| {r['name']:<{width}s} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def format_stats(stats):
    header = " | ".join(f"{k:>6s}" for k in STAT_NAMES)
    values = " | ".join(f"{100 * stats[k]:6.2f}" for k in STAT_NAMES)
    return f"| {header} |\n| {values} |"
