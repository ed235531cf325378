"""Compare the port against fixtures produced by the official PyTorch code.

    python -m src.tools.parity --golden DIR [--mode graph|pynative|both] [--kernels auto|kernel|pure]
        [--matcher auto|builtin|kernel|pyfunc]

Every fixture in DIR is compared (``model_eval_*``; ``model_train_*``: training forward with the
recorded denoising draws replayed, matchings, foreground targets and every loss; ``msda_core*``;
the converter contract ``state_dict_*``); a fixture this port cannot compare yet is listed as
"not compared", never skipped silently. One line per compared tensor: max abs error, max rel error (max abs error
over max |reference|), index agreement (common indices per image for selections). Exit status 1 when any comparison is outside tolerance or a fixture failed.

Comparison rules (the golden README): selections are compared as sets per image; rows that
belong to a selection are aligned by token id before comparing values; everything after the
two-stage top-k runs teacher-forced on the fixture's indices; detections are matched by
(query, class). The post-processing top-k may differ only in entries whose score is within
the score tolerance of the k-th score.
"""
import argparse
import glob
import importlib.util
import json
import os
import re
import sys
import time
from dataclasses import dataclass

import numpy as np

import src  # noqa: F401  (CPU start-up fix before MindSpore)

TOL_ENCODER = 1e-4     # backbone .. encoder head, foreground scores, proposals
TOL_DECODER = 3e-3     # decoder states and logits (teacher-forced proposals)
TOL_BOX = 3e-4         # normalized boxes and references
TOL_LOSS_REL = 1e-4   # every loss, relative
TOL_MSDA_OUT = 1e-5
TOL_MSDA_GRAD = 1e-4
TOL_MSDA_LOC_GRAD = 1e-3

# the operators the models are built with: the configs' default, the fused kernels (an error
# where they cannot be built), or pure MindSpore (the four-corner gather sampling core and the
# ops.gather / tensor_scatter_update token ops, what 'auto' falls back to)
KERNEL_CHOICES = {"auto": [], "kernel": ["kernels.msda=kernel", "kernels.token_ops=kernel"],
                  "pure": ["kernels.msda=gather", "kernels.token_ops=reference"]}


@dataclass
class Row:
    fixture: str
    name: str
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    agreement: str = ""
    tol: float = float("nan")
    ok: bool = True
    note: str = ""

    def line(self):
        status = "ok  " if self.ok else "FAIL"
        num = (f"abs {self.max_abs:9.2e}  rel {self.max_rel:9.2e}  tol {self.tol:7.1e}"
               if np.isfinite(self.max_abs) else " " * 46)
        return f"{status} {self.fixture:22s} {self.name:36s} {num}  {self.agreement:14s} {self.note}"


def _errors(ours, ref):
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        raise ValueError(f"shape {ours.shape} != reference {ref.shape}")
    finite = np.isfinite(ref)
    if not np.array_equal(finite, np.isfinite(ours)) or not np.array_equal(ref[~finite], ours[~finite]):
        return float("inf"), float("inf")
    if not finite.any():
        return 0.0, 0.0
    diff = np.abs(ours[finite] - ref[finite]).max()
    return float(diff), float(diff / max(np.abs(ref[finite]).max(), 1e-12))


def value_row(fixture, name, ours, ref, tol, agreement=""):
    try:
        max_abs, max_rel = _errors(ours, ref)
    except ValueError as e:
        return Row(fixture, name, ok=False, note=str(e))
    return Row(fixture, name, max_abs, max_rel, agreement, tol, bool(max_abs <= tol))


def exact_row(fixture, name, ours, ref):
    ours, ref = np.asarray(ours), np.asarray(ref)
    same = ours.shape == ref.shape and np.array_equal(ours, ref)
    return Row(fixture, name, agreement="exact" if same else "differs", ok=bool(same),
               note="" if same else f"ours {ours.ravel()[:6]} ref {ref.ravel()[:6]}")


