"""Foreground-supervision targets (the reference's ``GenTargets``) and the ``select_loss``
focal loss (its ``compute_cls_loss``) on the raw token scores of the foreground selector."""
import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..layers.box_ops import box_cxcywh_to_xyxy

STRIDES = (8, 16, 32, 64)
LIMIT_RANGES = ((-1, 64), (64, 128), (128, 256), (256, 999999))


@ms.constexpr
def sample_points(canvas_hw, strides, limit_ranges):
    """Pixel position of every token (S,2) as (x,y), and its level's (lo, hi] range (S,2).

    Level maps cover the padded canvas (h_l = ceil(H/s_l), like the backbone/neck) and token
    (i,j) sits at (j*s + s//2, i*s + s//2) with the nominal stride s, as the reference does.
    """
    points, ranges = [], []
    for stride, (lo, hi) in zip(strides, limit_ranges):
        h, w = math.ceil(canvas_hw[0] / stride), math.ceil(canvas_hw[1] / stride)
        ys, xs = np.meshgrid(np.arange(h) * stride, np.arange(w) * stride, indexing="ij")
        points.append(np.stack([xs.reshape(-1), ys.reshape(-1)], -1) + stride // 2)
        ranges.append(np.tile(np.array([[lo, hi]]), (h * w, 1)))
    return Tensor(np.concatenate(points).astype(np.float32)), Tensor(np.concatenate(ranges).astype(np.float32))


class ForegroundTargets(nn.Cell):
    """(B,S) bool: a token is foreground when it lies strictly inside a valid GT box whose
    largest (l,t,r,b) offset falls in the token level's (lo, hi] range.

    Inputs: ``gt_boxes`` (B,M,4) cxcywh normalized by each image's own size, ``gt_valid`` (B,M)
    bool, ``image_sizes`` (B,2) [h,w], ``canvas_hw`` (H,W) python ints of the padded batch.
    Images sit at the top-left of the canvas, so image pixels are canvas pixels.
    """

    def __init__(self, strides=STRIDES, limit_ranges=LIMIT_RANGES):
        super().__init__()
        self.strides = tuple(strides)
        self.limit_ranges = tuple(tuple(r) for r in limit_ranges)

    def construct(self, gt_boxes, gt_valid, image_sizes, canvas_hw):
        points, ranges = sample_points(canvas_hw, self.strides, self.limit_ranges)
        sizes = image_sizes.astype(ms.float32)
        scale = ops.stack([sizes[:, 1], sizes[:, 0], sizes[:, 1], sizes[:, 0]], -1)[:, None, :]
        boxes = box_cxcywh_to_xyxy(gt_boxes * scale)  # (B,M,4) pixels, float32 as the reference
        x = points[None, :, None, 0]
        y = points[None, :, None, 1]
        offsets = ops.stack([x - boxes[:, None, :, 0], y - boxes[:, None, :, 1],
                             boxes[:, None, :, 2] - x, boxes[:, None, :, 3] - y], -1)  # (B,S,M,4)
        off_min = ops.amin(offsets, -1)
        off_max = ops.amax(offsets, -1)
        inside = off_min > 0
        in_level = ops.logical_and(off_max > ranges[None, :, None, 0], off_max <= ranges[None, :, None, 1])
        positive = ops.logical_and(ops.logical_and(inside, in_level), gt_valid[:, None, :])
        return ops.any(positive, -1)


def foreground_focal_loss(logits, targets, in_extent, alpha=0.25, gamma=2.0):
    """``select_loss`` from (B,S) raw logits and (B,S) 0/1 float targets.

    The reference takes log(p_t) in probability space (no BCE-with-logits, no clamp), sums
    over every token of its padded batch (padding included; ``in_extent`` (B,S) bool drops the
    tokens a larger static canvas adds), divides each image by its positive count (min 1) and
    averages over the batch.
    """
    # outside the extent the logits are of no token: a saturated one would give log(0) and a NaN gradient
    prob = ops.sigmoid(ops.where(in_extent, logits, 0.0))
    p_t = prob * targets + (1.0 - prob) * (1.0 - targets)
    weight = alpha * targets + (1.0 - alpha) * (1.0 - targets)
    loss = ops.where(in_extent, -weight * ((1.0 - p_t) ** gamma) * ops.log(p_t), 0.0)
    num_pos = ops.clamp(targets.sum(-1), min=1.0)
    return (loss.sum(-1) / num_pos).mean()
