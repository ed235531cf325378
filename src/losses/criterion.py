"""The Focus-DETR training criterion (reference: ``FOCUS_DETRCriterion`` = detrex ``SetCriterion``
+ two-stage ``_enc`` losses + DINO denoising losses + the ``select_loss`` foreground supervision).

One ``nn.Cell`` on static shapes, usable in GRAPH_MODE under ``mindspore.value_and_grad``: the
Hungarian assignment runs inside the graph (``matcher.HungarianMatcher``), padded GT entries
are masked instead of sliced away, and every decoder layer plus the encoder output is matched
and scored in one batched pass.

Losses follow the reference exactly:

* ``loss_class``: sigmoid focal loss (alpha .25, gamma 2) on one-hot targets (unmatched queries
  all-zero), summed over queries, classes and images, / num_boxes (the reference's
  ``mean over queries * num_queries``);
* ``loss_bbox`` = sum |pred - gt| and ``loss_giou`` = sum (1 - GIoU) over matched pairs,
  / num_boxes;
* denoising: fixed matching (positive slot of GT t in group g is slot g*single_padding + t),
  negatives and unused slots are background, normalizer num_boxes * dn_num; the reference's
  extra-slot-free layout is recovered with ``slot_in_pad``;
* ``select_loss``: see ``foreground_targets``;
* num_boxes = number of valid GT in the batch (optionally all-reduced and divided by the world
  size, as detrex does in data-parallel training), clamped >= 1.
"""
import mindspore as ms
from mindspore import nn, ops

from ..layers.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from ..layers.compile_time import arange_along
from ..layers.portable_backward import concat
from .focal import sigmoid_focal_loss
from .foreground_targets import ForegroundTargets, foreground_focal_loss
from .matcher import HungarianMatcher

_TERMS = ("loss_class", "loss_bbox", "loss_giou")
_TERM_WEIGHTS = (1.0, 5.0, 2.0)
SELECT_LOSS_WEIGHT = 1.5


def loss_keys(num_layers=6):
    """Key order of the returned losses (the reference's loss-dict order): final layer,
    ``select_loss``, aux layers ``_0``..``_{L-2}``, ``_enc``, ``_dn``, ``_dn_0``..``_dn_{L-2}``."""
    keys = list(_TERMS) + ["select_loss"]
    suffixes = tuple(f"_{i}" for i in range(num_layers - 1)) + ("_enc", "_dn") + tuple(
        f"_dn_{i}" for i in range(num_layers - 1))
    for suffix in suffixes:
        keys += [t + suffix for t in _TERMS]
    return tuple(keys)


def loss_weights(num_layers=6):
    """Weights aligned with ``loss_keys`` (class 1, bbox 5, giou 2, select_loss 1.5)."""
    per_term = dict(zip(_TERMS, _TERM_WEIGHTS))
    return tuple(SELECT_LOSS_WEIGHT if k == "select_loss" else per_term["_".join(k.split("_")[:2])]
                 for k in loss_keys(num_layers))