def set_row(fixture, name, ours, ref):
    """Per-image set equality of index arrays (B,k)."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    if ours.shape != ref.shape:
        return Row(fixture, name, ok=False, note=f"shape {ours.shape} != reference {ref.shape}")
    agree = [len(set(o.tolist()) & set(r.tolist())) for o, r in zip(ours, ref)]
    total = ref.shape[1]
    ok = all(a == total for a in agree)
    return Row(fixture, name, agreement="sets " + " ".join(f"{a}/{total}" for a in agree), ok=ok)


def align_by_ids(values, ids, ref_ids):
    """Reorder rows of ``values`` (B,k,...) from our id order ``ids`` to the reference order."""
    out = np.empty_like(values)
    for b in range(values.shape[0]):
        pos = {int(t): i for i, t in enumerate(ids[b])}
        out[b] = values[b][[pos[int(t)] for t in ref_ids[b]]]
    return out


def _load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fixture_model_config(meta):
    """Config overrides for the model named by a fixture's ``model`` string, e.g.
    'focus_detr_r50_4scale (36ep config: pos T=20, offset 0)' or 'focus_detr_swin_tiny_224
    (4-scale, pos T=10000 offset -0.5)'; None when this port cannot build it."""
    text = meta.get("model", "")
    resnet = re.search(r"_r(50|101)_", text)
    swin = re.search(r"_(swin_(?:tiny|small|base|large)_(?:224|384))", text)
    if resnet:
        backbone = ["model.backbone.name=resnet", f"model.backbone.depth={resnet[1]}"]
    elif swin:
        backbone = ["model.backbone.name=swin", f"model.backbone.variant={swin[1]}"]
    else:
        return None
    pos = re.search(r"T=(\d+)\s*,?\s*offset\s*(-?[\d.]+)", text)
    temperature, offset = (int(pos[1]), float(pos[2])) if pos else (10000, -0.5)
    return backbone + [f"model.position_embedding.temperature={temperature}",
                       f"model.position_embedding.offset={offset}"]


def default_key_list(meta):
    text = meta.get("model", "")
    resnet = re.search(r"_r(50|101)_", text)
    return f"state_dict_r{resnet[1]}_4scale.json" if resnet else "state_dict_swin_t_4scale.json"


def golden_state_dict(golden_dir, entries, seed):
    """The official float state dict of a key list's ``entries`` (the fixture's deterministic
    weights, regenerated by the fixture directory's ``golden_weights.py``)."""
    gw = _load_module(os.path.join(golden_dir, "golden_weights.py"), "golden_weights")
    return gw.golden_weights({e["name"]: tuple(e["shape"]) for e in entries if e["dtype"].startswith("float")},
                             seed, {e["name"]: e["alias_of"] for e in entries if "alias_of" in e})


def build_golden_model(golden_dir, meta, num_classes, key_list=None, kernels="auto"):
    """The port's model, with the operators of ``KERNEL_CHOICES[kernels]``, filled with
    ``golden_weights`` through the converter."""
    import mindspore as ms
    from mindspore import Parameter, Tensor

    from src.checkpoint import official_to_port
    from src.config import load_config
    from src.modeling.build import build_model

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    overrides = fixture_model_config(meta) + [f"model.num_classes={num_classes}"] + KERNEL_CHOICES[kernels]
    cfg = load_config(os.path.join(root, "config", "base.yaml"), overrides)
    model = build_model(cfg.model, cfg.kernels)
    key_list = key_list or meta.get("weights_key_list") or default_key_list(meta)
    entries = json.load(open(os.path.join(golden_dir, key_list)))["entries"]
    weights = golden_state_dict(golden_dir, entries, meta["weight_seed"])
    shapes = {p.name: tuple(p.shape) for p in model.get_parameters()}
    port = official_to_port(weights, shapes)
    not_loaded, _ = ms.load_param_into_net(model, {k: Parameter(Tensor(v), name=k) for k, v in port.items()})
    if not_loaded:
        raise RuntimeError(f"parameters not loaded: {not_loaded}")
    return model


