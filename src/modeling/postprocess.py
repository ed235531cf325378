"""Detections from the last decoder layer (official ``inference`` + detectron2 ``detector_postprocess``)."""
import mindspore as ms
from mindspore import nn, ops

from ..layers.box_ops import box_cxcywh_to_xyxy
from ..layers.token_ops import gather_rows


class PostProcess(nn.Cell):
    """Top-``num_select`` of the sigmoid scores over queries x classes; boxes to xyxy pixels of
    the original image, clipped. The official code then drops empty boxes, which changes the
    count; here every image keeps ``num_select`` rows and ``keep`` marks the non-empty ones.

    logits (B,Q,C), boxes (B,Q,4) cxcywh relative to the input canvas/image, image_sizes and
    orig_sizes (B,2) [h,w]. Returns scores, labels, boxes (B,K,4), keep (B,K) and the flattened
    indices query*C+class (B,K) of the top-k.
    """

    def __init__(self, num_select=300):
        super().__init__()
        self.num_select = num_select

    def construct(self, logits, boxes, image_sizes, orig_sizes):
        bsz, _, num_classes = logits.shape
        prob = ops.sigmoid(logits).reshape(bsz, -1)
        scores, idx = ops.topk(prob, self.num_select, dim=1)
        query = ops.floor_divide(idx, num_classes)
        labels = idx - query * num_classes
        xyxy = box_cxcywh_to_xyxy(gather_rows(boxes, query))
        in_h = image_sizes[:, 0:1].astype(ms.float32)
        in_w = image_sizes[:, 1:2].astype(ms.float32)
        out_h = orig_sizes[:, 0:1].astype(ms.float32)
        out_w = orig_sizes[:, 1:2].astype(ms.float32)
        x = xyxy[..., 0::2] * in_w[..., None] * (out_w / in_w)[..., None]
        y = xyxy[..., 1::2] * in_h[..., None] * (out_h / in_h)[..., None]
        x = ops.minimum(ops.maximum(x, 0.0), out_w[..., None])
        y = ops.minimum(ops.maximum(y, 0.0), out_h[..., None])
        xyxy = ops.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), -1)
        keep = ops.logical_and(xyxy[..., 2] > xyxy[..., 0], xyxy[..., 3] > xyxy[..., 1])
        return scores, labels, xyxy, keep, idx
