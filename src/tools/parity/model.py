"""The model fixtures' comparisons (``model_eval_*``, ``model_train_*``), driven by the fixture's
keys: an array the fixture holds and the port does not produce is a FAIL row.

Most comparisons are rows of a table, (fixture key, port value, kind, tolerance), run in table
order by one loop (``add_table``). The port value is the name of a port output, or a function
``(ours, g, key)`` of the port outputs, the fixture and the key, for the port tensors that need
a channel subset, a norm or a slice before they are the fixture's. A fixture key with an integer
group is a pattern over the fixture's numbered keys (levels, stages), compared in number order.
The kind is 'value' (within the tolerance), 'exact' or 'sets' (per-image index sets). What does
not fit one row (encoder layers, detections, denoising metadata, GT, matchings, losses) is a
small function in the table, or after it, adding its rows in the same place of the report."""
import re

import numpy as np

from src.layers.levels import level_starts
from src.tools.parity.golden import FixtureArrays, fixture_targets
from src.tools.parity.report import (
    TOL_BOX,
    TOL_DECODER,
    TOL_ENCODER,
    PortOutputs,
    Row,
    Rows,
    exact_row,
    loss_row,
    set_row,
    value_row,
)


def numbered(g, pattern):
    """Fixture keys fully matching ``pattern`` (first group an integer), sorted by that number."""
    found = [(m, k) for k in g for m in [re.fullmatch(pattern, k)] if m]
    return [(int(m[1]), k) for m, k in sorted(found, key=lambda mk: (int(mk[0][1]), mk[1]))]


def align_by_ids(values, ids, ref_ids):
    """Rows of ``values`` (B,R,...) in our id order ``ids`` (B,k), k <= R, taken in the reference
    order ``ref_ids`` (B,k_ref): (B,k_ref,...)."""
    out = []
    for b in range(values.shape[0]):
        pos = {int(t): i for i, t in enumerate(ids[b])}
        out.append(values[b][[pos[int(t)] for t in ref_ids[b]]])
    return np.stack(out)


def table_row(fixture, key, kind, ours, ref, tol):
    if kind == "value":
        return value_row(fixture, key, ours, ref, tol)
    return (exact_row if kind == "exact" else set_row)(fixture, key, ours, ref)


def add_table(rows, table, g, ours):
    """Add the rows of ``table`` (see the module docstring) for the keys the fixture holds; an
    entry that is a function adds the rows of its special case."""
    for entry in table:
        if callable(entry):
            entry(rows, g, ours)
            continue
        pattern, port, kind, tol = entry
        keys = [k for _, k in numbered(g, pattern)] if "(" in pattern else [pattern] if pattern in g else []
        for key in keys:  # the port value first: a missing port output leaves the fixture array unread
            rows.add(lambda: table_row(rows.fixture, key, kind, port(ours, g, key) if callable(port) else ours[port],
                                       g[key], tol), key)


def neck_shapes(ours, g, full=False):
    """The port's neck maps' (H, W), or with ``full`` their whole shapes, for the fixture's levels."""
    levels = len(g["spatial_shapes"]) if "spatial_shapes" in g else len(numbered(g, r"neck_l(\d+)"))
    return np.array([ours[f"neck_l{i}"].shape if full else ours[f"neck_l{i}"].shape[2:] for i in range(levels)])


def encoder_rows(rows, g, ours):
    """The per-image foreground budget, then every encoder layer (``compare_encoder_layer``)."""
    name = rows.fixture
    if "encoder_foreground_topk" in g:  # the port holds each image's budget: here all the batch's
        rows.add(lambda: exact_row(name, "encoder_foreground_topk", ours["encoder_foreground_topk"], np.broadcast_to(
            g["encoder_foreground_topk"], ours["encoder_foreground_topk"].shape)), "encoder_foreground_topk")
    for layer, _ in numbered(g, r"foreground_inds_l(\d+)"):
        rows.extend(compare_encoder_layer(name, g, ours, layer))


def detection_rows(rows, g, ours):
    if "postprocess_topk_values" in g or "postprocess_topk_indices" in g:
        rows.add(lambda: compare_detections(rows.fixture, g, ours["det"]), "postprocess_topk_indices")


