"""Contrastive denoising queries: replay of the golden draws, the static slot layout, edge cases."""
import numpy as np
import pytest
from golden_targets import padded_targets

from src.modeling.denoising import DenoisingDraws, draw_noise, prepare_denoising

NUM_QUERIES = 900


@pytest.fixture(scope="module")
def golden(golden_dir):
    return dict(np.load(golden_dir / "model_train_r50.npz"))


def golden_draws(golden):
    return DenoisingDraws(golden["rand_label_p"], golden["rand_new_label"], golden["rand_box_sign01"],
                          golden["rand_box_part"])


def test_replays_golden_denoising(golden):
    dn = prepare_denoising(*padded_targets(golden), draws=golden_draws(golden))
    pad = int(golden["dn_input_query_bbox"].shape[1])
    assert (dn.dn_num, dn.single_padding, dn.pad_size) == (int(golden["dn_meta_dn_num"]),
                                                           int(golden["dn_meta_single_padding"]), pad)
    assert dn.labels.shape == (2, 200) and dn.boxes_unact.shape == (2, 200, 4)
    np.testing.assert_array_equal(dn.noised_labels, golden["dn_noised_labels"])
    np.testing.assert_allclose(dn.noised_boxes, golden["dn_known_bbox_expand"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(dn.boxes_unact[:, :pad], golden["dn_input_query_bbox"], rtol=0, atol=1e-6)
    # the label embedding is zero exactly where the reference has no noised GT
    np.testing.assert_array_equal(dn.slot_valid[:, :pad], golden["dn_input_query_label_rownorm"] > 0)
    assert not dn.slot_valid[:, pad:].any() and not dn.boxes_unact[:, pad:].any()

    # labels sit in the padded layout: copy r of image b's GT t at slot r*max_gt + t
    max_gt, counts = dn.single_padding // 2, [3, 2]
    known = 0
    for r in range(2 * dn.dn_num):
        for b, n in enumerate(counts):
            np.testing.assert_array_equal(dn.labels[b, r * max_gt:r * max_gt + n],
                                          golden["dn_noised_labels"][known:known + n])
            known += n

    # positives of group g: GT t at slot g*single_padding + t
    for b, n in enumerate(counts):
        expected = np.full(200, -1)
        for g in range(dn.dn_num):
            expected[g * dn.single_padding + np.arange(n)] = np.arange(n)
        np.testing.assert_array_equal(dn.positive_gt[b], expected)
    np.testing.assert_array_equal(dn.slot_in_pad, np.arange(200) < pad)


def test_attn_mask_matches_golden_layout(golden):
    dn = prepare_denoising(*padded_targets(golden), draws=golden_draws(golden))
    ref = golden["dn_attn_mask"]
    pad, slots = dn.pad_size, dn.labels.shape[1]
    assert dn.attn_mask.shape == (slots + NUM_QUERIES,) * 2
    # our index of each reference row/column: slots [0,pad) stay, the matching queries move by slots-pad
    ours = np.concatenate([np.arange(pad), slots + np.arange(NUM_QUERIES)])
    np.testing.assert_array_equal(dn.attn_mask[np.ix_(ours, ours)], ref)
    extra = np.arange(pad, slots)
    # blocked for all but itself
    assert dn.attn_mask[:, extra].sum(0).tolist() == [slots + NUM_QUERIES - 1] * len(extra)
    assert dn.attn_mask[extra].sum(1).tolist() == [slots + NUM_QUERIES - 1] * len(extra)  # sees only itself
    assert not dn.attn_mask[extra, extra].any()
    assert not dn.attn_mask.all(1).any()  # no fully blocked row (softmax NaN)


def test_image_without_gt():
    boxes = np.zeros((2, 3, 4), np.float32)
    boxes[0] = [[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1], [0.7, 0.2, 0.4, 0.2]]
    labels = np.array([[1, 2, 3], [7, 7, 7]], np.int32)
    valid = np.array([[True, True, True], [False, False, False]])
    dn = prepare_denoising(boxes, labels, valid, rng=np.random.default_rng(0))
    assert (dn.dn_num, dn.single_padding, dn.pad_size) == (33, 6, 198)
    assert len(dn.noised_labels) == 2 * 33 * 3
    assert dn.slot_valid[0].sum() == 2 * 33 * 3 and not dn.slot_valid[1].any()
    assert (dn.positive_gt[1] == -1).all() and (dn.positive_gt[0] >= 0).sum() == 33 * 3
    assert not dn.boxes_unact[1].any()
    # positives keep their class unless label noise hit them; their boxes stay near the GT
    pos = dn.positive_gt[0] >= 0
    sigmoid = 1 / (1 + np.exp(-dn.boxes_unact[0][pos]))
    gt = boxes[0][dn.positive_gt[0][pos]]
    assert np.all(np.abs(sigmoid[:, :2] - gt[:, :2]) <= gt[:, 2:] + 1e-3)


def test_all_empty_batch():
    dn = prepare_denoising(np.zeros((2, 3, 4), np.float32), np.zeros((2, 3), np.int32), np.zeros((2, 3), bool))
    assert (dn.dn_num, dn.single_padding, dn.pad_size) == (0, 0, 0)
    assert not dn.slot_valid.any() and (dn.positive_gt == -1).all() and not dn.slot_in_pad.any()
    mask = dn.attn_mask
    assert not mask[200:, 200:].any() and mask[200:, :200].all()  # matching queries see only each other
    np.testing.assert_array_equal(mask[:200], ~np.eye(200, 1100, dtype=bool))


def test_generator_draws_are_reproducible_and_replayable():
    boxes = np.random.default_rng(1).uniform(0.2, 0.6, (3, 5, 4)).astype(np.float32)
    labels = np.arange(15, dtype=np.int32).reshape(3, 5)
    valid = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], bool)
    first = prepare_denoising(boxes, labels, valid, rng=np.random.default_rng(7))
    draws = draw_noise(np.random.default_rng(7), len(first.noised_labels))
    replay = prepare_denoising(boxes, labels, valid, draws=draws)
    for a, b in zip(first, replay):
        np.testing.assert_array_equal(a, b)
    assert (first.dn_num, first.single_padding, first.pad_size) == (20, 10, 200)


def test_too_many_gt_for_the_slots():
    n = 101
    with pytest.raises(ValueError, match="denoising slots"):
        prepare_denoising(np.full((1, n, 4), 0.5, np.float32), np.zeros((1, n), np.int32), np.ones((1, n), bool))