def batch_images(g):
    """Zero-padded (B,3,H,W) canvas of the fixture's raw images and their (B,2) sizes."""
    sizes = g["image_sizes"].astype(np.int32)
    height, width = (int(v) for v in g["padded_size"])
    images = np.zeros((len(sizes), 3, height, width), np.float32)
    for i, (h, w) in enumerate(sizes):
        images[i, :, :h, :w] = g[f"image_{i}"]
    return images, sizes


def run_eval_model(model, g, mode):
    """Teacher-forced eval forward + post-processing; returns {name: numpy}."""
    import mindspore as ms
    from mindspore import Tensor

    from src.modeling.focus_detr import named_outputs
    from src.modeling.postprocess import PostProcess

    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    model.set_train(False)
    model.set_capture(True)
    images, sizes = batch_images(g)
    result = named_outputs(model, model(Tensor(images), Tensor(sizes), None,
                                        Tensor(g["two_stage_topk_inds"].astype(np.int32))))
    num_select = g["postprocess_topk_values"].shape[1]
    post = PostProcess(num_select)(result["pred_logits"][-1], result["pred_boxes"][-1], Tensor(sizes),
                                   Tensor(g["orig_sizes"].astype(np.int32)))
    out = {k: v.asnumpy() if hasattr(v, "asnumpy") else v for k, v in result.items()}
    out["det"] = tuple(p.asnumpy() for p in post)
    return out