EVAL_TABLE = (
    (r"backbone_(?:res|p)(\d+)", lambda ours, g, key: ours[key][:, g[f"{key}_channels"]], "value", TOL_ENCODER),
    (r"backbone_(?:res|p)(\d+)_chmean", lambda ours, g, key: ours[key[:-len("_chmean")]].mean((2, 3)), "value",
     TOL_ENCODER),
    (r"neck_l(\d+)", lambda ours, g, key: ours[key][:, g["neck_channels"]], "value", TOL_ENCODER),
    (r"neck_l(\d+)_chmean", lambda ours, g, key: ours[key[:-len("_chmean")]].mean((2, 3)), "value", TOL_ENCODER),
    (r"mask_l(\d+)", lambda ours, g, key: ours[key], "exact", None),
    (r"pos_l(\d+)", lambda ours, g, key: ours[key][:, g["pos_channels"]], "value", TOL_ENCODER),
    ("spatial_shapes", lambda ours, g, key: neck_shapes(ours, g), "exact", None),
    ("level_start_index", lambda ours, g, key: np.array(level_starts(neck_shapes(ours, g))[:-1]),
     "exact", None),
    # the neck maps the criterion receives (it uses their shapes)
    ("srcs_shapes", lambda ours, g, key: neck_shapes(ours, g, full=True), "exact", None),
    ("valid_ratios", "valid_ratios", "value", TOL_ENCODER),
    ("encoder_reference_points", "encoder_reference_points", "value", TOL_ENCODER),
    ("temp_backbone_mask_prediction", "temp_backbone_mask_prediction", "value", TOL_ENCODER),
    ("backbone_mask_prediction", "backbone_mask_prediction", "value", TOL_ENCODER),
    ("lvl_pos_embed_rownorm", lambda ours, g, key: np.linalg.norm(ours["lvl_pos_embed"], axis=-1), "value",
     TOL_ENCODER),
    ("valid_token_nums", "valid_token_nums", "exact", None),
    ("focus_token_nums", "focus_token_nums", "exact", None),
    encoder_rows,
    ("memory", lambda ours, g, key: ours["memory"][..., g["memory_channels"]], "value", TOL_ENCODER),
    ("memory_rownorm", lambda ours, g, key: np.linalg.norm(ours["memory"], axis=-1), "value", TOL_ENCODER),
    ("output_proposals", "output_proposals", "value", TOL_ENCODER),
    ("enc_outputs_class_max", lambda ours, g, key: ours["enc_outputs_class"].max(-1), "value", TOL_ENCODER),
    ("enc_outputs_class_argmax", lambda ours, g, key: ours["enc_outputs_class"].argmax(-1), "exact", None),
    ("enc_outputs_class_sub", lambda ours, g, key: ours["enc_outputs_class"][..., g["enc_class_subset"]], "value",
     TOL_ENCODER),
    ("enc_outputs_coord_unact", "enc_outputs_coord_unact", "value", TOL_ENCODER),
    ("two_stage_topk_inds", "two_stage_topk_inds", "sets", None),
    ("interm_pred_boxes", "enc_boxes", "value", TOL_BOX),
    # the encoder head on the selected proposals: encoder tolerance
    ("interm_pred_logits_sub", lambda ours, g, key: ours["enc_logits"][..., g["aux_class_subset"]], "value",
     TOL_ENCODER),
    ("decoder_init_reference", "decoder_init_reference", "value", TOL_BOX),
    ("decoder_hidden_states", lambda ours, g, key: ours["decoder_hidden_states"][..., g["decoder_channels"]],
     "value", TOL_DECODER),
    ("decoder_hidden_rownorm", lambda ours, g, key: np.linalg.norm(ours["decoder_hidden_states"], axis=-1), "value",
     TOL_DECODER),
    ("decoder_references", "decoder_references", "value", TOL_BOX),
    ("pred_logits", lambda ours, g, key: ours["pred_logits"][-1], "value", TOL_DECODER),
    ("pred_boxes", lambda ours, g, key: ours["pred_boxes"][-1], "value", TOL_BOX),
    ("aux_pred_logits_sub", lambda ours, g, key: ours["pred_logits"][:-1][..., g["aux_class_subset"]], "value",
     TOL_DECODER),
    ("aux_pred_logits", lambda ours, g, key: ours["pred_logits"][:-1], "value", TOL_DECODER),
    ("aux_pred_boxes", lambda ours, g, key: ours["pred_boxes"][:-1], "value", TOL_BOX),
    detection_rows,
)


def compare_eval(name, g, ours):
    """Every comparison the eval layout allows (``EVAL_TABLE``), driven by the fixture's keys: an
    array the fixture holds and the port does not produce is a FAIL row."""
    g = g if isinstance(g, FixtureArrays) else FixtureArrays(g)
    rows = Rows(name)
    add_table(rows, EVAL_TABLE, g, PortOutputs(ours))
    return rows


