"""Box conversions and the sigmoid inverse used by DETR-style box refinement."""
from mindspore import ops


def inverse_sigmoid(x, eps=1e-3):
    """log(x / (1 - x)) with both terms clamped at ``eps`` (detrex convention, one log of a ratio)."""
    x = ops.clamp(x, 0.0, 1.0)
    return ops.log(ops.clamp(x, min=eps) / ops.clamp(1.0 - x, min=eps))


def box_cxcywh_to_xyxy(boxes):
    cx, cy, w, h = ops.unbind(boxes, -1)
    return ops.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)


def box_xyxy_to_cxcywh(boxes):
    x0, y0, x1, y1 = ops.unbind(boxes, -1)
    return ops.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1)


def pairwise_generalized_box_iou(boxes1, boxes2):
    """GIoU between every box of ``boxes1`` (..., N, 4) and ``boxes2`` (..., M, 4), xyxy.

    eps = 1e-6 in both denominators, as the official criterion.
    """
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    b1 = boxes1[..., :, None, :]
    b2 = boxes2[..., None, :, :]
    lt = ops.maximum(b1[..., :2], b2[..., :2])
    rb = ops.minimum(b1[..., 2:], b2[..., 2:])
    wh = ops.clamp(rb - lt, min=0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - inter
    iou = inter / (union + 1e-6)
    lt_c = ops.minimum(b1[..., :2], b2[..., :2])
    rb_c = ops.maximum(b1[..., 2:], b2[..., 2:])
    wh_c = ops.clamp(rb_c - lt_c, min=0.0)
    enclosing = wh_c[..., 0] * wh_c[..., 1]
    return iou - (enclosing - union) / (enclosing + 1e-6)
