"""The operator and converter fixtures: the deformable-attention sampling cores against
``msda_core*`` (output and the three input gradients), and the checkpoint converter against the
official key lists ``state_dict_*``."""
import json
import os
import re

import numpy as np

from src.runtime import set_mode
from src.tools.parity.golden import FixtureArrays, build_golden_model, fixture_model_config, golden_state_dict
from src.tools.parity.report import TOL_MSDA_GRAD, TOL_MSDA_LOC_GRAD, TOL_MSDA_OUT, Row, Rows, exact_row, value_row


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
    from mindspore import Tensor, ops

    from src.layers.levels import level_starts
    from src.layers.ms_deform_attn import build_msda_core

    g = g if isinstance(g, FixtureArrays) else FixtureArrays(g)
    set_mode(mode)
    shapes = tuple(tuple(int(v) for v in s) for s in g["spatial_shapes"])
    rows = Rows(name)
    if "level_start_index" in g:
        starts = np.array(level_starts(shapes)[:-1])
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
    from src.checkpoint import CheckpointMismatch, official_to_port, parameter_shapes

    entries = json.load(open(path))["entries"]
    meta = {"model": key_list_model(name), "weight_seed": 0}
    if fixture_model_config(meta) is None:
        return [Row(name, "converter round-trip", ok=True, agreement="not compared",
                    note="backbone not supported by this port yet")]
    model = build_golden_model(golden_dir, meta, num_classes=_num_classes(entries), key_list=os.path.basename(path))
    shapes = parameter_shapes(model)
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
    swin = {"swin_t": "swin_tiny_224", "swin_s": "swin_small_224", "swin_b": "swin_base_384",
            "swin_l": "swin_large_384"}
    return f"_{swin.get(m[1], m[1])}_"


def _num_classes(entries):
    return next(e["shape"][0] for e in entries if e["name"] == "label_enc.weight")