def compare_encoder_layer(name, g, ours, layer):
    """Selections of encoder layer ``layer`` as sets, then the per-token values aligned by token
    id. The port holds the static R_l rows of a layer; the official layer has k_l rows (smaller
    when no image fills the canvas): only the port's first k_l rows are the layer's selection."""
    rows = Rows(name)
    add = rows.add
    key = f"foreground_inds_l{layer}"
    ref_ids = g[key]

    def our_ids():
        k = int(np.asarray(ours["encoder_foreground_topk"])[0, layer])
        return ours[key][:, :k]

    row = add(lambda: set_row(name, key, our_ids(), ref_ids), key)
    if f"oesm_topk_global_l{layer}" in g:
        add(lambda: set_row(name, f"oesm_topk_global_l{layer}", ours[f"oesm_topk_global_l{layer}"],
                            g[f"oesm_topk_global_l{layer}"]), f"oesm_topk_global_l{layer}")
    if f"oesm_topk_local_l{layer}" in g:
        # positions inside the layer's selection: ours mapped through our ids to the reference's positions
        def local():
            pos = [{int(t): i for i, t in enumerate(r)} for r in ref_ids]
            glob = ours[f"oesm_topk_global_l{layer}"]
            return np.array([[pos[b].get(int(t), -1) for t in glob[b]] for b in range(len(glob))])

        add(lambda: set_row(name, f"oesm_topk_local_l{layer}", local(), g[f"oesm_topk_local_l{layer}"]),
            f"oesm_topk_local_l{layer}")
    dependent = [f"{k}_l{layer}" for k in ("oesm_score_max", "foreground_pre_layer", "oesm_mc_score",
                                           "enc_layer_out", "enc_layer_out_rownorm")]
    if not row.ok:
        for k in dependent:
            if k in g:
                g.mark(k)
                rows.append(Row(name, k, ok=False, note=f"{key} differs: rows cannot be aligned by token id"))
        return rows
    for k in ("oesm_score_max", "foreground_pre_layer", "oesm_mc_score"):
        if f"{k}_l{layer}" in g:
            add(lambda: value_row(name, f"{k}_l{layer}", align_by_ids(ours[f"{k}_l{layer}"], our_ids(), ref_ids),
                                  g[f"{k}_l{layer}"], TOL_ENCODER), f"{k}_l{layer}")
    if f"enc_layer_out_l{layer}" in g:
        add(lambda: value_row(name, f"enc_layer_out_l{layer}", align_by_ids(
            ours[f"enc_layer_out_l{layer}"], our_ids(), ref_ids)[..., g["enc_layer_channels"]],
            g[f"enc_layer_out_l{layer}"], TOL_ENCODER), f"enc_layer_out_l{layer}")
    if f"enc_layer_out_rownorm_l{layer}" in g:
        add(lambda: value_row(name, f"enc_layer_out_rownorm_l{layer}", np.linalg.norm(align_by_ids(
            ours[f"enc_layer_out_l{layer}"], our_ids(), ref_ids), axis=-1),
            g[f"enc_layer_out_rownorm_l{layer}"], TOL_ENCODER), f"enc_layer_out_rownorm_l{layer}")
    return rows


def compare_detections(name, g, det):
    """Post-processed detections matched by flattened (query, class) index."""
    scores, labels, boxes, keep, flat = det
    rows = []
    for b in range(g["postprocess_topk_values"].shape[0]):
        ref_flat, ref_scores = g["postprocess_topk_indices"][b], g["postprocess_topk_values"][b]
        pos = {int(f): i for i, f in enumerate(flat[b])}
        common = [i for i, f in enumerate(ref_flat) if int(f) in pos]
        missing = [i for i, f in enumerate(ref_flat) if int(f) not in pos]
        # a top-k may legitimately differ only where the score is within tolerance of the k-th
        near_boundary = all(abs(ref_scores[i] - ref_scores[-1]) <= TOL_DECODER for i in missing)
        rows.append(Row(name, f"postprocess_topk_indices[{b}]", agreement=f"sets {len(common)}/{len(ref_flat)}",
                        ok=near_boundary, note=f"{len(missing)} boundary swap(s)" if missing else ""))
        ours = np.array([pos[int(ref_flat[i])] for i in common])
        rows.append(value_row(name, f"postprocess_topk_values[{b}]", scores[b][ours], ref_scores[common],
                              TOL_DECODER))
        if f"det_boxes_{b}" not in g:
            continue
        # the reference drops empty boxes and keeps top-k order; ours marks them in ``keep``
        kept_ref = [i for i in common if keep[b][pos[int(ref_flat[i])]]]
        n_det = len(g[f"det_scores_{b}"])
        if len(kept_ref) != n_det or missing:
            g.mark(f"det_scores_{b}", f"det_labels_{b}", f"det_boxes_{b}")
            rows.append(Row(name, f"det_*_{b}", ok=not missing and len(kept_ref) == n_det,
                            note=f"kept {len(kept_ref)} vs reference {n_det}; compared via postprocess_topk"))
            continue
        ours = np.array([pos[int(ref_flat[i])] for i in kept_ref])
        rows.append(exact_row(name, f"det_labels_{b}", labels[b][ours], g[f"det_labels_{b}"]))
        rows.append(value_row(name, f"det_scores_{b}", scores[b][ours], g[f"det_scores_{b}"], TOL_DECODER))
        scale = float(np.max(g["orig_sizes"][b]))
        rows.append(value_row(name, f"det_boxes_{b}", boxes[b][ours], g[f"det_boxes_{b}"], TOL_BOX * scale,
                              agreement=f"kept {n_det}"))
    return rows


