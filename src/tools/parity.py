"""Compare the port against fixtures produced by the official PyTorch code.

    python -m src.tools.parity --golden DIR [--mode graph|pynative|both] [--kernels auto|kernel|pure]
        [--matcher auto|builtin|kernel|pyfunc] [--canvas H W] [--allow-partial] [--verbose]

Every fixture in DIR is compared: ``model_eval_*``; ``model_train_*`` (training forward with the
recorded denoising draws replayed, matchings, foreground targets and every loss);
``model_grad_*`` (the gradient of its training fixture's total loss w.r.t. every trainable
parameter, one ``value_and_grad`` of model + criterion, mapped to the official keys: norms, random
projections, full gradients, global norm, parameters without gradient); ``msda_core*`` (with the
sampling cores ``--kernels`` selects); the converter contract ``state_dict_*``. The fixture's
keys drive every comparison: an array whose port counterpart is missing is a FAIL row, and every
array no comparison reads (and every fixture this port cannot compare) is listed by name as
"not compared". One line per compared tensor: max abs error, max rel error (max abs error over
max |reference|; for gradients the error over the reference norm), the tolerance, index
agreement. Per-tensor gradient rows are printed when failing or with ``--verbose``; per-group
maxima always. Exit status 1 when any comparison is outside tolerance, a fixture failed, or
(unless ``--allow-partial``) anything was left uncompared.

Comparison rules (the golden README): selections are compared as sets per image; rows that
belong to a selection are aligned by token id before comparing values; everything after the
two-stage top-k runs teacher-forced on the fixture's indices; detections are matched by
(query, class). The post-processing top-k may differ only in entries whose score is within
the score tolerance of the k-th score. Gradient tolerances are the fixture JSON's
(``tolerances`` per ``params[].group``).

``--canvas H W`` places every model fixture's batch at the top-left of a larger H x W canvas
(``model.canvas: extent`` must make it change no result) and compares what does not depend on
the canvas layout: the detections of ``model_eval_*`` and the losses and gradients of
``model_grad_*``. Everything else is listed as not compared (so add ``--allow-partial``).
"""
import argparse
import glob
import importlib.util
import json
import math
import os
import re
import sys
import time
import zlib
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
    detail: bool = False  # one of many per-tensor rows: printed when failing or with --verbose
    info: bool = False    # a note (inputs consumed, pairing, counts), not a comparison

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
    """Rows of ``values`` (B,R,...) in our id order ``ids`` (B,k), k <= R, taken in the reference
    order ``ref_ids`` (B,k_ref): (B,k_ref,...)."""
    out = []
    for b in range(values.shape[0]):
        pos = {int(t): i for i, t in enumerate(ids[b])}
        out.append(values[b][[pos[int(t)] for t in ref_ids[b]]])
    return np.stack(out)


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


def build_golden_model(golden_dir, meta, num_classes, key_list=None, kernels="auto", overrides=()):
    """The port's model, with the operators of ``KERNEL_CHOICES[kernels]`` and the config
    ``overrides``, filled with ``golden_weights`` through the converter."""
    import mindspore as ms
    from mindspore import Parameter, Tensor

    from src.checkpoint import official_to_port
    from src.config import load_config
    from src.modeling.build import build_model

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    overrides = (fixture_model_config(meta) + [f"model.num_classes={num_classes}"] + KERNEL_CHOICES[kernels]
                 + list(overrides))
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


def batch_images(g, canvas=None):
    """Zero-padded (B,3,H,W) canvas of the fixture's raw images and their (B,2) sizes; the
    canvas is the fixture's padded size unless ``canvas`` (H, W) is given."""
    sizes = g["image_sizes"].astype(np.int32)
    height, width = canvas or (int(v) for v in g["padded_size"])
    images = np.zeros((len(sizes), 3, height, width), np.float32)
    for i, (h, w) in enumerate(sizes):
        images[i, :, :h, :w] = g[f"image_{i}"]
    return images, sizes


