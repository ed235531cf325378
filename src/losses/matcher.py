"""Hungarian matcher (detrex ``HungarianMatcher`` with the focal class cost).

The cost matrix is built with MindSpore ops on static shapes; the assignment itself is one of
the backends of ``assignment.build_assignment`` (``kernels.matcher``), so the whole criterion
stays one graph that ``mindspore.value_and_grad`` can differentiate in GRAPH_MODE on every
device. The cost enters the assignment through ``stop_gradient`` and its outputs are integer
indices, so no gradient flows through it, as under the reference's ``torch.no_grad``.
"""
import mindspore as ms
import numpy as np
from mindspore import nn, ops

from ..layers.box_ops import box_cxcywh_to_xyxy, pairwise_generalized_box_iou
from .assignment import build_assignment

# a non-finite forward (float16 overflow, divergence) would make every solver fail; any
# assignment will do then, because the loss is non-finite too and the train step is skipped
# and counted. Finite costs are O(10), far inside this bound.
COST_BOUND = 1e8


def scipy_order(matched_query):
    """(src, tgt) index arrays of one image in the reference's order (scipy sorts the rows,
    i.e. the query indices) from a row of the (M,) matched-query array."""
    tgt = np.nonzero(matched_query >= 0)[0]
    src = matched_query[tgt]
    order = np.argsort(src, kind="stable")
    return src[order].astype(np.int64), tgt[order].astype(np.int64)


class HungarianMatcher(nn.Cell):
    """Inputs share their leading batch dims ``...`` (e.g. (layers, B)): ``logits`` (...,Q,C),
    ``boxes`` (...,Q,4) cxcywh, ``gt_boxes`` (...,M,4) cxcywh, ``gt_labels`` (...,M) int32 in
    [0,C) (padded entries must already hold a valid class), ``gt_valid`` (...,M) bool with the
    valid entries first. Returns the matched query of every GT, (...,M) int32, -1 = none.
    ``assignment``: a backend of ``assignment.build_assignment`` (default: its 'auto').
    """

    def __init__(self, cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, alpha=0.25, gamma=2.0, assignment=None):
        super().__init__()
        self.assignment = build_assignment() if assignment is None else assignment
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.alpha = alpha
        self.gamma = gamma

    def cost_matrix(self, logits, boxes, gt_boxes, gt_labels):
        """(...,Q,M) matching cost, same formula and operation order as the reference."""
        prob = ops.sigmoid(logits)
        neg = (1 - self.alpha) * (prob ** self.gamma) * (-ops.log(1 - prob + 1e-8))
        pos = self.alpha * ((1 - prob) ** self.gamma) * (-ops.log(prob + 1e-8))
        num_queries = logits.shape[-2]
        label_index = ops.broadcast_to(gt_labels[..., None, :],
                                       gt_labels.shape[:-1] + (num_queries, gt_labels.shape[-1]))
        cost_class = ops.gather_elements(pos, -1, label_index) - ops.gather_elements(neg, -1, label_index)
        cost_bbox = ops.abs(boxes[..., :, None, :] - gt_boxes[..., None, :, :]).sum(-1)
        cost_giou = -pairwise_generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(gt_boxes))
        return self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou

    def construct(self, logits, boxes, gt_boxes, gt_labels, gt_valid):
        cost = ops.stop_gradient(self.cost_matrix(logits, boxes, gt_boxes, gt_labels))
        cost = ops.clamp(ops.where(ops.isnan(cost), COST_BOUND, cost), -COST_BOUND, COST_BOUND)
        lead = cost.shape[:-2]
        flat_cost = cost.reshape((-1,) + cost.shape[-2:])
        num_valid = gt_valid.astype(ms.int32).sum(-1).reshape(-1)
        return self.assignment(flat_cost, num_valid).reshape(lead + (cost.shape[-1],))