def compare_eval(name, g, ours):
    rows = []
    add = rows.append
    for key in sorted(k for k in ours if re.fullmatch(r"backbone_(res|p)\d", k)):
        if key in g:
            add(value_row(name, key, ours[key][:, g[f"{key}_channels"]], g[key], TOL_ENCODER))
            add(value_row(name, key + "_chmean", ours[key].mean((2, 3)), g[key + "_chmean"], TOL_ENCODER))
    levels = sum(1 for k in ours if re.fullmatch(r"neck_l\d", k))
    for lvl in range(levels):
        if f"neck_l{lvl}" in g:
            add(value_row(name, f"neck_l{lvl}", ours[f"neck_l{lvl}"][:, g["neck_channels"]], g[f"neck_l{lvl}"],
                          TOL_ENCODER))
            add(value_row(name, f"neck_l{lvl}_chmean", ours[f"neck_l{lvl}"].mean((2, 3)), g[f"neck_l{lvl}_chmean"],
                          TOL_ENCODER))
        if f"mask_l{lvl}" in g:
            add(exact_row(name, f"mask_l{lvl}", ours[f"mask_l{lvl}"], g[f"mask_l{lvl}"]))
        if f"pos_l{lvl}" in g:
            add(value_row(name, f"pos_l{lvl}", ours[f"pos_l{lvl}"][:, g["pos_channels"]], g[f"pos_l{lvl}"],
                          TOL_ENCODER))
    shapes = np.array([ours[f"neck_l{i}"].shape[2:] for i in range(levels)])
    add(exact_row(name, "spatial_shapes", shapes, g["spatial_shapes"]))
    if "level_start_index" in g:
        add(exact_row(name, "level_start_index", np.concatenate([[0], np.cumsum(shapes.prod(1))[:-1]]),
                      g["level_start_index"]))
    for key in ("valid_ratios", "encoder_reference_points", "temp_backbone_mask_prediction",
                "backbone_mask_prediction"):
        if key in g:
            add(value_row(name, key, ours[key], g[key], TOL_ENCODER))
    if "lvl_pos_embed_rownorm" in g:
        add(value_row(name, "lvl_pos_embed_rownorm", np.linalg.norm(ours["lvl_pos_embed"], axis=-1),
                      g["lvl_pos_embed_rownorm"], TOL_ENCODER))
    for key in ("valid_token_nums", "focus_token_nums", "encoder_foreground_topk"):
        if key in g:
            add(exact_row(name, key, ours[key], g[key]))
    layer = 0
    while f"foreground_inds_l{layer}" in g:
        ref_ids = g[f"foreground_inds_l{layer}"]
        ids = ours[f"foreground_inds_l{layer}"]
        row = set_row(name, f"foreground_inds_l{layer}", ids, ref_ids)
        add(row)
        if f"oesm_topk_global_l{layer}" in g:
            add(set_row(name, f"oesm_topk_global_l{layer}", ours[f"oesm_topk_global_l{layer}"],
                        g[f"oesm_topk_global_l{layer}"]))
        if row.ok and f"oesm_mc_score_l{layer}" in g:
            for key in ("oesm_score_max", "foreground_pre_layer", "oesm_mc_score"):
                add(value_row(name, f"{key}_l{layer}", align_by_ids(ours[f"{key}_l{layer}"], ids, ref_ids),
                              g[f"{key}_l{layer}"], TOL_ENCODER))
            out = align_by_ids(ours[f"enc_layer_out_l{layer}"], ids, ref_ids)
            add(value_row(name, f"enc_layer_out_l{layer}", out[..., g["enc_layer_channels"]],
                          g[f"enc_layer_out_l{layer}"], TOL_ENCODER))
            add(value_row(name, f"enc_layer_out_rownorm_l{layer}", np.linalg.norm(out, axis=-1),
                          g[f"enc_layer_out_rownorm_l{layer}"], TOL_ENCODER))
        layer += 1
    add(value_row(name, "memory", ours["memory"][..., g["memory_channels"]], g["memory"], TOL_ENCODER))
    add(value_row(name, "memory_rownorm", np.linalg.norm(ours["memory"], axis=-1), g["memory_rownorm"], TOL_ENCODER))
    if "output_proposals" in g:
        add(value_row(name, "output_proposals", ours["output_proposals"], g["output_proposals"], TOL_ENCODER))
    if "enc_outputs_class_max" in g:
        add(value_row(name, "enc_outputs_class_max", ours["enc_outputs_class"].max(-1), g["enc_outputs_class_max"],
                      TOL_ENCODER))
        add(value_row(name, "enc_outputs_class_sub", ours["enc_outputs_class"][..., g["enc_class_subset"]],
                      g["enc_outputs_class_sub"], TOL_ENCODER))
        add(value_row(name, "enc_outputs_coord_unact", ours["enc_outputs_coord_unact"], g["enc_outputs_coord_unact"],
                      TOL_ENCODER))
    add(set_row(name, "two_stage_topk_inds", ours["two_stage_topk_inds"], g["two_stage_topk_inds"]))
    if "interm_pred_boxes" in g:
        add(value_row(name, "interm_pred_boxes", ours["enc_boxes"], g["interm_pred_boxes"], TOL_BOX))
    if "interm_pred_logits_sub" in g:
        add(value_row(name, "interm_pred_logits_sub", ours["enc_logits"][..., g["aux_class_subset"]],
                      g["interm_pred_logits_sub"], TOL_DECODER))
    if "decoder_init_reference" in g:
        add(value_row(name, "decoder_init_reference", ours["decoder_init_reference"], g["decoder_init_reference"],
                      TOL_BOX))
        hidden = ours["decoder_hidden_states"]
        add(value_row(name, "decoder_hidden_states", hidden[..., g["decoder_channels"]], g["decoder_hidden_states"],
                      TOL_DECODER))
        add(value_row(name, "decoder_hidden_rownorm", np.linalg.norm(hidden, axis=-1), g["decoder_hidden_rownorm"],
                      TOL_DECODER))
        add(value_row(name, "decoder_references", ours["decoder_references"], g["decoder_references"], TOL_BOX))
    add(value_row(name, "pred_logits", ours["pred_logits"][-1], g["pred_logits"], TOL_DECODER))
    add(value_row(name, "pred_boxes", ours["pred_boxes"][-1], g["pred_boxes"], TOL_BOX))
    if "aux_pred_logits_sub" in g:
        add(value_row(name, "aux_pred_logits_sub", ours["pred_logits"][:-1][..., g["aux_class_subset"]],
                      g["aux_pred_logits_sub"], TOL_DECODER))
        add(value_row(name, "aux_pred_boxes", ours["pred_boxes"][:-1], g["aux_pred_boxes"], TOL_BOX))
    if "postprocess_topk_values" in g:
        rows.extend(compare_detections(name, g, ours["det"]))
    return rows


