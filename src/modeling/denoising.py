"""Contrastive denoising (DINO ``prepare_for_cdn``) on the host, with static output shapes.

The reference builds ``pad = 2 * max_gt * G`` denoising queries, G = max(1, 2*dn_number //
(2*max_gt)) groups, so the decoder's query count changes with the batch. Here every batch gets
the same ``num_slots`` (default 2*dn_number, the largest pad possible while max_gt <= dn_number)
so that a graph-mode training step compiles once:

* slots ``[0, pad)`` hold exactly the reference's padded layout: copy r (r = 2g positive,
  2g+1 negative of group g) of image b's t-th GT sits at slot ``r*max_gt + t``; slots with
  t >= n_b are "unused" as in the reference (zero label embedding, box logits 0) and stay
  attendable inside their group;
* slots ``[pad, num_slots)`` are extra: nobody attends to them and they attend only to
  themselves (a fully blocked row would make the softmax NaN), so the 900 matching queries
  see exactly what they see in the reference.

The attention mask is (num_slots+Q)^2, True = blocked, with the matching queries after the
``num_slots`` denoising slots (the reference puts them after ``pad``).
"""
from typing import NamedTuple

import numpy as np


class DenoisingDraws(NamedTuple):
    """Random draws in the reference's call order (torch names in brackets), N = 2*G*T known
    entries in 'known' order (the batch's GT concatenated image by image, repeated 2G times)."""
    rand_label_p: np.ndarray     # (N,) float32 U[0,1) [rand_like]
    rand_new_label: np.ndarray   # (K,) int, new classes of the K entries with p < ratio/2 [randint_like]
    rand_box_sign01: np.ndarray  # (N,4) float32 in {0,1} [randint_like]
    rand_box_part: np.ndarray    # (N,4) float32 U[0,1) [rand_like]


class DenoisingBatch(NamedTuple):
    """Output of ``prepare_denoising``; P = num_slots, Q = num_queries.

    Model inputs (``model_inputs``): ``labels`` (B,P) int32 noised classes (0 where unused),
    ``boxes_unact`` (B,P,4) float32 inverse-sigmoid noised boxes (0 where unused),
    ``slot_valid`` (B,P) bool slot holds a noised GT, ``attn_mask`` (P+Q,P+Q) bool.
    Criterion inputs (``criterion_inputs``): ``positive_gt`` (B,P) int32 index of the GT a
    positive slot reconstructs, -1 elsewhere; ``slot_in_pad`` (P,) bool slots the reference
    has (they count as background in the class loss); ``dn_num`` = G (0 when the batch has
    no GT: the reference then skips denoising and its dn losses are 0).
    ``noised_labels`` (N,) and ``noised_boxes`` (N,4) cxcywh are the 'known'-order values.
    """
    labels: np.ndarray
    boxes_unact: np.ndarray
    slot_valid: np.ndarray
    attn_mask: np.ndarray
    positive_gt: np.ndarray
    slot_in_pad: np.ndarray
    dn_num: int
    single_padding: int
    pad_size: int
    noised_labels: np.ndarray
    noised_boxes: np.ndarray

    def model_inputs(self):
        return self.labels, self.boxes_unact, self.slot_valid, self.attn_mask

    def criterion_inputs(self):
        return self.positive_gt, self.slot_in_pad, np.float32(self.dn_num)


def draw_noise(rng, num_known, num_classes=80, label_noise_ratio=0.5, box_noise_scale=1.0):
    """Draw ``DenoisingDraws`` from a numpy Generator (same draws, same order as the reference;
    draws of a disabled noise are left empty)."""
    empty_boxes = np.zeros((0, 4), np.float32)
    label_p = np.zeros(0, np.float32)
    new_label = np.zeros(0, np.int64)
    if label_noise_ratio > 0:
        label_p = rng.random(num_known, dtype=np.float32)
        num_chosen = int((label_p < np.float32(label_noise_ratio * 0.5)).sum())
        new_label = rng.integers(0, num_classes, num_chosen)
    sign01 = part = empty_boxes
    if box_noise_scale > 0:
        sign01 = rng.integers(0, 2, (num_known, 4)).astype(np.float32)
        part = rng.random((num_known, 4), dtype=np.float32)
    return DenoisingDraws(label_p, new_label, sign01, part)


def inverse_sigmoid(x, eps=1e-3):
    """float32 numpy twin of ``src.layers.box_ops.inverse_sigmoid``."""
    x = np.clip(x, 0, 1)
    return np.log(np.maximum(x, np.float32(eps)) / np.maximum(1 - x, np.float32(eps))).astype(np.float32)


