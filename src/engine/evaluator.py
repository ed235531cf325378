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
    ({name: value}, the printed summary table)."""
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
        return {k: 0.0 for k in STAT_NAMES}, "no detections"
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        dt = gt.loadRes(detections)
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.params.imgIds = sorted(r.image_id for r in dataset.records)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {k: float(v) for k, v in zip(STAT_NAMES, evaluator.stats[:6])}
    return stats, summary.getvalue()


def format_stats(stats):
    header = " | ".join(f"{k:>6s}" for k in STAT_NAMES)
    values = " | ".join(f"{100 * stats[k]:6.2f}" for k in STAT_NAMES)
    return f"| {header} |\n| {values} |"