def fixture_targets(g):
    """The fixture's criterion targets as the padded batch the training loop feeds: (B,M,4)
    normalized cxcywh, (B,M) labels, (B,M) validity, M = max(1, most boxes in an image)."""
    counts = [len(g[f"target_labels_{b}"]) for b in range(len(g["image_sizes"]))]
    width = max(1, max(counts))
    boxes = np.zeros((len(counts), width, 4), np.float32)
    labels = np.zeros((len(counts), width), np.int32)
    valid = np.zeros((len(counts), width), bool)
    for b, n in enumerate(counts):
        boxes[b, :n] = g[f"target_boxes_{b}"].reshape(n, 4)
        labels[b, :n] = g[f"target_labels_{b}"]
        valid[b, :n] = True
    return boxes, labels, valid


def fixture_denoising(g, num_classes, dn_cfg):
    """The production denoising builder replaying the fixture's recorded random draws."""
    from src.modeling.denoising import DenoisingDraws, prepare_denoising

    boxes, labels, valid = fixture_targets(g)
    draws = DenoisingDraws(*(g[k] for k in ("rand_label_p", "rand_new_label", "rand_box_sign01", "rand_box_part")))
    return prepare_denoising(boxes, labels, valid, num_classes=num_classes, dn_number=dn_cfg["dn_number"],
                             label_noise_ratio=dn_cfg["label_noise_ratio"], box_noise_scale=dn_cfg["box_noise_scale"],
                             num_queries=g["two_stage_topk_inds"].shape[1], draws=draws)


def run_train_model(model, g, meta, mode, matcher="auto"):
    """Training-mode forward (denoising replayed, two-stage top-k teacher-forced) and the
    criterion on its outputs (assignment backend ``matcher``: a ``kernels.matcher`` value)."""
    import mindspore as ms
    from mindspore import Tensor

    from src.losses.assignment import build_assignment
    from src.losses.criterion import FocusDETRCriterion
    from src.losses.matcher import HungarianMatcher
    from src.modeling.focus_detr import named_outputs

    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    model.set_train(True)
    model.set_capture(True)
    images, sizes = batch_images(g)
    dn = fixture_denoising(g, model.num_classes, meta["dn"])
    raw = model(Tensor(images), Tensor(sizes), tuple(Tensor(a) for a in dn.model_inputs()),
                Tensor(g["two_stage_topk_inds"].astype(np.int32)))
    result = named_outputs(model, raw)
    crit = meta["criterion"]
    criterion = FocusDETRCriterion(num_classes=model.num_classes, focal_alpha=crit["focal_alpha"],
                                   focal_gamma=crit["focal_gamma"], fg_strides=tuple(crit["fg_strides"]),
                                   fg_limit_ranges=tuple(tuple(r) for r in crit["fg_limit_range"]),
                                   matcher=HungarianMatcher(assignment=build_assignment(matcher)))
    boxes, labels, valid = fixture_targets(g)
    total, losses, matches, fg_targets = criterion(raw[0], Tensor(boxes), Tensor(labels), Tensor(valid),
                                                   Tensor(sizes), tuple(images.shape[2:]),
                                                   tuple(Tensor(a) for a in dn.criterion_inputs()))
    out = {k: v.asnumpy() if hasattr(v, "asnumpy") else v for k, v in result.items()}
    out.update(dn=dn, total_loss=float(total.asnumpy()), losses=[float(v.asnumpy()) for v in losses],
               matches=matches.asnumpy(), fg_targets=fg_targets.asnumpy())
    return out


