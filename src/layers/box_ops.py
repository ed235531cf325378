"""Box conversions and the sigmoid inverse used by DETR-style box refinement."""
from mindspore import ops


def inverse_sigmoid(x, eps=1e-3):
    """log(x / (1 - x)) with both terms clamped at ``eps`` (detrex convention, one log of a ratio).
    Both bounds given: MindSpore 2.10's ONNX exporter takes no clamp without a maximum."""
    x = ops.clamp(x, 0.0, 1.0)
    return ops.log(ops.clamp(x, eps, 1.0) / ops.clamp(1.0 - x, eps, 1.0))


def _coordinates(boxes):
    """The four (...) coordinate slices of (..., 4) boxes (slices, not ``ops.unbind``: MindSpore
    2.10's ONNX exporter has no ``Unstack``)."""
    return boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]


def box_cxcywh_to_xyxy(boxes):
    cx, cy, w, h = _coordinates(boxes)
    return ops.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), -1)


def box_xyxy_to_cxcywh(boxes):
    x0, y0, x1, y1 = _coordinates(boxes)
    return ops.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), -1)


def box_area(boxes):
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def generalized_box_iou(boxes1, boxes2):
    """GIoU of ``boxes1`` and ``boxes2`` (..., 4) xyxy, element by element (shapes broadcast).

    eps = 1e-6 in both denominators, as the official criterion.
    """
    wh = ops.clamp(ops.minimum(boxes1[..., 2:], boxes2[..., 2:]) - ops.maximum(boxes1[..., :2], boxes2[..., :2]),
                   min=0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1) + box_area(boxes2) - inter
    iou = inter / (union + 1e-6)
    wh_c = ops.clamp(ops.maximum(boxes1[..., 2:], boxes2[..., 2:]) - ops.minimum(boxes1[..., :2], boxes2[..., :2]),
                     min=0.0)
    enclosing = wh_c[..., 0] * wh_c[..., 1]
    return iou - (enclosing - union) / (enclosing + 1e-6)


def pairwise_generalized_box_iou(boxes1, boxes2):
    """GIoU between every box of ``boxes1`` (..., N, 4) and ``boxes2`` (..., M, 4): (..., N, M)."""
    return generalized_box_iou(boxes1[..., :, None, :], boxes2[..., None, :, :])
