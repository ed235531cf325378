"""Training criterion: parity with the golden losses/matchings/foreground targets, padded and
empty GT, and gradients against a float64 numpy reference."""
import json
import math

import mindspore as ms
import numpy as np
import pytest
from golden_targets import padded_targets
from mindspore import Tensor, nn
from scipy.optimize import linear_sum_assignment

from src.losses.criterion import FocusDETRCriterion, loss_keys, loss_weights
from src.losses.matcher import scipy_order
from src.modeling.denoising import DenoisingDraws, prepare_denoising

NUM_SLOTS = 200
MATCH_NAMES = tuple(f"aux_{i}" for i in range(5)) + ("main", "enc")  # rows of the returned matches


@pytest.fixture(scope="module")
def golden(golden_dir):
    meta = json.loads((golden_dir / "model_train_r50.json").read_text())
    return dict(np.load(golden_dir / "model_train_r50.npz")), meta


def golden_outputs(arrays):
    """The model-output tuple from the fixture's criterion inputs; the 2 extra denoising slots
    hold NaN to prove they are ignored."""
    def pad_slots(a):
        fill = np.full(a.shape[:2] + (NUM_SLOTS - a.shape[2],) + a.shape[3:], np.nan, np.float32)
        return np.concatenate([a, fill], 2)
    return (np.concatenate([arrays["aux_pred_logits"], arrays["pred_logits"][None]]),
            np.concatenate([arrays["aux_pred_boxes"], arrays["pred_boxes"][None]]),
            pad_slots(arrays["dn_pred_logits"]), pad_slots(arrays["dn_pred_boxes"]),
            arrays["enc_pred_logits"], arrays["enc_pred_boxes"], arrays["temp_backbone_mask_prediction"])


def token_in_extent(fg_logits):
    """(B,S) tokens inside the official extent: image 1's last 30 lie outside (a larger canvas)."""
    mask = np.ones(fg_logits.shape[:2], bool)
    mask[-1, -30:] = False
    return mask


def run_criterion(criterion, outputs, boxes, labels, valid, image_sizes, canvas, dn):
    """The criterion on model outputs whose tokens all lie inside the extent."""
    in_extent = np.ones(np.shape(outputs[6])[:2], bool)
    outputs = tuple(Tensor(np.asarray(o, np.float32)) for o in outputs) + (Tensor(in_extent),)
    return criterion(outputs, Tensor(boxes), Tensor(labels),
                     Tensor(valid), Tensor(np.asarray(image_sizes, np.int32)), canvas,
                     tuple(Tensor(a) for a in dn.criterion_inputs()))


def test_golden_parity(mode, golden):
    arrays, meta = golden
    boxes, labels, valid = padded_targets(arrays)
    draws = DenoisingDraws(arrays["rand_label_p"], arrays["rand_new_label"], arrays["rand_box_sign01"],
                           arrays["rand_box_part"])
    dn = prepare_denoising(boxes, labels, valid, draws=draws)
    total, losses, matches, fg_targets = run_criterion(
        FocusDETRCriterion(), golden_outputs(arrays), boxes, labels, valid, arrays["image_sizes"],
        tuple(int(v) for v in arrays["padded_size"]), dn)

    losses = [float(v.asnumpy()) for v in losses]
    keys = loss_keys()
    assert set(keys) == set(meta["losses_weighted"]) and len(keys) == 40
    assert dict(zip(keys, loss_weights())) == {k: meta["weight_dict"][k] for k in keys}
    for key, value, weight in zip(keys, losses, loss_weights()):
        assert value == pytest.approx(meta["losses_weighted"][key], rel=1e-4), key
        assert value / weight == pytest.approx(meta["losses_unweighted"][key], rel=1e-4), key
    assert float(total.asnumpy()) == pytest.approx(meta["total_loss"], rel=1e-4)

    matches = matches.asnumpy()
    for row, name in enumerate(MATCH_NAMES):
        for b in range(2):
            src, tgt = scipy_order(matches[row, b])
            np.testing.assert_array_equal(src, arrays[f"match_{name}_src_{b}"], err_msg=name)
            np.testing.assert_array_equal(tgt, arrays[f"match_{name}_tgt_{b}"], err_msg=name)
        assert (matches[row, 0, 3:] == -1).all() and (matches[row, 1, 2:] == -1).all()
    np.testing.assert_array_equal(fg_targets.asnumpy(), arrays["fg_targets"])