def compare_train(name, g, meta, ours):
    """The eval comparisons on the training forward, the denoising queries, the criterion
    inputs it produces, the matchings, the foreground targets and every loss."""
    from src.losses.criterion import loss_keys, loss_weights
    from src.losses.matcher import scipy_order

    dn = ours["dn"]
    pad = g["dn_input_query_bbox"].shape[1]
    queries = g["two_stage_topk_inds"].shape[1]
    keep = np.r_[0:pad, dn.labels.shape[1]:dn.labels.shape[1] + queries]  # our extra slots removed
    # decoder tensors hold the denoising slots too: compare the reference's pad + queries rows
    trimmed = dict(ours, decoder_init_reference=ours["decoder_init_reference"][:, keep],
                   decoder_hidden_states=ours["decoder_hidden_states"][:, :, keep],
                   decoder_references=ours["decoder_references"][:, :, keep])
    rows = compare_eval(name, g, trimmed)
    rows += [exact_row(name, "dn_noised_labels", dn.noised_labels, g["dn_noised_labels"]),
             value_row(name, "dn_known_bbox_expand", dn.noised_boxes, g["dn_known_bbox_expand"], TOL_BOX),
             value_row(name, "dn_input_query_bbox", dn.boxes_unact[:, :pad], g["dn_input_query_bbox"], TOL_BOX),
             exact_row(name, "dn_attn_mask", dn.attn_mask[np.ix_(keep, keep)], g["dn_attn_mask"]),
             exact_row(name, "dn_meta", [dn.single_padding, dn.dn_num],
                       [int(g["dn_meta_single_padding"]), int(g["dn_meta_dn_num"])]),
             value_row(name, "aux_pred_logits", ours["pred_logits"][:-1], g["aux_pred_logits"], TOL_DECODER),
             value_row(name, "aux_pred_boxes", ours["pred_boxes"][:-1], g["aux_pred_boxes"], TOL_BOX),
             value_row(name, "enc_pred_logits", ours["enc_logits"], g["enc_pred_logits"], TOL_DECODER),
             value_row(name, "enc_pred_boxes", ours["enc_boxes"], g["enc_pred_boxes"], TOL_BOX),
             value_row(name, "dn_pred_logits", ours["dn_logits"][:, :, :pad], g["dn_pred_logits"], TOL_DECODER),
             value_row(name, "dn_pred_boxes", ours["dn_boxes"][:, :, :pad], g["dn_pred_boxes"], TOL_BOX),
             exact_row(name, "fg_targets", ours["fg_targets"].astype(np.int64), g["fg_targets"])]
    stages = tuple(f"aux_{i}" for i in range(ours["matches"].shape[0] - 2)) + ("main", "enc")
    for row, stage in enumerate(stages):
        for b in range(ours["matches"].shape[1]):
            if f"match_{stage}_src_{b}" in g:
                queries, targets = scipy_order(ours["matches"][row, b])
                rows.append(exact_row(name, f"match_{stage}_{b}", np.stack([queries, targets]),
                                      np.stack([g[f"match_{stage}_src_{b}"], g[f"match_{stage}_tgt_{b}"]])))
    for key, value, weight in zip(loss_keys(), ours["losses"], loss_weights()):
        rows.append(loss_row(name, key, value / weight, meta["losses_unweighted"][key]))
    rows.append(loss_row(name, "total_loss", ours["total_loss"], meta["total_loss"]))
    return rows