def dn_pad(g):
    """The reference's denoising slots (the port's static dn group may hold more)."""
    return g["dn_input_query_bbox"].shape[1]


def dn_keep(ours, g):
    """The port's decoder rows that are the reference's: its dn slots, then the queries (our
    extra slots removed)."""
    slots = ours["dn"].labels.shape[1]
    pad = dn_pad(g)
    return np.r_[0:pad, slots:slots + g["two_stage_topk_inds"].shape[1]]


def dn_label_rownorm(ours, g, key):
    """The dn content queries as FocusDETR.construct builds them: label_enc rows, 0 in unused slots."""
    dn = ours["dn"]
    return np.where(dn.slot_valid, np.linalg.norm(ours["label_enc"][dn.labels], axis=-1), 0.0)[:, :dn_pad(g)]


def dn_meta_rows(rows, g, ours):
    if "dn_meta_single_padding" in g or "dn_meta_dn_num" in g:
        dn = ours["dn"]
        rows.add(lambda: exact_row(rows.fixture, "dn_meta", [dn.single_padding, dn.dn_num],
                                   [int(g["dn_meta_single_padding"]), int(g["dn_meta_dn_num"])]))


def orig_sizes_rows(rows, g, ours):
    if "orig_sizes" in g:
        g.mark("orig_sizes")
        rows.append(Row(rows.fixture, "orig_sizes", agreement="input", ok=True, info=True,
                        note="post-processing target size: the official training forward does not read it"))


TRAIN_TABLE = (
    ("dn_noised_labels", lambda ours, g, key: ours["dn"].noised_labels, "exact", None),
    ("dn_known_bbox_expand", lambda ours, g, key: ours["dn"].noised_boxes, "value", TOL_BOX),
    ("dn_input_query_bbox", lambda ours, g, key: ours["dn"].boxes_unact[:, :dn_pad(g)], "value", TOL_BOX),
    ("dn_input_query_label_rownorm", dn_label_rownorm, "value", TOL_ENCODER),
    ("dn_attn_mask", lambda ours, g, key: ours["dn"].attn_mask[np.ix_(dn_keep(ours, g), dn_keep(ours, g))], "exact",
     None),
    dn_meta_rows,
    # the encoder head on the selected proposals: encoder tolerance
    ("enc_pred_logits", "enc_logits", "value", TOL_ENCODER),
    ("enc_pred_boxes", "enc_boxes", "value", TOL_BOX),
    ("dn_pred_logits", lambda ours, g, key: ours["dn_logits"][:, :, :dn_pad(g)], "value", TOL_DECODER),
    ("dn_pred_boxes", lambda ours, g, key: ours["dn_boxes"][:, :, :dn_pad(g)], "value", TOL_BOX),
    orig_sizes_rows,
    ("fg_targets", lambda ours, g, key: ours["fg_targets"].astype(np.int64), "exact", None),
)


def compare_train(name, g, meta, ours):
    """The eval comparisons on the training forward, then the denoising queries, the criterion
    inputs it produces (``TRAIN_TABLE``), the GT it is given, the matchings, the foreground
    targets and every loss (the fixture's keys and the JSON's ``losses_unweighted`` drive them)."""
    g = g if isinstance(g, FixtureArrays) else FixtureArrays(g)
    ours = PortOutputs(ours)
    keep = dn_keep(ours, g)
    # decoder tensors hold the denoising slots too: compare the reference's pad + queries rows
    trimmed = PortOutputs(ours)
    for key in ("decoder_init_reference", "decoder_hidden_states", "decoder_references"):
        if key in ours:
            trimmed[key] = ours[key][..., keep, :]
    rows = Rows(name)
    rows.extend(compare_eval(name, g, trimmed))
    add_table(rows, TRAIN_TABLE, g, ours)
    add_target_rows(rows, g)
    add_matching_rows(rows, g, ours)
    rows.extend(train_loss_rows(name, meta, ours))
    return rows