class FocusDETRCriterion(nn.Cell):
    """``construct(outputs, gt_boxes, gt_labels, gt_valid, image_sizes, canvas_hw, dn_targets)``

    * ``outputs``: the model's tuple (pred_logits (L,B,Q,C), pred_boxes (L,B,Q,4), dn_logits
      (L,B,P,C), dn_boxes (L,B,P,4), enc_logits (B,Q,C), enc_boxes (B,Q,4), fg_logits (B,S,1), token_in_extent (B,S));
      layer L-1 is the final one.
    * ``gt_boxes`` (B,M,4) cxcywh normalized by each image's size, ``gt_labels`` (B,M) int32,
      ``gt_valid`` (B,M) bool, valid entries first; padded entries may hold anything.
    * ``image_sizes`` (B,2) [h,w]; ``canvas_hw`` (H,W) python ints of the padded batch.
    * ``dn_targets``: ``DenoisingBatch.criterion_inputs()`` as tensors: positive_gt (B,P) int32,
      slot_in_pad (P,) bool, dn_num () float32.

    Returns ``(total, losses, matches, fg_targets)``: ``total`` = plain sum of the weighted
    losses; ``losses`` = the WEIGHTED losses in ``loss_keys(L)`` order (what the reference model
    returns; divide by ``loss_weights(L)`` for the criterion's raw values); ``matches`` (L+1,B,M)
    int32 = matched query of every GT (-1 = none) for decoder layers 0..L-1 then the encoder
    output (``matcher.scipy_order`` gives the reference's index order); ``fg_targets`` (B,S) int32.
    """

    def __init__(self, num_classes=80, num_layers=6, matcher=None, focal_alpha=0.25, focal_gamma=2.0,
                 fg_strides=(8, 16, 32, 64), fg_limit_ranges=((-1, 64), (64, 128), (128, 256), (256, 999999)),
                 num_boxes_all_reduce=False):
        super().__init__()
        self.num_classes = num_classes
        self.num_layers = num_layers
        self.weights = loss_weights(num_layers)
        self.matcher = HungarianMatcher() if matcher is None else matcher
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.foreground_targets = ForegroundTargets(fg_strides, fg_limit_ranges)
        self.num_boxes_all_reduce = num_boxes_all_reduce
        if num_boxes_all_reduce:
            from mindspore.communication import get_group_size
            self.all_reduce = ops.AllReduce()
            self.world_size = float(get_group_size())

    def num_boxes(self, gt_valid, gt_count=None):
        num = gt_valid.astype(ms.float32).sum() if gt_count is None else gt_count
        if self.num_boxes_all_reduce:
            num = self.all_reduce(num) / self.world_size
        return ops.stop_gradient(ops.clamp(num, min=1.0))

    def class_loss(self, logits, targets, counted):
        """Focal loss summed over everything but the leading layer axis -> (N,); ``counted``
        (broadcastable to logits) drops queries the reference does not have."""
        loss = sigmoid_focal_loss(logits, targets, self.focal_alpha, self.focal_gamma)
        return ops.where(counted, loss, 0.0).sum((1, 2, 3))

    def box_losses(self, pred, target, paired):
        """L1 and GIoU sums over the pairs where ``paired`` (N,B,K) -> two (N,) tensors."""
        l1 = ops.where(paired, ops.abs(pred - target).sum(-1), 0.0).sum((1, 2))
        giou = generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(target))
        return l1, ops.where(paired, 1.0 - giou, 0.0).sum((1, 2))

    def matched_losses(self, logits, boxes, gt_boxes, gt_labels, gt_valid, num_boxes):
        """Hungarian-matched losses of (N,B,Q,.) predictions -> ((N,) x3, matches (N,B,M))."""
        num_layers, num_queries = logits.shape[0], logits.shape[2]
        lead = (num_layers,) + gt_labels.shape
        matches = self.matcher(logits, boxes, ops.broadcast_to(gt_boxes[None], lead + (4,)),
                               ops.broadcast_to(gt_labels[None], lead), ops.broadcast_to(gt_valid[None], lead))
        matched = matches >= 0
        query = ops.maximum(matches, 0)
        # one-hot class target of every query: (N,B,Q,M) query==match times (B,M,C) one-hot labels
        hits = (query[:, :, None, :] == arange_along(num_queries, ms.int32, 2, 4))
        hits = ops.logical_and(hits, matched[:, :, None, :]).astype(ms.float32)
        label_onehot = ops.one_hot(gt_labels, self.num_classes, ops.ones((), ms.float32), ops.zeros((), ms.float32))
        targets = ops.matmul(hits.reshape(-1, num_queries, hits.shape[-1]),
                             ops.tile(label_onehot, (num_layers, 1, 1))).reshape(logits.shape)
        loss_class = self.class_loss(logits, targets, ops.ones((), ms.bool_)) / num_boxes
        pred = ops.gather_elements(boxes, 2, ops.tile(query[..., None], (1, 1, 1, 4)))
        loss_bbox, loss_giou = self.box_losses(pred, ops.broadcast_to(gt_boxes[None], pred.shape), matched)
        return (loss_class, loss_bbox / num_boxes, loss_giou / num_boxes), matches

    def denoising_losses(self, logits, boxes, gt_boxes, gt_labels, dn_targets, num_boxes):
        """Fixed-matching losses of the (L,B,P,.) denoising outputs -> (L,) x3."""
        positive_gt, slot_in_pad, dn_num = dn_targets
        positive = positive_gt >= 0
        gt_index = ops.maximum(positive_gt, 0)
        slot_labels = ops.gather_elements(gt_labels, 1, gt_index)
        targets = ops.one_hot(slot_labels, self.num_classes, ops.ones((), ms.float32), ops.zeros((), ms.float32))
        targets = targets * positive[..., None].astype(ms.float32)
        normalizer = num_boxes * ops.clamp(dn_num, min=1.0)  # dn_num = 0: no slot counts, losses are 0
        loss_class = self.class_loss(logits, ops.broadcast_to(targets[None], logits.shape),
                                     slot_in_pad[None, None, :, None]) / normalizer
        slot_boxes = ops.gather_elements(gt_boxes, 1, ops.tile(gt_index[..., None], (1, 1, 4)))
        loss_bbox, loss_giou = self.box_losses(boxes, ops.broadcast_to(slot_boxes[None], boxes.shape),
                                               ops.broadcast_to(positive[None], boxes.shape[:3]))
        return loss_class, loss_bbox / normalizer, loss_giou / normalizer

    def construct(self, outputs, gt_boxes, gt_labels, gt_valid, image_sizes, canvas_hw, dn_targets, gt_count=None):
        """``gt_count``: the GT count to normalize by instead of this batch's (None), for a batch
        that is one of the micro-batches of one step (src.engine.accumulation)."""
        pred_logits, pred_boxes, dn_logits, dn_boxes, enc_logits, enc_boxes, fg_logits, fg_in_extent = outputs
        # padded GT entries get a harmless class and box so no NaN/out-of-range value enters the graph
        gt_labels = ops.where(gt_valid, gt_labels.astype(ms.int32), 0)
        gt_boxes = ops.where(gt_valid[..., None], gt_boxes, 0.5)
        num_boxes = self.num_boxes(gt_valid, gt_count)

        fg_targets = self.foreground_targets(gt_boxes, gt_valid, image_sizes, canvas_hw)
        select_loss = foreground_focal_loss(fg_logits[..., 0], fg_targets.astype(ms.float32), fg_in_extent)

        all_logits = concat([pred_logits, enc_logits[None]], 0)
        all_boxes = concat([pred_boxes, enc_boxes[None]], 0)
        (cls, bbox, giou), matches = self.matched_losses(all_logits, all_boxes, gt_boxes, gt_labels, gt_valid,
                                                         num_boxes)
        dn_cls, dn_bbox, dn_giou = self.denoising_losses(dn_logits, dn_boxes, gt_boxes, gt_labels, dn_targets,
                                                         num_boxes)

        num_layers = self.num_layers
        last = num_layers - 1
        raw = (cls[last], bbox[last], giou[last], select_loss)
        for i in range(num_layers - 1):
            raw += (cls[i], bbox[i], giou[i])
        raw += (cls[num_layers], bbox[num_layers], giou[num_layers], dn_cls[last], dn_bbox[last], dn_giou[last])
        for i in range(num_layers - 1):
            raw += (dn_cls[i], dn_bbox[i], dn_giou[i])
        losses = ()
        for i in range(len(raw)):
            losses += (raw[i] * self.weights[i],)
        total = losses[0]
        for value in losses[1:]:
            total = total + value
        return total, losses, matches, fg_targets.astype(ms.int32)