def loss_row(fixture, name, ours, ref):
    err = abs(ours - ref)
    rel = err / max(abs(ref), 1e-12)
    return Row(fixture, name, err, rel, f"{ours:.6g}", TOL_LOSS_REL, bool(rel <= TOL_LOSS_REL or err <= 1e-8))


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


def msda_core_outputs(core, spatial_shapes, value, locations, weights, grad_output):
    """[output, grad_value, grad_sampling_locations, grad_attention_weights] (numpy) of a sampling
    core on numpy inputs; the gradients are the vector-Jacobian products with ``grad_output``."""
    import mindspore as ms
    from mindspore import Tensor, nn

    class Weighted(nn.Cell):
        def __init__(self):
            super().__init__()
            self.core = core

        def construct(self, v, loc, w, g):
            return (self.core(v, spatial_shapes, loc, w) * g).sum()

    inputs = [Tensor(a) for a in (value, locations, weights)]
    out = core(inputs[0], spatial_shapes, *inputs[1:]).asnumpy()
    grads = ms.grad(Weighted(), grad_position=(0, 1, 2))(*inputs, Tensor(grad_output))
    return [out] + [gr.asnumpy() for gr in grads]


def compare_msda(name, g, mode, impl="reference"):
    import mindspore as ms

    from src.layers.ms_deform_attn import build_msda_core

    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    shapes = tuple(tuple(int(v) for v in s) for s in g["spatial_shapes"])
    out, *grads = msda_core_outputs(build_msda_core(impl), shapes, g["value"], g["sampling_locations"],
                                    g["attention_weights"], g["grad_output"])
    return [value_row(name, "output", out, g["output"], TOL_MSDA_OUT),
            value_row(name, "grad_value", grads[0], g["grad_value"], TOL_MSDA_GRAD),
            value_row(name, "grad_sampling_locations", grads[1], g["grad_sampling_locations"], TOL_MSDA_LOC_GRAD),
            value_row(name, "grad_attention_weights", grads[2], g["grad_attention_weights"], TOL_MSDA_GRAD)]


def compare_key_list(name, path, golden_dir):
    """The converter contract: every official key consumed, every port parameter filled."""
    from src.checkpoint import CheckpointMismatch, official_to_port

    entries = json.load(open(path))["entries"]
    meta = {"model": key_list_model(name), "weight_seed": 0}
    if fixture_model_config(meta) is None:
        return [Row(name, "converter round-trip", ok=True, agreement="not compared",
                    note="backbone not supported by this port yet")]
    model = build_golden_model(golden_dir, meta, num_classes=_num_classes(entries), key_list=os.path.basename(path))
    shapes = {p.name: tuple(p.shape) for p in model.get_parameters()}
    weights = golden_state_dict(golden_dir, entries, 0)
    # integer buffers (Swin's relative_position_index) are structure: fed in to prove they are consumed
    weights.update({e["name"]: np.zeros(e["shape"], e["dtype"]) for e in entries if not e["dtype"].startswith("float")})
    try:
        port = official_to_port(weights, shapes)
    except CheckpointMismatch as e:
        return [Row(name, "converter round-trip", ok=False, note=str(e)[:300])]
    return [Row(name, "converter round-trip", ok=len(port) == len(shapes),
                agreement=f"{len(entries)} keys -> {len(port)} params")]


def key_list_model(stem):
    """'state_dict_r101_4scale' -> '_r101_', 'state_dict_swin_t_4scale' -> '_swin_tiny_224'."""
    m = re.match(r"state_dict_(r\d+|swin_[tsbl])_", stem)
    if not m:
        return ""
    swin = {"swin_t": "swin_tiny_224", "swin_s": "swin_small_224", "swin_b": "swin_base_384", "swin_l": "swin_large_384"}
    return f"_{swin.get(m[1], m[1])}_"