# ---------------------------------------------------------------------------------------------
# float64 numpy reference of the whole criterion (small shapes), written from the reference code


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def focal(x, t, alpha=0.25, gamma=2.0):
    p = sigmoid(x)
    ce = np.logaddexp(0, x) - x * t
    p_t = p * t + (1 - p) * (1 - t)
    return (alpha * t + (1 - alpha) * (1 - t)) * ce * (1 - p_t) ** gamma


def xyxy(b):
    return np.concatenate([b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2], -1)


def giou(a, b):
    """GIoU between boxes a (...,1,4) and b (...,K,4) cxcywh (broadcast)."""
    a, b = xyxy(a), xyxy(b)

    def area(x):
        return (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])

    wh = np.clip(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area(a) + area(b) - inter
    wh_c = np.clip(np.maximum(a[..., 2:], b[..., 2:]) - np.minimum(a[..., :2], b[..., :2]), 0, None)
    enclosing = wh_c[..., 0] * wh_c[..., 1]
    return inter / (union + 1e-6) - (enclosing - union) / (enclosing + 1e-6)


def numpy_matches(logits, boxes, gt_boxes, gt_labels, counts):
    p = sigmoid(logits)
    out = np.full(gt_labels.shape, -1)
    for b, n in enumerate(counts):
        if n:
            pos = 0.25 * (1 - p[b]) ** 2 * -np.log(p[b] + 1e-8)
            neg = 0.75 * p[b] ** 2 * -np.log(1 - p[b] + 1e-8)
            cost_class = (pos - neg)[:, gt_labels[b, :n]]
            cost_bbox = np.abs(boxes[b][:, None] - gt_boxes[b, None, :n]).sum(-1)
            cost = 5 * cost_bbox + 2 * cost_class - 2 * giou(boxes[b][:, None], gt_boxes[b, None, :n])
            rows, cols = linear_sum_assignment(cost)
            out[b, cols] = rows
    return out


def numpy_fg_targets(gt_boxes, counts, image_sizes, canvas):
    targets = []
    for stride, (lo, hi) in zip((8, 16, 32, 64), ((-1, 64), (64, 128), (128, 256), (256, 999999))):
        h, w = math.ceil(canvas[0] / stride), math.ceil(canvas[1] / stride)
        ys, xs = np.meshgrid(np.arange(h) * stride + stride // 2, np.arange(w) * stride + stride // 2, indexing="ij")
        level = np.zeros((len(counts), h * w), bool)
        for b, n in enumerate(counts):
            ih, iw = image_sizes[b]
            px = xyxy(gt_boxes[b, :n] * [iw, ih, iw, ih])
            x, y = xs.reshape(-1, 1), ys.reshape(-1, 1)
            off = np.stack([x - px[:, 0], y - px[:, 1], px[:, 2] - x, px[:, 3] - y], -1)
            level[b] = ((off.min(-1) > 0) & (off.max(-1) > lo) & (off.max(-1) <= hi)).any(-1)
        targets.append(level)
    return np.concatenate(targets, 1)


def numpy_criterion(outputs, gt_boxes, gt_labels, counts, fg_targets, dn, matches):
    """Weighted losses in ``loss_keys`` order for fixed ``matches`` (L+1,B,M)."""
    pred_logits, pred_boxes, dn_logits, dn_boxes, enc_logits, enc_boxes, fg_logits = outputs[:7]
    num_boxes = max(sum(counts), 1)

    def matched(logits, boxes, match):
        target = np.zeros_like(logits)
        l1 = g = 0.0
        for b, n in enumerate(counts):
            for t in range(n):
                q = match[b, t]
                target[b, q, gt_labels[b, t]] = 1
                l1 += np.abs(boxes[b, q] - gt_boxes[b, t]).sum()
                g += 1 - giou(boxes[b, q], gt_boxes[b, t])
        return focal(logits, target).sum() / num_boxes, l1 / num_boxes, g / num_boxes

    def denoising(logits, boxes):
        norm = num_boxes * dn.dn_num
        target = np.zeros_like(logits)
        l1 = g = 0.0
        for b, slot in zip(*np.nonzero(dn.positive_gt >= 0)):
            t = dn.positive_gt[b, slot]
            target[b, slot, gt_labels[b, t]] = 1
            l1 += np.abs(boxes[b, slot] - gt_boxes[b, t]).sum()
            g += 1 - giou(boxes[b, slot], gt_boxes[b, t])
        return (focal(logits, target) * dn.slot_in_pad[None, :, None]).sum() / norm, l1 / norm, g / norm

    q = sigmoid(fg_logits[..., 0])
    t = fg_targets.astype(np.float64)
    p_t = q * t + (1 - q) * (1 - t)
    per_image = (-(0.25 * t + 0.75 * (1 - t)) * (1 - p_t) ** 2 * np.log(p_t) * token_in_extent(fg_logits)).sum(1)
    select = (per_image / np.maximum(t.sum(1), 1)).mean()

    layers = len(pred_logits)
    raw = list(matched(pred_logits[-1], pred_boxes[-1], matches[layers - 1])) + [select]
    for i in range(layers - 1):
        raw += matched(pred_logits[i], pred_boxes[i], matches[i])
    raw += matched(enc_logits, enc_boxes, matches[layers])
    raw += denoising(dn_logits[-1], dn_boxes[-1])
    for i in range(layers - 1):
        raw += denoising(dn_logits[i], dn_boxes[i])
    return np.array(raw) * np.array(loss_weights(layers))


class TotalLoss(nn.Cell):
    def __init__(self, criterion, rest, in_extent):
        super().__init__()
        self.criterion = criterion
        self.rest = rest
        self.in_extent = Tensor(in_extent)

    def construct(self, *outputs):
        total, _, matches, fg_targets = self.criterion(outputs + (self.in_extent,), *self.rest)
        return total, (matches, fg_targets)


def small_problem(seed=0):
    """6 layers, B=2 (1 and 3 GT, one garbage entry), Q=7, C=4, 8 denoising slots, canvas 64x72."""
    rng = np.random.default_rng(seed)
    layers, batch, queries, classes, slots = 6, 2, 7, 4, 8
    canvas, image_sizes = (64, 72), np.array([[64, 60], [50, 72]])
    counts = [1, 3]
    gt_boxes = rng.uniform(0.3, 0.6, (batch, 4, 4)).astype(np.float32)
    gt_boxes[..., 2:] = rng.uniform(0.2, 0.5, (batch, 4, 2))
    gt_boxes[0, 1:] = 9.0
    gt_labels = rng.integers(0, classes, (batch, 4)).astype(np.int32)
    gt_labels[0, 1:] = 99
    valid = np.arange(4)[None] < np.array(counts)[:, None]
    dn = prepare_denoising(gt_boxes, gt_labels, valid, num_classes=classes, dn_number=slots // 2, num_queries=queries,
                           rng=rng)

    def boxes(*shape):
        b = rng.uniform(0.2, 0.8, shape + (4,))
        b[..., 2:] = rng.uniform(0.1, 0.5, shape + (2,))
        return b

    outputs = [rng.normal(0, 2, (layers, batch, queries, classes)), boxes(layers, batch, queries),
               rng.normal(0, 2, (layers, batch, slots, classes)), boxes(layers, batch, slots),
               rng.normal(0, 2, (batch, queries, classes)), boxes(batch, queries), rng.normal(0, 2, (batch, 100, 1))]
    outputs = [o.astype(np.float32).astype(np.float64) for o in outputs]
    return outputs, gt_boxes, gt_labels, valid, counts, image_sizes, canvas, dn, classes


def test_against_numpy_reference_values_and_gradients(mode):
    outputs, gt_boxes, gt_labels, valid, counts, image_sizes, canvas, dn, classes = small_problem()
    assert (dn.pad_size, dn.dn_num) == (6, 1)  # slots 6 and 7 are extra
    criterion = FocusDETRCriterion(num_classes=classes)
    rest = (Tensor(gt_boxes), Tensor(gt_labels), Tensor(valid), Tensor(image_sizes.astype(np.int32)), canvas,
            tuple(Tensor(a) for a in dn.criterion_inputs()))
    value_and_grad = ms.value_and_grad(TotalLoss(criterion, rest, token_in_extent(outputs[6])),
                                       grad_position=tuple(range(7)), has_aux=True)
    (total, (matches, fg_targets)), grads = value_and_grad(*(Tensor(o.astype(np.float32)) for o in outputs))
    matches, fg_targets = matches.asnumpy(), fg_targets.asnumpy()

    gt64 = gt_boxes.astype(np.float64)
    all_logits = list(outputs[0]) + [outputs[4]]
    all_boxes = list(outputs[1]) + [outputs[5]]
    for row in range(7):
        expected = numpy_matches(all_logits[row], all_boxes[row], gt64, gt_labels, counts)
        np.testing.assert_array_equal(matches[row], expected)
    np.testing.assert_array_equal(fg_targets, numpy_fg_targets(gt64, counts, image_sizes, canvas))
    assert 0 < fg_targets.sum() < fg_targets.size

    def reference_total(outs):
        return numpy_criterion(outs, gt64, gt_labels, counts, fg_targets, dn, matches).sum()

    assert float(total.asnumpy()) == pytest.approx(reference_total(outputs), rel=1e-5)
    rng = np.random.default_rng(1)
    eps = 1e-6
    for i, (x, grad) in enumerate(zip(outputs, grads)):
        grad = grad.asnumpy()
        assert np.isfinite(grad).all()
        if i in (2, 3):  # extra denoising slots get no gradient
            assert not grad[:, :, dn.pad_size:].any()
        for flat in rng.choice(x.size, 12, replace=False):
            idx = np.unravel_index(flat, x.shape)
            plus = [o.copy() for o in outputs]
            minus = [o.copy() for o in outputs]
            plus[i][idx] += eps
            minus[i][idx] -= eps
            numeric = (reference_total(plus) - reference_total(minus)) / (2 * eps)
            assert grad[idx] == pytest.approx(numeric, rel=2e-3, abs=1e-4), (i, idx)


def test_image_without_gt_adds_no_box_loss(mode):
    outputs, gt_boxes, gt_labels, valid, counts, image_sizes, canvas, dn, classes = small_problem(seed=3)
    valid = valid.copy()
    valid[0] = False  # image 0 now has no GT
    dn = prepare_denoising(gt_boxes, gt_labels, valid, num_classes=classes, dn_number=4, num_queries=7,
                           rng=np.random.default_rng(0))
    criterion = FocusDETRCriterion(num_classes=classes)
    _, both, matches, _ = run_criterion(criterion, outputs, gt_boxes, gt_labels, valid, image_sizes, canvas, dn)
    only = prepare_denoising(gt_boxes[1:], gt_labels[1:], valid[1:], num_classes=classes, dn_number=4, num_queries=7,
                             rng=np.random.default_rng(0))
    _, alone, _, _ = run_criterion(criterion, [o[..., 1:2, :, :] if o.ndim == 4 else o[1:2] for o in outputs],
                                   gt_boxes[1:], gt_labels[1:], valid[1:], image_sizes[1:], canvas, only)
    both = np.array([float(v.asnumpy()) for v in both])
    alone = np.array([float(v.asnumpy()) for v in alone])
    assert np.isfinite(both).all()
    assert (matches.asnumpy()[:, 0] == -1).all()
    for key, a, b in zip(loss_keys(), both, alone):
        if "bbox" in key or "giou" in key:
            assert a == pytest.approx(b, rel=1e-5), key
        else:  # the empty image's queries still count as background
            assert a > b, key


def test_batch_without_any_gt(mode):
    outputs, gt_boxes, gt_labels, _, _, image_sizes, canvas, _, classes = small_problem(seed=4)
    valid = np.zeros((2, 4), bool)
    dn = prepare_denoising(gt_boxes, gt_labels, valid, num_classes=classes, dn_number=4, num_queries=7)
    total, losses, matches, fg_targets = run_criterion(FocusDETRCriterion(num_classes=classes), outputs, gt_boxes,
                                                       gt_labels, valid, image_sizes, canvas, dn)
    losses = dict(zip(loss_keys(), (float(v.asnumpy()) for v in losses)))
    assert np.isfinite(float(total.asnumpy()))
    assert (matches.asnumpy() == -1).all() and not fg_targets.asnumpy().any()
    for key, value in losses.items():
        if "_dn" in key or "bbox" in key or "giou" in key:
            assert value == 0.0, key  # as the reference: no pairs, and dn losses are 0 without dn
        else:
            assert value > 0, key