def canvas_token_ids(ids, padded_hw, canvas_hw, strides=(8, 16, 32, 64)):
    """Token ids of the official (row-major, level-major) layout of a ``padded_hw`` batch moved
    to the layout of a larger ``canvas_hw``: the same cell of the same level."""
    shapes = [(math.ceil(padded_hw[0] / s), math.ceil(padded_hw[1] / s)) for s in strides]
    canvas_shapes = [(math.ceil(canvas_hw[0] / s), math.ceil(canvas_hw[1] / s)) for s in strides]
    starts = np.cumsum([0] + [h * w for h, w in shapes])
    canvas_starts = np.cumsum([0] + [h * w for h, w in canvas_shapes])
    level = np.searchsorted(starts, ids, side="right") - 1
    local = ids - starts[level]
    width = np.array([w for _, w in shapes])[level]
    canvas_width = np.array([w for _, w in canvas_shapes])[level]
    return (canvas_starts[level] + local // width * canvas_width + local % width).astype(ids.dtype)


def eval_batch(g, canvas_extent, canvas=None):
    """The eval fixture's model inputs: its batch was run by the official model at batch > 1,
    where each image's padding to the batch canvas is part of the image. ``canvas: padded``
    does the same; with ``canvas: extent`` (each image alone) the padding is filled with the
    pixel mean -- 0 after normalization, as the official padding -- and the image size given is
    the padded size. A larger ``canvas`` (H, W) holds them at the top-left. Returns images, the
    sizes for the model and the sizes for post-processing."""
    from src.modeling.focus_detr import PIXEL_MEAN

    images, sizes = batch_images(g, canvas)
    if not canvas_extent:
        return images, sizes, sizes
    padded = tuple(int(v) for v in g["padded_size"])
    for i, (h, w) in enumerate(sizes):
        pad = np.zeros(images.shape[2:], bool)
        pad[:padded[0], :padded[1]] = True
        pad[:h, :w] = False
        images[i][:, pad] = np.asarray(PIXEL_MEAN, np.float32)[:, None]
    return images, np.tile(np.array(padded, np.int32), (len(sizes), 1)), sizes


def teacher_topk(g, canvas=None):
    """The fixture's two-stage top-k as int32 token ids of the port's canvas."""
    ids = g["two_stage_topk_inds"].astype(np.int32)
    return ids if canvas is None else canvas_token_ids(ids, tuple(int(v) for v in g["padded_size"]), canvas)


def run_eval_model(model, g, mode, canvas=None):
    """Teacher-forced eval forward + post-processing on the fixture's canvas or a larger
    ``canvas`` (H, W); returns {name: numpy}."""
    import mindspore as ms
    from mindspore import Tensor

    from src.modeling.focus_detr import named_outputs
    from src.modeling.postprocess import PostProcess

    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    model.set_train(False)
    model.set_capture(True)
    images, model_sizes, sizes = eval_batch(g, model.canvas_extent, canvas)
    result = named_outputs(model, model(Tensor(images), Tensor(model_sizes), None, Tensor(teacher_topk(g, canvas))))
    num_select = g["postprocess_topk_values"].shape[1]
    post = PostProcess(num_select)(result["pred_logits"][-1], result["pred_boxes"][-1], Tensor(sizes),
                                   Tensor(g["orig_sizes"].astype(np.int32)))
    out = {k: v.asnumpy() if hasattr(v, "asnumpy") else v for k, v in result.items()}
    out["det"] = tuple(p.asnumpy() for p in post)
    return out


class MissingOutput(KeyError):
    """A fixture array whose port counterpart the port did not produce."""


class PortOutputs(dict):
    """The port's outputs by fixture name; a missing one raises ``MissingOutput``."""

    def __missing__(self, key):
        raise MissingOutput(key)


class FixtureArrays(dict):
    """A fixture's arrays, recording which ones the comparison read (``used``): what is left
    is reported as not compared."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.used = set()

    def __getitem__(self, key):
        self.used.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        return self[key] if key in self else default

    def mark(self, *keys):
        self.used.update(k for k in keys if k in self)

    def unused(self):
        return sorted(set(self) - self.used)


class Rows(list):
    """Rows of one fixture; ``add(make, name)`` turns a missing port output into a FAIL row."""

    def __init__(self, fixture):
        super().__init__()
        self.fixture = fixture

    def add(self, make, name=None):
        try:
            row = make()
        except MissingOutput as e:
            row = Row(self.fixture, name or str(e.args[0]), ok=False, note=f"port output {e.args[0]!r} missing")
        if isinstance(row, list):
            self.extend(row)
        else:
            self.append(row)
        return self[-1]


def numbered(g, pattern):
    """Fixture keys fully matching ``pattern`` (first group an integer), sorted by that number."""
    found = [(m, k) for k in g for m in [re.fullmatch(pattern, k)] if m]
    return [(int(m[1]), k) for m, k in sorted(found, key=lambda mk: (int(mk[0][1]), mk[1]))]


def compare_eval(name, g, ours):
    """Every comparison the eval layout allows, driven by the fixture's keys: an array the
    fixture holds and the port does not produce is a FAIL row."""
    g = g if isinstance(g, FixtureArrays) else FixtureArrays(g)
    ours = PortOutputs(ours)
    rows = Rows(name)
    add = rows.add
    for _, key in numbered(g, r"backbone_(?:res|p)(\d+)"):
        add(lambda: value_row(name, key, ours[key][:, g[f"{key}_channels"]], g[key], TOL_ENCODER), key)
    for _, key in numbered(g, r"backbone_(?:res|p)(\d+)_chmean"):
        full = key[:-len("_chmean")]
        add(lambda: value_row(name, key, ours[full].mean((2, 3)), g[key], TOL_ENCODER), key)
    for lvl, key in numbered(g, r"neck_l(\d+)"):
        add(lambda: value_row(name, key, ours[key][:, g["neck_channels"]], g[key], TOL_ENCODER), key)
    for lvl, key in numbered(g, r"neck_l(\d+)_chmean"):
        add(lambda: value_row(name, key, ours[f"neck_l{lvl}"].mean((2, 3)), g[key], TOL_ENCODER), key)
    for lvl, key in numbered(g, r"mask_l(\d+)"):
        add(lambda: exact_row(name, key, ours[key], g[key]), key)
    for lvl, key in numbered(g, r"pos_l(\d+)"):
        add(lambda: value_row(name, key, ours[key][:, g["pos_channels"]], g[key], TOL_ENCODER), key)

    def neck_shapes(full=False):
        levels = len(g["spatial_shapes"]) if "spatial_shapes" in g else len(numbered(g, r"neck_l(\d+)"))
        return np.array([ours[f"neck_l{i}"].shape if full else ours[f"neck_l{i}"].shape[2:] for i in range(levels)])

    if "spatial_shapes" in g:
        add(lambda: exact_row(name, "spatial_shapes", neck_shapes(), g["spatial_shapes"]), "spatial_shapes")
    if "level_start_index" in g:
        add(lambda: exact_row(name, "level_start_index",
                              np.concatenate([[0], np.cumsum(neck_shapes().prod(1))[:-1]]), g["level_start_index"]),
            "level_start_index")
    if "srcs_shapes" in g:  # the neck maps the criterion receives (it uses their shapes)
        add(lambda: exact_row(name, "srcs_shapes", neck_shapes(full=True), g["srcs_shapes"]), "srcs_shapes")
    for key in ("valid_ratios", "encoder_reference_points", "temp_backbone_mask_prediction",
                "backbone_mask_prediction"):
        if key in g:
            add(lambda: value_row(name, key, ours[key], g[key], TOL_ENCODER), key)
    if "lvl_pos_embed_rownorm" in g:
        add(lambda: value_row(name, "lvl_pos_embed_rownorm", np.linalg.norm(ours["lvl_pos_embed"], axis=-1),
                              g["lvl_pos_embed_rownorm"], TOL_ENCODER), "lvl_pos_embed_rownorm")
    for key in ("valid_token_nums", "focus_token_nums"):
        if key in g:
            add(lambda: exact_row(name, key, ours[key], g[key]), key)
    if "encoder_foreground_topk" in g:  # the port holds each image's budget: here all the batch's
        add(lambda: exact_row(name, "encoder_foreground_topk", ours["encoder_foreground_topk"],
                              np.broadcast_to(g["encoder_foreground_topk"], ours["encoder_foreground_topk"].shape)),
            "encoder_foreground_topk")
    for layer, key in numbered(g, r"foreground_inds_l(\d+)"):
        rows.extend(compare_encoder_layer(name, g, ours, layer))
    for key in ("memory", "memory_rownorm"):
        if key in g:
            ours_key = (lambda: ours["memory"][..., g["memory_channels"]]) if key == "memory" else (
                lambda: np.linalg.norm(ours["memory"], axis=-1))
            add(lambda: value_row(name, key, ours_key(), g[key], TOL_ENCODER), key)
    if "output_proposals" in g:
        add(lambda: value_row(name, "output_proposals", ours["output_proposals"], g["output_proposals"], TOL_ENCODER),
            "output_proposals")
    if "enc_outputs_class_max" in g:
        add(lambda: value_row(name, "enc_outputs_class_max", ours["enc_outputs_class"].max(-1),
                              g["enc_outputs_class_max"], TOL_ENCODER), "enc_outputs_class_max")
    if "enc_outputs_class_argmax" in g:
        add(lambda: exact_row(name, "enc_outputs_class_argmax", ours["enc_outputs_class"].argmax(-1),
                              g["enc_outputs_class_argmax"]), "enc_outputs_class_argmax")
    if "enc_outputs_class_sub" in g:
        add(lambda: value_row(name, "enc_outputs_class_sub", ours["enc_outputs_class"][..., g["enc_class_subset"]],
                              g["enc_outputs_class_sub"], TOL_ENCODER), "enc_outputs_class_sub")
    if "enc_outputs_coord_unact" in g:
        add(lambda: value_row(name, "enc_outputs_coord_unact", ours["enc_outputs_coord_unact"],
                              g["enc_outputs_coord_unact"], TOL_ENCODER), "enc_outputs_coord_unact")
    if "two_stage_topk_inds" in g:
        add(lambda: set_row(name, "two_stage_topk_inds", ours["two_stage_topk_inds"], g["two_stage_topk_inds"]),
            "two_stage_topk_inds")
    if "interm_pred_boxes" in g:
        add(lambda: value_row(name, "interm_pred_boxes", ours["enc_boxes"], g["interm_pred_boxes"], TOL_BOX),
            "interm_pred_boxes")
    if "interm_pred_logits_sub" in g:  # the encoder head on the selected proposals: encoder tolerance
        add(lambda: value_row(name, "interm_pred_logits_sub", ours["enc_logits"][..., g["aux_class_subset"]],
                              g["interm_pred_logits_sub"], TOL_ENCODER), "interm_pred_logits_sub")
    if "decoder_init_reference" in g:
        add(lambda: value_row(name, "decoder_init_reference", ours["decoder_init_reference"],
                              g["decoder_init_reference"], TOL_BOX), "decoder_init_reference")
    if "decoder_hidden_states" in g:
        add(lambda: value_row(name, "decoder_hidden_states", ours["decoder_hidden_states"][..., g["decoder_channels"]],
                              g["decoder_hidden_states"], TOL_DECODER), "decoder_hidden_states")
    if "decoder_hidden_rownorm" in g:
        add(lambda: value_row(name, "decoder_hidden_rownorm", np.linalg.norm(ours["decoder_hidden_states"], axis=-1),
                              g["decoder_hidden_rownorm"], TOL_DECODER), "decoder_hidden_rownorm")
    if "decoder_references" in g:
        add(lambda: value_row(name, "decoder_references", ours["decoder_references"], g["decoder_references"],
                              TOL_BOX), "decoder_references")
    if "pred_logits" in g:
        add(lambda: value_row(name, "pred_logits", ours["pred_logits"][-1], g["pred_logits"], TOL_DECODER),
            "pred_logits")
    if "pred_boxes" in g:
        add(lambda: value_row(name, "pred_boxes", ours["pred_boxes"][-1], g["pred_boxes"], TOL_BOX), "pred_boxes")
    if "aux_pred_logits_sub" in g:
        add(lambda: value_row(name, "aux_pred_logits_sub", ours["pred_logits"][:-1][..., g["aux_class_subset"]],
                              g["aux_pred_logits_sub"], TOL_DECODER), "aux_pred_logits_sub")
    if "aux_pred_logits" in g:
        add(lambda: value_row(name, "aux_pred_logits", ours["pred_logits"][:-1], g["aux_pred_logits"], TOL_DECODER),
            "aux_pred_logits")
    if "aux_pred_boxes" in g:
        add(lambda: value_row(name, "aux_pred_boxes", ours["pred_boxes"][:-1], g["aux_pred_boxes"], TOL_BOX),
            "aux_pred_boxes")
    if "postprocess_topk_values" in g or "postprocess_topk_indices" in g:
        add(lambda: compare_detections(name, g, ours["det"]), "postprocess_topk_indices")
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


def train_criterion(model, meta, matcher="auto"):
    """The criterion with the fixture's settings (``meta['criterion']``) and assignment backend
    ``matcher`` (a ``kernels.matcher`` value)."""
    from src.losses.assignment import build_assignment
    from src.losses.criterion import FocusDETRCriterion
    from src.losses.matcher import HungarianMatcher

    crit = meta["criterion"]
    return FocusDETRCriterion(num_classes=model.num_classes, focal_alpha=crit["focal_alpha"],
                              focal_gamma=crit["focal_gamma"], fg_strides=tuple(crit["fg_strides"]),
                              fg_limit_ranges=tuple(tuple(r) for r in crit["fg_limit_range"]),
                              matcher=HungarianMatcher(assignment=build_assignment(matcher)))


def train_inputs(model, g, meta, canvas=None):
    """(model inputs, criterion targets, denoising batch) of a training fixture: the images on
    their canvas (or a larger ``canvas`` (H, W)), the replayed denoising queries, the
    teacher-forced two-stage top-k, the GT."""
    from mindspore import Tensor

    images, sizes = batch_images(g, canvas)
    dn = fixture_denoising(g, model.num_classes, meta["dn"])
    model_in = (Tensor(images), Tensor(sizes), tuple(Tensor(a) for a in dn.model_inputs()),
                Tensor(teacher_topk(g, canvas)))
    boxes, labels, valid = fixture_targets(g)
    targets = (Tensor(boxes), Tensor(labels), Tensor(valid), Tensor(sizes), tuple(images.shape[2:]),
               tuple(Tensor(a) for a in dn.criterion_inputs()))
    return model_in, targets, dn


def run_train_model(model, g, meta, mode, matcher="auto"):
    """Training-mode forward (denoising replayed, two-stage top-k teacher-forced) and the
    criterion on its outputs (assignment backend ``matcher``: a ``kernels.matcher`` value)."""
    import mindspore as ms

    from src.modeling.focus_detr import named_outputs

    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    model.set_train(True)
    model.set_capture(True)
    model_in, targets, dn = train_inputs(model, g, meta)
    raw = model(*model_in)
    result = named_outputs(model, raw)
    total, losses, matches, fg_targets = train_criterion(model, meta, matcher)(raw[0], *targets)
    out = {k: v.asnumpy() if hasattr(v, "asnumpy") else v for k, v in result.items()}
    out.update(dn=dn, label_enc=model.label_enc.embedding_table.asnumpy(), total_loss=float(total.asnumpy()),
               losses=[float(v.asnumpy()) for v in losses],
               matches=matches.asnumpy(), fg_targets=fg_targets.asnumpy())
    return out


def compare_train(name, g, meta, ours):
    """The eval comparisons on the training forward, the denoising queries, the criterion
    inputs it produces, the GT it is given, the matchings, the foreground targets and every
    loss (the fixture's keys and the JSON's ``losses_unweighted`` drive them)."""
    from src.layers.box_ops import box_cxcywh_to_xyxy
    from src.losses.criterion import loss_keys, loss_weights
    from src.losses.matcher import scipy_order
    from mindspore import Tensor

    g = g if isinstance(g, FixtureArrays) else FixtureArrays(g)
    ours = PortOutputs(ours)
    dn = ours["dn"]
    pad = g["dn_input_query_bbox"].shape[1]
    queries = g["two_stage_topk_inds"].shape[1]
    keep = np.r_[0:pad, dn.labels.shape[1]:dn.labels.shape[1] + queries]  # our extra slots removed
    # decoder tensors hold the denoising slots too: compare the reference's pad + queries rows
    trimmed = PortOutputs(ours)
    for key in ("decoder_init_reference", "decoder_hidden_states", "decoder_references"):
        if key in ours:
            trimmed[key] = ours[key][..., keep, :]
    rows = Rows(name)
    rows.extend(compare_eval(name, g, trimmed))
    add = rows.add
    if "dn_noised_labels" in g:
        add(lambda: exact_row(name, "dn_noised_labels", dn.noised_labels, g["dn_noised_labels"]))
    if "dn_known_bbox_expand" in g:
        add(lambda: value_row(name, "dn_known_bbox_expand", dn.noised_boxes, g["dn_known_bbox_expand"], TOL_BOX))
    add(lambda: value_row(name, "dn_input_query_bbox", dn.boxes_unact[:, :pad], g["dn_input_query_bbox"], TOL_BOX))
    if "dn_input_query_label_rownorm" in g:
        # the dn content queries as FocusDETR.construct builds them: label_enc rows, 0 in unused slots
        add(lambda: value_row(name, "dn_input_query_label_rownorm", np.where(
            dn.slot_valid, np.linalg.norm(ours["label_enc"][dn.labels], axis=-1), 0.0)[:, :pad],
            g["dn_input_query_label_rownorm"], TOL_ENCODER), "dn_input_query_label_rownorm")
    if "dn_attn_mask" in g:
        add(lambda: exact_row(name, "dn_attn_mask", dn.attn_mask[np.ix_(keep, keep)], g["dn_attn_mask"]))
    if "dn_meta_single_padding" in g or "dn_meta_dn_num" in g:
        add(lambda: exact_row(name, "dn_meta", [dn.single_padding, dn.dn_num],
                              [int(g["dn_meta_single_padding"]), int(g["dn_meta_dn_num"])]))
    if "enc_pred_logits" in g:  # the encoder head on the selected proposals: encoder tolerance
        add(lambda: value_row(name, "enc_pred_logits", ours["enc_logits"], g["enc_pred_logits"], TOL_ENCODER),
            "enc_pred_logits")
    if "enc_pred_boxes" in g:
        add(lambda: value_row(name, "enc_pred_boxes", ours["enc_boxes"], g["enc_pred_boxes"], TOL_BOX),
            "enc_pred_boxes")
    if "dn_pred_logits" in g:
        add(lambda: value_row(name, "dn_pred_logits", ours["dn_logits"][:, :, :pad], g["dn_pred_logits"], TOL_DECODER),
            "dn_pred_logits")
    if "dn_pred_boxes" in g:
        add(lambda: value_row(name, "dn_pred_boxes", ours["dn_boxes"][:, :, :pad], g["dn_pred_boxes"], TOL_BOX),
            "dn_pred_boxes")
    if "orig_sizes" in g:
        g.mark("orig_sizes")
        rows.append(Row(name, "orig_sizes", agreement="input", ok=True, info=True,
                        note="post-processing target size: the official training forward does not read it"))
    if "fg_targets" in g:
        add(lambda: exact_row(name, "fg_targets", ours["fg_targets"].astype(np.int64), g["fg_targets"]), "fg_targets")

    # the GT: the official model gets absolute xyxy pixels, the port the loader's normalized cxcywh
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

    # matchings: stage aux_i = decoder layer i, main = the last layer, enc = the two-stage head
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
            add(lambda: match_row(m[1], int(m[2])), f"match_{m[1]}_{m[2]}")
        elif re.fullmatch(r"match_(.+)_tgt_(\d+)", key) and key.replace("_tgt_", "_src_") not in g:
            g.mark(key)
            rows.append(Row(name, key, ok=False, note="no matching src array in the fixture"))
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


# ---------------------------------------------------------------------------------------------
# gradients (model_grad_*): the backward pass of the training fixture's total loss

GRAD_STATS = ("grad_norm", "grad_proj1", "grad_proj2", "grad_full")
REPORT_SECTIONS = ("backbone", "neck", "encoder", "decoder", "heads")


def grad_source_fixture(stem, meta, golden_dir):
    """The training fixture a gradient fixture differentiates: the JSON's ``source_fixture``
    ('shared/golden/model_train_r50.{npz,json}'), else the name (model_grad_X -> model_train_X);
    None when neither names a fixture present in ``golden_dir``."""
    names = []
    if meta.get("source_fixture"):
        names.append(os.path.basename(str(meta["source_fixture"])).split(".")[0])
    if stem.startswith("model_grad_"):
        names.append("model_train_" + stem[len("model_grad_"):])
    for train in names:
        if all(os.path.isfile(os.path.join(golden_dir, f"{train}.{ext}")) for ext in ("npz", "json")):
            return train
    return None


def tolerance_group(key):
    """The golden README's gradient tolerance group of an official key (used only for a key the
    fixture JSON gives no ``group``)."""
    if key == "transformer.alpha":
        return "alpha"
    if ".sampling_offsets." in key:
        return "sampling_offsets"
    if key.startswith(("backbone.", "neck.")):
        return key.split(".")[0]
    return "transformer"


def report_section(key):
    """Where an official key sits in the model, for the per-group summary rows."""
    if key.startswith(("backbone.", "neck.")):
        return key.split(".")[0]
    if key.startswith(("class_embed.", "bbox_embed.")):
        return "heads"
    if key.startswith(("transformer.decoder.", "transformer.tgt_embed.", "label_enc.")):
        return "decoder"
    return "encoder"


def grad_fixture_inputs(path, golden_dir, meta):
    """(training fixture name, its arrays, its JSON, the key list entries) for the gradient
    fixture at ``path``, or a 'not compared' Row when its training fixture is absent."""
    stem = os.path.splitext(os.path.basename(path))[0]
    train = grad_source_fixture(stem, meta, golden_dir)
    if train is None:
        return not_compared(f"{stem}", "-", f"its training fixture ({meta.get('source_fixture', '?')}) is not "
                            f"in {golden_dir}: the gradient needs its inputs and denoising draws")
    train_meta = json.load(open(os.path.join(golden_dir, f"{train}.json")))
    train_g = dict(np.load(os.path.join(golden_dir, f"{train}.npz")))
    key_list = meta.get("weights_key_list") or train_meta.get("weights_key_list") or default_key_list(meta)
    entries = json.load(open(os.path.join(golden_dir, key_list)))["entries"]
    return train, train_g, train_meta, entries


def grad_pairing_rows(label, meta, train, train_meta):
    """An info row naming the training fixture, and a failure per identity field (weights,
    images, model) where the two JSONs disagree: then it is not the same forward."""
    rows = [Row(label, "training fixture", agreement=train, ok=True, info=True,
                note=f"inputs, draws and teacher-forced top-k of {train}")]
    for field in ("weight_seed", "image_seed", "model", "image_sizes"):
        if field in meta and meta[field] != train_meta.get(field):
            rows.append(Row(label, f"{field} of {train}", ok=False,
                            note=f"{meta[field]!r} != {train_meta.get(field)!r}: not the same forward"))
    return rows


def run_grad_model(model, g, meta, mode, matcher="auto", canvas=None):
    """One ``ops.value_and_grad`` of the model + criterion (the training fixture's inputs, replayed
    denoising draws, teacher-forced two-stage top-k) w.r.t. every trainable parameter of the
    port: the plain float32 sum of the weighted losses, as the training step differentiates it.
    Returns {'total_loss', 'losses', 'grads': {port name: numpy gradient}}."""
    import mindspore as ms
    from mindspore import ParameterTuple, nn, ops

    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    model.set_train(True)
    model.set_capture(False)
    model_in, targets, _ = train_inputs(model, g, meta, canvas)
    params = model.trainable_params()

    class ModelLoss(nn.Cell):
        def __init__(self, net, criterion, canvas):
            super().__init__(auto_prefix=False)  # keep the model's parameter names
            self.net = net
            self.criterion = criterion
            self.canvas = canvas

        def construct(self, images, sizes, dn_inputs, topk, boxes, labels, valid, image_sizes, dn_targets):
            outputs, _ = self.net(images, sizes, dn_inputs, topk)
            total, losses, _, _ = self.criterion(outputs, boxes, labels, valid, image_sizes, self.canvas,
                                                 dn_targets)
            return total, losses

    class GradStep(nn.Cell):
        def __init__(self, net, weights):
            super().__init__(auto_prefix=False)
            self.net = net
            self.grad_fn = ops.value_and_grad(net, None, weights, has_aux=True)

        def construct(self, images, sizes, dn_inputs, topk, boxes, labels, valid, image_sizes, dn_targets):
            return self.grad_fn(images, sizes, dn_inputs, topk, boxes, labels, valid, image_sizes, dn_targets)

    boxes, labels, valid, image_sizes, canvas_hw, dn_targets = targets
    step = GradStep(ModelLoss(model, train_criterion(model, meta, matcher), canvas_hw), ParameterTuple(params))
    (total, losses), grads = step(*model_in, boxes, labels, valid, image_sizes, dn_targets)
    return {"total_loss": float(total.asnumpy()), "losses": [float(v.asnumpy()) for v in losses],
            "grads": {p.name: gr.asnumpy() for p, gr in zip(params, grads)},
            "frozen": [p.name for p in model.get_parameters() if not p.requires_grad],
            "shapes": {p.name: tuple(p.shape) for p in model.get_parameters()}}


def official_grads(entries, port_grads, port_shapes):
    """Port gradients under the official canonical keys of a key list's ``entries``.

    The converter's name map, inverted: every official key (aliases included) is mapped with
    ``port_name``; the port parameters an alias group reaches are summed (one shared Parameter
    counts once, separate copies add up, as the official gradient of a tied tensor is the sum
    over its uses). Returns ({key: gradient or None}, {key: port names}, port trainable names
    reached by no official key)."""
    from src.checkpoint import port_name

    reach = {}
    for e in entries:
        name = port_name(e["name"], port_shapes)
        if name is not None:
            reach.setdefault(e.get("alias_of", e["name"]), set()).add(name)
    out = {}
    for key, names in reach.items():
        trained = sorted(n for n in names if n in port_grads)
        out[key] = (None if not trained else
                    np.sum([port_grads[n].astype(np.float32) for n in trained], 0, dtype=np.float32))
    covered = set().union(*reach.values()) if reach else set()
    return out, reach, sorted(n for n in port_grads if n not in covered)


def projection(key, grad, k):
    rng = np.random.default_rng([k, zlib.crc32(key.encode("utf-8"))])
    return float(np.sum(grad.astype(np.float64) * rng.standard_normal(grad.shape)))


def compare_grad(name, g, meta, ours, entries, train_meta=None):
    """The gradient fixture's arrays against the port's gradients, every key driven by the
    fixture: per official key norm and both projections (one row each, 'detail' rows), the
    full gradients, the global norm, the sets of parameters without gradient and the per-group
    maxima (summary rows); plus the losses of the differentiated forward."""
    from src.losses.criterion import loss_keys

    rows = []
    tols = meta.get("tolerances")
    if not tols:
        return [Row(name, "tolerances", ok=False, note="fixture JSON has no 'tolerances'")]
    params = {p["name"]: p for p in meta.get("params", [])}
    by_key = {}
    for array in g:  # the fixture's keys drive the comparison; arrays no row reads are reported
        stat, sep, key = array.partition("|")
        if sep and stat in GRAD_STATS:
            by_key.setdefault(key, {})[stat] = g[array]
    grads, reach, extra = official_grads(entries, ours["grads"], ours["shapes"])

    # the differentiated forward is the training fixture's
    ref_losses = meta.get("losses_weighted") or (train_meta or {}).get("losses_weighted")
    if ref_losses:
        port_losses = dict(zip(loss_keys(), ours["losses"]))
        errs = [abs(port_losses[k] - v) / max(abs(v), 1e-12) for k, v in ref_losses.items() if k in port_losses]
        missing = [k for k in ref_losses if k not in port_losses]
        worst = max(errs, default=float("inf"))
        rows.append(Row(name, f"losses_weighted ({len(ref_losses)})", max_rel=worst, tol=TOL_LOSS_REL,
                        ok=not missing and worst <= TOL_LOSS_REL, agreement=f"{len(errs)}/{len(ref_losses)}",
                        note=f"no port loss for {missing}" if missing else ""))
    if "total_loss" in meta or "total_loss" in (train_meta or {}):
        rows.append(loss_row(name, "total_loss", ours["total_loss"], meta.get("total_loss", train_meta["total_loss"])))
    ref_none = set(meta.get("none_grad_params", [])) | set(meta.get("zero_grad_params", []))
    frozen = set(meta.get("frozen_params", []))

    def without_grad(key):
        return grads.get(key) is None or not np.any(grads[key])

    detail = []
    summary = {}  # (section, stat) -> rows; also (section: tolerance group, stat) for the loose groups

    def summarize(section, group, stat, row):  # a section's rows, and per tolerance group inside it
        summary.setdefault((section, stat), []).append(row)
        summary.setdefault((f"{section}: {group}", stat), []).append(row)
    for key in sorted(by_key):
        stats = by_key[key]
        group = params.get(key, {}).get("group") or tolerance_group(key)
        tol = tols.get(group)
        grad = grads.get(key)
        section = report_section(key)
        if tol is None:
            detail.append(Row(name, f"grad|{key}", ok=False, note=f"no tolerances for group {group!r}"))
            continue
        if grad is None:
            why = (f"port parameter(s) {sorted(reach[key])} not trainable" if key in reach
                   else "no port parameter")
            detail.append(Row(name, f"grad|{key}", ok=key in ref_none,
                              note=f"no port gradient ({why})" + ("; none in the official model either"
                                                                  if key in ref_none else "")))
            continue
        shape = tuple(params.get(key, {}).get("shape", grad.shape))
        if tuple(grad.shape) != shape:
            detail.append(Row(name, f"grad|{key}", ok=False, note=f"shape {grad.shape} != reference {shape}"))
            continue
        norm = float(np.linalg.norm(grad.astype(np.float64)))
        ref_norm = float(stats["grad_norm"]) if "grad_norm" in stats else float(params[key]["norm"])
        scale = max(ref_norm, 1e-30)
        if "grad_norm" in stats:
            err = abs(norm - ref_norm)
            row = Row(name, f"grad_norm|{key}", err, err / scale, f"{norm:.6g}", tol["norm_rtol"],
                      bool(err <= tol["norm_rtol"] * ref_norm), note=group)
            detail.append(row)
            summarize(section, group, "norm", row)
        projs = [(k, stats[f"grad_proj{k}"]) for k in (1, 2) if f"grad_proj{k}" in stats]
        if projs:
            err = max(abs(projection(key, grad, k) - float(ref)) for k, ref in projs)
            row = Row(name, f"grad_proj|{key}", err, err / scale, f"{len(projs)} proj", tol["proj_atol_times_norm"],
                      bool(err <= tol["proj_atol_times_norm"] * ref_norm), note=group)
            detail.append(row)
            summarize(section, group, "proj", row)
        if "grad_full" in stats:
            row = value_row(name, f"grad_full|{key}", grad, stats["grad_full"], np.nan)
            if np.isfinite(row.max_abs):
                row.tol = tol["full_grad_atol_times_maxabs"]
                row.ok = bool(row.max_rel <= row.tol)
            row.note = group
            rows.append(row)
            summarize(section, group, "full", row)
    # port gradients the official model does not have: keys without arrays (e.g. the frozen stem)
    # and port parameters no official key reaches
    for key in sorted(k for k, v in grads.items() if v is not None and k not in by_key):
        if key in ref_none and without_grad(key):
            continue
        rows.append(Row(name, f"grad|{key}", ok=False, note=f"port parameter(s) {sorted(reach[key])} trainable, but "
                        + ("frozen in the official model" if key in frozen else "the fixture has no gradient for it")))
    for port in extra:
        rows.append(Row(name, f"grad|{port}", ok=False,
                        note="trainable in the port, reached by no official key (no gradient in the official model)"))
    def order(item):
        (section, stat), _ = item
        return REPORT_SECTIONS.index(section.split(":")[0]), ":" in section, section, stat

    groups = {}
    for section, _ in summary:
        if ":" in section:
            groups.setdefault(section.split(":")[0], set()).add(section)
    for (section, stat), members in sorted(summary.items(), key=order):
        if ":" in section and len(groups[section.split(":")[0]]) == 1:
            continue  # a section of one tolerance group: its own row says it
        worst = max(members, key=lambda r: r.max_rel if np.isfinite(r.max_rel) else np.inf)
        ratio = max((r.max_rel / r.tol if np.isfinite(r.max_rel) else np.inf) for r in members)
        rows.append(Row(name, f"grad {stat} [{section}] max", worst.max_abs, worst.max_rel, f"{len(members)} tensors",
                        worst.tol, all(r.ok for r in members), note=f"worst {worst.name.split('|')[-1]}; "
                        f"max err/tol {ratio:.2g}"))
    for r in detail:
        r.detail = True
    rows.extend(detail)
    if "global_grad_norm" in g:  # what the port's clipping sees: every port gradient, tied copies summed
        squares = sum(float(np.sum(v.astype(np.float64) ** 2)) for v in grads.values() if v is not None)
        squares += sum(float(np.sum(ours["grads"][p].astype(np.float64) ** 2)) for p in extra)
        ref = float(g["global_grad_norm"])
        ours_norm = float(np.sqrt(squares))
        rtol = tols.get("global_grad_norm_rtol", 1e-3)
        err = abs(ours_norm - ref)
        rows.append(Row(name, "global_grad_norm", err, err / ref, f"{ours_norm:.7g}", rtol, bool(err <= rtol * ref)))
    # the official parameters without (or with an all-zero) gradient must be the port's
    considered = set(by_key) | ref_none
    differ = sorted(k for k in considered if without_grad(k) != (k in ref_none))
    port_none = sum(without_grad(k) for k in considered)
    rows.append(Row(name, "none/zero-gradient parameters", agreement=f"{port_none} vs {len(ref_none)}",
                    ok=not differ, note=f"differ: {differ[:8]}" if differ else ""))
    rows.append(Row(name, "gradient keys compared", agreement=f"{len(by_key)} keys", ok=True, info=True,
                    note=f"{len(extra)} port-only trainable"))
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


# the sampling cores the msda fixture is compared with, per --kernels: the operators the models
# of that choice run ('auto' resolves to the fused kernel where it builds, else the gather core);
# 'pure' also checks the grid_sample core, the third pure-MindSpore implementation
MSDA_CORES = {"auto": ("auto",), "kernel": ("kernel",), "pure": ("gather", "reference")}


def compare_msda(name, g, mode, kernels="auto"):
    import mindspore as ms
    from mindspore import Tensor, ops

    from src.layers.ms_deform_attn import build_msda_core

    g = g if isinstance(g, FixtureArrays) else FixtureArrays(g)
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    shapes = tuple(tuple(int(v) for v in s) for s in g["spatial_shapes"])
    rows = Rows(name)
    if "level_start_index" in g:
        starts = np.concatenate([[0], np.cumsum([h * w for h, w in shapes])[:-1]])
        rows.append(exact_row(name, "level_start_index", starts, g["level_start_index"]))
    if "attention_logits" in g:  # the block's softmax over the L*P axis gives the fixture's weights
        logits = g["attention_logits"]
        weights = ops.softmax(Tensor(logits.astype(np.float32)), -1).asnumpy().reshape(g["attention_weights"].shape)
        rows.append(value_row(name, "attention_weights (softmax of attention_logits)", weights,
                              g["attention_weights"], TOL_MSDA_OUT))
    for i, impl in enumerate(MSDA_CORES[kernels]):
        core = build_msda_core(impl)
        tag = "" if i == 0 else f" [{impl}]"
        note = type(core).__name__
        out, *grads = msda_core_outputs(core, shapes, g["value"], g["sampling_locations"],
                                        g["attention_weights"], g["grad_output"])
        for key, ours, tol in (("output", out, TOL_MSDA_OUT), ("grad_value", grads[0], TOL_MSDA_GRAD),
                               ("grad_sampling_locations", grads[1], TOL_MSDA_LOC_GRAD),
                               ("grad_attention_weights", grads[2], TOL_MSDA_GRAD)):
            if key in g:
                row = value_row(name, key + tag, ours, g[key], tol)
                row.note = note
                rows.append(row)
    return rows


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


# arrays a fixture kind feeds to the port (inputs, draws, channel/class subsets), not outputs
INPUT_ARRAYS = re.compile(r"image_\d+|image_sizes|orig_sizes|padded_size|.*_channels|.*_subset|"
                          r"rand_label_p|rand_new_label|rand_box_sign01|rand_box_part|target_boxes_\d+|"
                          r"target_labels_\d+|value|sampling_locations|attention_weights|grad_output|spatial_shapes")


def not_compared(label, what, note):
    return Row(label, what, ok=True, agreement="not compared", note=note)


def account_arrays(label, g, meta, rows):
    """Rows closing a fixture's comparison: the inputs it consumed (one line), every array no
    comparison read (a 'not compared' row naming them) and arrays the JSON lists that the npz
    lacks (a failure)."""
    out = []
    names = {r.name for r in rows}
    inputs = sorted(k for k in g.used if INPUT_ARRAYS.fullmatch(k) and k not in names)
    if inputs:
        out.append(Row(label, "inputs", agreement=f"{len(inputs)} arrays", ok=True, info=True,
                       note="fed to the port: " + ", ".join(inputs)))
    left = g.unused()
    if left:
        out.append(not_compared(label, f"{len(left)} array(s)", "no comparison reads: " + ", ".join(left)))
    listed = [k for k in meta.get("arrays", {}) if k not in g]
    if listed:
        out.append(Row(label, "arrays listed in the JSON", ok=False, note="missing from the npz: " + ", ".join(listed)))
    return out


def compare_fixture(path, golden_dir, mode, kernels="auto", matcher="auto", canvas=None):
    """Rows for one fixture file; a fixture that cannot be compared gives one 'not compared' row,
    and every array of a compared one is compared, consumed as an input or listed as not compared.
    With ``canvas`` (H, W) only the layout-free results are compared (see the module docstring)."""
    import gc

    stem = os.path.splitext(os.path.basename(path))[0]
    if os.path.basename(path).startswith("state_dict_") and path.endswith(".json"):
        return compare_key_list(stem, path, golden_dir)
    label = f"{stem}[{mode}]"
    meta_path = os.path.splitext(path)[0] + ".json"
    meta = json.load(open(meta_path)) if os.path.isfile(meta_path) else {}
    if not path.endswith(".npz"):
        return [not_compared(label, "-", "a JSON without arrays (no .npz of this name)")]
    g = FixtureArrays(np.load(path))
    supported = fixture_model_config(meta) is not None
    if canvas is not None and not stem.startswith(("model_eval_", "model_grad_")):
        return [not_compared(label, "-", "--canvas compares detections and gradients only")]
    if stem.startswith("msda_core"):
        rows = compare_msda(label, g, mode, kernels)
    elif stem.startswith("model_eval_") and supported:
        model = build_golden_model(golden_dir, meta, num_classes=g["pred_logits"].shape[-1], kernels=kernels)
        ours = run_eval_model(model, g, mode, canvas)
        rows = compare_detections(label, g, ours["det"]) if canvas else compare_eval(label, g, ours)
    elif stem.startswith("model_train_") and supported:
        model = build_golden_model(golden_dir, meta, num_classes=g["pred_logits"].shape[-1], kernels=kernels)
        rows = compare_train(label, g, meta, run_train_model(model, g, meta, mode, matcher))
    elif stem.startswith("model_grad_") and supported:
        paired = grad_fixture_inputs(path, golden_dir, meta)
        if isinstance(paired, Row):
            paired.fixture = label
            return [paired]
        train, train_g, train_meta, entries = paired
        model = build_golden_model(golden_dir, train_meta, num_classes=train_g["pred_logits"].shape[-1],
                                   kernels=kernels)
        rows = grad_pairing_rows(label, meta, train, train_meta)
        rows += compare_grad(label, g, meta, run_grad_model(model, train_g, train_meta, mode, matcher, canvas),
                             entries, train_meta)
    else:
        note = (f"backbone of {meta.get('model', '?')!r} not supported yet" if stem.startswith("model_")
                else "unknown fixture kind")
        return [not_compared(label, "-", note)]
    model = None
    gc.collect()
    return rows + account_arrays(label, g, meta, rows)


def fixture_paths(golden_dir):
    """(the .npz fixtures plus every JSON that is neither an npz's metadata nor a key list, the
    converter key lists)."""
    arrays = sorted(glob.glob(os.path.join(golden_dir, "*.npz")))
    key_lists = sorted(glob.glob(os.path.join(golden_dir, "state_dict_*.json")))
    stems = {os.path.splitext(p)[0] for p in arrays}
    lone = [p for p in sorted(glob.glob(os.path.join(golden_dir, "*.json")))
            if os.path.splitext(p)[0] not in stems and p not in key_lists]
    return sorted(arrays + lone), key_lists


def summary_line(rows):
    failed = sum(not r.ok for r in rows)
    skipped = [r for r in rows if r.agreement == "not compared"]
    fixtures = sum(1 for r in skipped if r.name == "-" or r.name == "converter round-trip")
    arrays = sum(int(r.name.split()[0]) for r in skipped if r.name.endswith("array(s)"))
    info = sum(1 for r in rows if r.info)
    return (f"parity: {len(rows) - len(skipped) - info} comparisons, {failed} failed, "
            f"{fixtures} fixture(s) and {arrays} array(s) not compared"), failed, len(skipped)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden", required=True, help="fixture directory (npz + json + golden_weights.py)")
    parser.add_argument("--mode", choices=("graph", "pynative", "both"), default="both")
    parser.add_argument("--kernels", choices=tuple(KERNEL_CHOICES), default="auto",
                        help="operators of the models: the config default, the fused kernels, or pure MindSpore")
    parser.add_argument("--matcher", choices=("auto", "builtin", "kernel", "pyfunc"), default="auto",
                        help="assignment backend of the training fixtures' matcher (kernels.matcher)")
    parser.add_argument("--canvas", type=int, nargs=2, metavar=("H", "W"),
                        help="run the model fixtures on this larger canvas (detections and gradients compared)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="exit 0 even when a fixture or an array is left uncompared (failures still exit 1)")
    parser.add_argument("--verbose", action="store_true",
                        help="also print every per-tensor gradient row (by default only failing ones)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.golden):
        parser.error(f"--golden: no such directory {args.golden}")
    if not os.path.isfile(os.path.join(args.golden, "golden_weights.py")):
        parser.error(f"--golden: {args.golden} has no golden_weights.py")
    arrays, key_lists = fixture_paths(args.golden)
    if not arrays and not key_lists:
        parser.error(f"--golden: no fixtures (*.npz, state_dict_*.json) in {args.golden}")
    canvas = tuple(args.canvas) if args.canvas else None
    if canvas:
        key_lists = []
    modes = ("graph", "pynative") if args.mode == "both" else (args.mode,)
    rows = []
    for path in key_lists:
        rows.extend(_safe(compare_fixture, path, args.golden, modes[0]))
        print(*(r.line() for r in rows[-1:]), sep="\n", flush=True)
    for path in arrays:
        for mode in modes:
            start = time.time()
            new = _safe(compare_fixture, path, args.golden, mode, args.kernels, args.matcher, canvas)
            rows.extend(new)
            shown = [r.line() for r in new if args.verbose or not r.detail or not r.ok]
            print("\n".join(shown), flush=True)
            print(f"     {os.path.basename(path)} [{mode}] took {time.time() - start:.1f} s", flush=True)
    line, failed, skipped = summary_line(rows)
    partial = skipped and not args.allow_partial
    print(line + ("; exit 1: comparisons left out (--allow-partial to accept)" if partial else ""))
    return 1 if failed or partial else 0


def _safe(fn, path, *args):
    try:
        return fn(path, *args)
    except Exception as e:  # a broken fixture is a failure of that fixture, not of the run
        return [Row(os.path.basename(path), "-", ok=False, note=f"{type(e).__name__}: {e}"[:400])]


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # skip MindSpore's noisy Cell.__del__ at interpreter exit