def add_target_rows(rows, g):
    """The GT: the official model gets absolute xyxy pixels, the port the loader's normalized
    cxcywh; and the pixel GT of the foreground targets."""
    from mindspore import Tensor

    from src.layers.box_ops import box_cxcywh_to_xyxy

    name, add = rows.fixture, rows.add
    boxes, labels, valid = fixture_targets(g)
    sizes = g["image_sizes"].astype(np.float32)
    for b, key in numbered(g, r"gt_boxes_xyxy_(\d+)"):
        def normalized():  # src.data.loader: centre and size over the image's own [w, h]
            xyxy = g[key].reshape(-1, 4).astype(np.float32)
            scale = np.array([sizes[b, 1], sizes[b, 0]], np.float32)
            return np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2 / scale, (xyxy[:, 2:] - xyxy[:, :2]) / scale], 1)
        add(lambda: value_row(name, f"target_boxes_{b} (from {key})", normalized(),
                              g[f"target_boxes_{b}"].reshape(-1, 4), 1e-6), key)
    for b, key in numbered(g, r"gt_labels_(\d+)"):
        add(lambda: exact_row(name, f"target_labels_{b} (from {key})", g[key], g[f"target_labels_{b}"]), key)
    if "fg_gt_boxes_padded" in g or "fg_gt_classes_padded" in g:
        # the pixel GT of the foreground targets, as FocusForegroundTargets computes it
        width = g["fg_gt_boxes_padded"].shape[1]
        scale = np.stack([sizes[:, 1], sizes[:, 0], sizes[:, 1], sizes[:, 0]], -1)[:, None]
        pixel = box_cxcywh_to_xyxy(Tensor(boxes * scale)).asnumpy()
        extra_valid = valid[:, width:].any()
        pixel = np.where(valid[..., None], pixel, -1.0)[:, :width]
        classes = np.where(valid, 1.0, -1.0)[:, :width]
        add(lambda: value_row(name, "fg_gt_boxes_padded", pixel, g["fg_gt_boxes_padded"],
                              TOL_BOX * float(sizes.max()), agreement="" if not extra_valid else "GT beyond width"))
        add(lambda: exact_row(name, "fg_gt_classes_padded", classes if not extra_valid else valid,
                              g["fg_gt_classes_padded"]))


def add_matching_rows(rows, g, ours):
    """The matchings: stage aux_i = decoder layer i, main = the last layer, enc = the two-stage head."""
    from src.losses.matcher import scipy_order

    name = rows.fixture

    def match_row(stage, b):
        matches = ours["matches"]
        index = {"main": matches.shape[0] - 2, "enc": matches.shape[0] - 1}.get(stage)
        if index is None:
            index = int(stage.split("_")[1])
        src_key, tgt_key = f"match_{stage}_src_{b}", f"match_{stage}_tgt_{b}"
        ref = np.stack([g[src_key], g[tgt_key]]) if tgt_key in g else g[src_key]
        if b >= matches.shape[1] or index >= matches.shape[0] - 2 and stage.startswith("aux"):
            return Row(name, f"match_{stage}_{b}", ok=False, note="the port has no such matching")
        q, t = scipy_order(matches[index, b])
        return exact_row(name, f"match_{stage}_{b}", np.stack([q, t]), ref)

    for key in sorted(g):
        m = re.fullmatch(r"match_(.+)_src_(\d+)", key)
        if m:
            rows.add(lambda: match_row(m[1], int(m[2])), f"match_{m[1]}_{m[2]}")
        elif re.fullmatch(r"match_(.+)_tgt_(\d+)", key) and key.replace("_tgt_", "_src_") not in g:
            g.mark(key)
            rows.append(Row(name, key, ok=False, note="no matching src array in the fixture"))


def train_loss_rows(name, meta, ours):
    """Every loss of the JSON's ``losses_unweighted`` (the port's weighted loss over its weight)
    and the total."""
    from src.losses.criterion import loss_keys, loss_weights

    rows = []
    port_losses = dict(zip(loss_keys(), zip(ours["losses"], loss_weights())))
    for key, ref in meta.get("losses_unweighted", {}).items():
        if key in port_losses:
            value, weight = port_losses[key]
            rows.append(loss_row(name, key, value / weight, ref))
        else:
            rows.append(Row(name, key, ok=False, note="the port computes no such loss"))
    if "total_loss" in meta:
        rows.append(loss_row(name, "total_loss", ours["total_loss"], meta["total_loss"]))
    return rows