def _num_classes(entries):
    return next(e["shape"][0] for e in entries if e["name"] == "label_enc.weight")


def compare_fixture(path, golden_dir, mode, kernels="auto", matcher="auto"):
    """Rows for one fixture file; a fixture that cannot be compared gives one 'not compared' row."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if path.endswith(".json"):
        return compare_key_list(stem, path, golden_dir)
    g = dict(np.load(path))
    meta_path = os.path.splitext(path)[0] + ".json"
    meta = json.load(open(meta_path)) if os.path.isfile(meta_path) else {}
    label = f"{stem}[{mode}]"
    if stem.startswith("msda_core"):
        return compare_msda(label, g, mode)
    if stem.startswith("model_eval_") and fixture_model_config(meta):
        model = build_golden_model(golden_dir, meta, num_classes=g["pred_logits"].shape[-1], kernels=kernels)
        return compare_eval(label, g, run_eval_model(model, g, mode))
    if stem.startswith("model_train_") and fixture_model_config(meta):
        model = build_golden_model(golden_dir, meta, num_classes=g["pred_logits"].shape[-1], kernels=kernels)
        return compare_train(label, g, meta, run_train_model(model, g, meta, mode, matcher))
    note = (f"backbone of {meta.get('model', '?')!r} not supported yet" if stem.startswith("model_")
            else "unknown fixture kind")
    return [Row(label, "-", ok=True, agreement="not compared", note=note)]


def fixture_paths(golden_dir):
    arrays = sorted(glob.glob(os.path.join(golden_dir, "*.npz")))
    key_lists = sorted(glob.glob(os.path.join(golden_dir, "state_dict_*.json")))
    return arrays, key_lists


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden", required=True, help="fixture directory (npz + json + golden_weights.py)")
    parser.add_argument("--mode", choices=("graph", "pynative", "both"), default="both")
    parser.add_argument("--kernels", choices=tuple(KERNEL_CHOICES), default="auto",
                        help="operators of the models: the config default, the fused kernels, or pure MindSpore")
    parser.add_argument("--matcher", choices=("auto", "builtin", "kernel", "pyfunc"), default="auto",
                        help="assignment backend of the training fixtures' matcher (kernels.matcher)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.golden):
        parser.error(f"--golden: no such directory {args.golden}")
    if not os.path.isfile(os.path.join(args.golden, "golden_weights.py")):
        parser.error(f"--golden: {args.golden} has no golden_weights.py")
    arrays, key_lists = fixture_paths(args.golden)
    if not arrays and not key_lists:
        parser.error(f"--golden: no fixtures (*.npz, state_dict_*.json) in {args.golden}")
    modes = ("graph", "pynative") if args.mode == "both" else (args.mode,)
    rows = []
    for path in key_lists:
        rows.extend(_safe(compare_fixture, path, args.golden, modes[0]))
        print(*(r.line() for r in rows[-1:]), sep="\n", flush=True)
    for path in arrays:
        for mode in modes:
            start = time.time()
            new = _safe(compare_fixture, path, args.golden, mode, args.kernels, args.matcher)
            rows.extend(new)
            print("\n".join(r.line() for r in new), flush=True)
            print(f"     {os.path.basename(path)} [{mode}] took {time.time() - start:.1f} s", flush=True)
    failed = [r for r in rows if not r.ok]
    skipped = [r for r in rows if r.agreement == "not compared"]
    print(f"parity: {len(rows) - len(skipped)} comparisons, {len(failed)} failed, {len(skipped)} fixture(s) not compared")
    return 1 if failed else 0


def _safe(fn, path, *args):
    try:
        return fn(path, *args)
    except Exception as e:  # a broken fixture is a failure of that fixture, not of the run
        return [Row(os.path.basename(path), "-", ok=False, note=f"{type(e).__name__}: {e}"[:400])]


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # skip MindSpore's noisy Cell.__del__ at interpreter exit