def denoising_attn_mask(num_slots, num_queries, pad_size, group_size):
    """(P+Q,P+Q) bool, True = blocked: the reference's mask on the first ``pad_size`` slots
    (groups of ``group_size`` slots see only their own group and all matching queries; the
    matching queries see no denoising slot) plus the blocked extra slots."""
    size = num_slots + num_queries
    mask = np.zeros((size, size), bool)
    mask[num_slots:, :num_slots] = True
    if pad_size:
        group = np.arange(pad_size) // group_size
        mask[:pad_size, :pad_size] = group[:, None] != group[None, :]
    mask[:, pad_size:num_slots] = True
    mask[pad_size:num_slots, :] = True
    extra = np.arange(pad_size, num_slots)
    mask[extra, extra] = False
    return mask


def prepare_denoising(gt_boxes, gt_labels, gt_valid, num_classes=80, dn_number=100, label_noise_ratio=0.5,
                      box_noise_scale=1.0, num_queries=900, num_slots=None, draws=None, rng=None):
    """Noised denoising queries for a padded GT batch.

    ``gt_boxes`` (B,M,4) float32 cxcywh normalized by each image's size, ``gt_labels`` (B,M)
    int, ``gt_valid`` (B,M) bool with the valid entries first. ``draws`` replays given random
    draws (``DenoisingDraws``); otherwise they come from ``rng`` (a numpy Generator, a fresh
    one when None). Returns a ``DenoisingBatch``.
    """
    num_slots = 2 * dn_number if num_slots is None else num_slots
    gt_boxes = np.asarray(gt_boxes, np.float32)
    gt_valid = np.asarray(gt_valid, bool)
    batch = gt_valid.shape[0]
    counts = gt_valid.sum(1)
    max_gt = int(counts.max()) if batch else 0

    labels = np.zeros((batch, num_slots), np.int32)
    boxes_unact = np.zeros((batch, num_slots, 4), np.float32)
    slot_valid = np.zeros((batch, num_slots), bool)
    positive_gt = np.full((batch, num_slots), -1, np.int32)
    if max_gt == 0:  # the reference skips denoising for a batch without GT
        return DenoisingBatch(labels, boxes_unact, slot_valid, denoising_attn_mask(num_slots, num_queries, 0, 1),
                              positive_gt, np.zeros(num_slots, bool), 0, 0, 0,
                              np.zeros(0, np.int64), np.zeros((0, 4), np.float32))

    groups = max(1, 2 * dn_number // (2 * max_gt))
    pad_size = 2 * max_gt * groups
    if pad_size > num_slots:
        raise ValueError(f"{max_gt} GT in one image need {pad_size} denoising slots > num_slots={num_slots}")
    copies = 2 * groups
    image_of = np.concatenate([np.full(n, b) for b, n in enumerate(counts)])
    index_in_image = np.concatenate([np.arange(n) for n in counts])
    known_labels = np.tile(np.asarray(gt_labels)[gt_valid].astype(np.int64), copies)
    known_boxes = np.tile(gt_boxes[gt_valid], (copies, 1))
    num_gt = len(image_of)
    num_known = copies * num_gt
    if draws is None:
        draws = draw_noise(np.random.default_rng() if rng is None else rng, num_known, num_classes,
                           label_noise_ratio, box_noise_scale)

    noised_labels = known_labels.copy()
    if label_noise_ratio > 0:
        chosen = np.nonzero(draws.rand_label_p < np.float32(label_noise_ratio * 0.5))[0]
        noised_labels[chosen] = draws.rand_new_label
    noised_boxes = known_boxes.copy()
    if box_noise_scale > 0:
        half = known_boxes[:, 2:] / 2
        corners = np.concatenate([known_boxes[:, :2] - half, known_boxes[:, :2] + half], 1)
        part = draws.rand_box_part.astype(np.float32).copy()
        part[(np.arange(num_known) // num_gt) % 2 == 1] += 1.0  # negatives: noise magnitude in [1,2)
        part *= draws.rand_box_sign01.astype(np.float32) * 2.0 - 1.0
        corners = corners + (part * np.concatenate([half, half], 1)) * np.float32(box_noise_scale)
        corners = np.clip(corners, 0.0, 1.0)
        noised_boxes = np.concatenate([(corners[:, :2] + corners[:, 2:]) / 2, corners[:, 2:] - corners[:, :2]], 1)

    copy_of = np.arange(num_known) // num_gt
    rows = np.tile(image_of, copies)
    slots = copy_of * max_gt + np.tile(index_in_image, copies)
    labels[rows, slots] = noised_labels
    boxes_unact[rows, slots] = inverse_sigmoid(noised_boxes)
    slot_valid[rows, slots] = True
    positive = copy_of % 2 == 0
    positive_gt[rows[positive], slots[positive]] = np.tile(index_in_image, copies)[positive]
    return DenoisingBatch(labels, boxes_unact, slot_valid,
                          denoising_attn_mask(num_slots, num_queries, pad_size, 2 * max_gt),
                          positive_gt, np.arange(num_slots) < pad_size, groups, 2 * max_gt, pad_size,
                          noised_labels, noised_boxes.astype(np.float32))
