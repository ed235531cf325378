"""The full model against the official PyTorch code (golden fixtures), in both modes.

Eval: every intermediate from the backbone to the post-processed detections. Training: the
forward with real padding masks (one image has fewer valid tokens than the batch budget),
the fixture's denoising queries and teacher-forced two-stage proposals. Tolerances and
comparison rules are those of the golden README (see ``src.tools.parity.__main__``). The models
run with the fused kernels (both modes) and with the pure-MindSpore operators (the training
forward in graph mode, the production mode; the evaluation in PyNative: the same numbers are
expected from either)."""
import json

import numpy as np
import pytest

from src.runtime import mode_scope
from src.tools.parity.__main__ import main as parity_main
from src.tools.parity.golden import FixtureArrays, build_golden_model
from src.tools.parity.model import align_by_ids, compare_encoder_layer, compare_eval, compare_train
from src.tools.parity.ops import compare_key_list, compare_msda
from src.tools.parity.report import PortOutputs, account_arrays
from src.tools.parity.runs import run_eval_model, run_train_model


def assert_rows(rows, expected_names):
    failed = [r.line() for r in rows if not r.ok]
    assert not failed, "\n".join(failed)
    names = {r.name for r in rows}
    missing = [n for n in expected_names if n not in names]
    assert not missing, f"comparisons not made: {missing}"


ENCODER = [f"foreground_inds_l{i}" for i in range(6)] + [f"oesm_topk_global_l{i}" for i in range(6)] + [
    f"enc_layer_out_l{i}" for i in range(6)] + ["temp_backbone_mask_prediction", "focus_token_nums",
                                                "encoder_foreground_topk", "memory", "two_stage_topk_inds",
                                                "enc_outputs_class_max", "output_proposals"]
DECODER = ["decoder_hidden_states", "decoder_references", "pred_logits", "pred_boxes"]


def load_model(golden_dir, stem, kernels):
    """(model with the fixture's weights and ``kernels`` operators, fixture arrays, fixture meta)."""
    meta = json.load(open(golden_dir / f"{stem}.json"))
    model = build_golden_model(str(golden_dir), meta, num_classes=80, kernels=kernels)
    return model, dict(np.load(golden_dir / f"{stem}.npz")), meta


# a model per test (2-3 s to build): a model shared by the module would keep each mode's graphs
@pytest.fixture
def eval_model(golden_dir):
    return load_model(golden_dir, "model_eval_r50", "kernel")[:2]


@pytest.fixture
def train_model(golden_dir):
    return load_model(golden_dir, "model_train_r50", "kernel")


def compared(name, g, meta, run, compare):
    """Rows of ``compare(tracked fixture, run(tracked fixture))`` plus the array accounting (what
    the run feeds the port counts as read); no array may be left out. Returns (rows, outputs)."""
    tracked = FixtureArrays(g)
    ours = run(tracked)
    rows = compare(tracked, ours)
    rows += account_arrays(name, tracked, meta, rows)
    assert not [r.line() for r in rows if r.agreement == "not compared"]
    return rows, ours


def check_eval(model, g, mode):
    rows, ours = compared("model_eval_r50", g, {}, lambda t: run_eval_model(model, t, mode),
                          lambda t, o: compare_eval("model_eval_r50", t, o))
    assert_rows(rows, ["backbone_res5", "neck_l3", "pos_l0"] + ENCODER + DECODER + [
        "postprocess_topk_indices[0]", "postprocess_topk_values[1]", "det_boxes_0", "det_labels_1",
        "interm_pred_logits_sub", "enc_outputs_class_argmax", "oesm_topk_local_l5"])
    return ours


def check_train(model, g, meta, mode):
    rows, ours = compared("model_train_r50", g, meta, lambda t: run_train_model(model, t, meta, mode),
                          lambda t, o: compare_train("model_train_r50", t, meta, o))
    matchings = [f"match_{s}_{b}" for s in ("main", "enc", "aux_0", "aux_4") for b in (0, 1)]
    assert_rows(rows, ["mask_l0", "valid_ratios", "valid_token_nums", "srcs_shapes"] + ENCODER + DECODER + [
        "aux_pred_logits", "enc_pred_logits", "enc_pred_boxes", "dn_pred_logits", "dn_pred_boxes",
        "dn_noised_labels", "dn_input_query_bbox", "dn_input_query_label_rownorm", "dn_attn_mask", "fg_targets",
        "fg_gt_boxes_padded", "fg_gt_classes_padded", "total_loss"]
        + matchings + list(meta["losses_unweighted"]))
    return ours


def assert_missing_output_fails(name, compare, ours, removed, expected):
    """A port output removed from ``ours`` turns the comparisons that need it into FAIL rows."""
    rows = compare({k: v for k, v in ours.items() if k != removed})
    failed = {r.name for r in rows if not r.ok}
    assert set(expected) <= failed, (removed, failed)
    assert all("missing" in r.note for r in rows if r.name in expected)


def test_eval_forward_and_detections(eval_model, mode):
    ours = check_eval(*eval_model, mode)
    if mode == "graph":  # the comparison is numpy; once is enough
        g = eval_model[1]
        assert_missing_output_fails("model_eval_r50", lambda o: compare_eval("model_eval_r50", g, o), ours,
                                    "enc_logits", ["interm_pred_logits_sub"])
        assert_missing_output_fails("model_eval_r50", lambda o: compare_eval("model_eval_r50", g, o), ours,
                                    "backbone_res4", ["backbone_res4", "backbone_res4_chmean"])


def test_train_forward_denoising_matching_and_losses(train_model, mode):
    """Model forward with real masks and replayed denoising draws, then the criterion on our own
    outputs: matchings and foreground targets exact, every loss within 1e-4 relative."""
    ours = check_train(*train_model, mode)
    if mode == "graph":
        _, g, meta = train_model
        assert_missing_output_fails("model_train_r50", lambda o: compare_train("model_train_r50", g, meta, o),
                                    ours, "enc_logits", ["enc_pred_logits"])
    # the training fixture exercises the static-shape masking: image 1 keeps fewer tokens than F
    g = train_model[1]
    focus = g["focus_token_nums"]
    assert focus[1] < focus[0] == g["encoder_foreground_topk"][0]


@pytest.mark.parametrize("fixture, fixture_mode", [("eval", "pynative"), ("train", "graph")])
def test_pure_mindspore_operators(golden_dir, fixture, fixture_mode):
    """kernels.msda=gather, kernels.token_ops=reference (what 'auto' falls back to); a test per
    fixture, so that the first model is released before the second runs. The training forward
    runs in graph mode (its graph holds every module the evaluation runs, with the same operators);
    the evaluation in PyNative, which equals graph mode (the kernel tests above run both): one
    full-size graph compile fewer for the suite."""
    model, g, meta = load_model(golden_dir, f"model_{fixture}_r50", "pure")
    with mode_scope(fixture_mode):
        if fixture == "eval":
            check_eval(model, g, fixture_mode)
        else:
            check_train(model, g, meta, fixture_mode)


def test_swin_t_eval_forward_and_detections(golden_dir, mode):
    meta = json.load(open(golden_dir / "model_eval_swin_t.json"))
    g = dict(np.load(golden_dir / "model_eval_swin_t.npz"))
    model = build_golden_model(str(golden_dir), meta, num_classes=80)
    rows, _ = compared("model_eval_swin_t", g, meta, lambda t: run_eval_model(model, t, mode),
                       lambda t, o: compare_eval("model_eval_swin_t", t, o))
    assert_rows(rows, ["backbone_p1", "backbone_p2", "backbone_p3", "neck_l3", "memory", "two_stage_topk_inds",
                       "pred_logits", "pred_boxes", "det_boxes_0", "det_boxes_1"]
                + [f"foreground_inds_l{i}" for i in range(6)])


@pytest.mark.parametrize("key_list", ["state_dict_r50_4scale.json", "state_dict_r101_4scale.json",
                                      "state_dict_swin_t_4scale.json"])
def test_converter_consumes_every_official_key(golden_dir, key_list):
    rows = compare_key_list(key_list, str(golden_dir / key_list), str(golden_dir))
    assert len(rows) == 1 and rows[0].ok, rows[0].line()
    entries = json.load(open(golden_dir / key_list))["entries"]
    assert rows[0].agreement.startswith(f"{len(entries)} keys")


def test_parity_command_reports_and_fails_on_a_wrong_fixture(golden_dir, tmp_path, capsys):
    """The CLI end to end on a small directory: the msda fixture, a key list, and a copy of the
    msda fixture whose recorded output is off by 1e-3 (beyond its 1e-5 tolerance); then a
    fixture with an array no comparison reads and a JSON without arrays, which fail unless
    --allow-partial. In one mode: what the command counts and reports does not depend on it, and
    the comparisons it runs are tested in both modes in tests/test_layers.py and above."""
    mode = "pynative"
    for name in ("golden_weights.py", "msda_core.npz", "msda_core.json", "state_dict_r50_4scale.json"):
        (tmp_path / name).symlink_to(golden_dir / name)
    args = ["--golden", str(tmp_path), "--mode", mode, "--kernels", "pure"]
    assert parity_main(args) == 0
    out = capsys.readouterr().out.splitlines()
    # pure: the gather core (what kernels=pure models run) and the grid_sample core, 4 arrays each,
    # plus level_start_index, the attention-weight softmax and the key list
    assert out[-1] == "parity: 11 comparisons, 0 failed, 0 fixture(s) and 0 array(s) not compared"
    assert sum("MSDeformAttnCoreGather" in line for line in out) == 4
    assert sum("MSDeformAttnCoreReference" in line for line in out) == 4
    g = dict(np.load(golden_dir / "msda_core.npz"))
    g["output"] = g["output"] + 1e-3
    np.savez(tmp_path / "msda_core_shifted.npz", **g)
    assert parity_main(args) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "parity: 21 comparisons, 2 failed, 0 fixture(s) and 0 array(s) not compared"
    assert any(line.startswith(f"FAIL msda_core_shifted[{mode}]") and " output " in line for line in out)
    (tmp_path / "msda_core_shifted.npz").unlink()

    # scenarios of partial coverage, in a directory without the key list (its check builds a model)
    small = tmp_path / "partial"
    small.mkdir()
    for name in ("golden_weights.py", "msda_core.npz", "msda_core.json"):
        (small / name).symlink_to(golden_dir / name)
    args = ["--golden", str(small), "--mode", mode, "--kernels", "kernel"]
    # an array nothing compares: listed by name, exit 1 unless --allow-partial
    g = dict(np.load(golden_dir / "msda_core.npz"), mystery=np.zeros(3))
    np.savez(small / "msda_core_extra.npz", **g)
    assert parity_main(args) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("parity: 12 comparisons, 0 failed, 0 fixture(s) and 1 array(s) not compared; exit 1")
    assert any("not compared" in line and "mystery" in line for line in out)
    assert parity_main(args + ["--allow-partial"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "parity: 12 comparisons, 0 failed, 0 fixture(s) and 1 array(s) not compared")
    (small / "msda_core_extra.npz").unlink()

    # a gradient fixture whose training fixture is absent, and a JSON with no arrays
    (small / "model_grad_r50.json").symlink_to(golden_dir / "model_grad_r50.json")
    (small / "model_grad_r50.npz").symlink_to(golden_dir / "model_grad_r50.npz")
    (small / "model_eval_x.json").write_text("{}")
    assert parity_main(args) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("parity: 6 comparisons, 0 failed, 2 fixture(s) and 0 array(s) not compared; exit 1")
    assert any(line.startswith(f"ok   model_grad_r50[{mode}]") and "model_train_r50" in line for line in out)
    assert parity_main(args + ["--allow-partial"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("kernels, core", [("kernel", "MSDeformAttnCoreKernel"), ("auto", None)])
def test_msda_fixture_uses_the_selected_operators(golden_dir, mode, kernels, core):
    from src.layers.ms_deform_attn import build_msda_core

    rows = compare_msda("msda_core", dict(np.load(golden_dir / "msda_core.npz")), mode, kernels)
    assert all(r.ok for r in rows), [r.line() for r in rows if not r.ok]
    expected = core or type(build_msda_core("auto")).__name__
    assert [r.note for r in rows if r.name in ("output", "grad_value", "grad_sampling_locations",
                                               "grad_attention_weights")] == [expected] * 4


def test_encoder_rows_are_the_official_k_l_not_the_static_r_l():
    """A canvas no image fills: the port's layer holds R_l static rows, the official one k_l < R_l;
    only the port's first k_l rows are compared (the rest is masked padding of the static shape)."""
    rng = np.random.default_rng(0)
    k, r = 5, 8
    ref_ids = np.array([[7, 3, 9, 1, 4], [2, 8, 6, 0, 5]])
    ours_ids = np.array([[3, 7, 1, 9, 4, 11, 12, 13], [8, 2, 0, 6, 5, 14, 15, 16]])
    values = rng.standard_normal((2, r, 4))
    ref_values = align_by_ids(values, ours_ids[:, :k], ref_ids)
    g = FixtureArrays({"foreground_inds_l0": ref_ids, "oesm_score_max_l0": ref_values[..., 0],
                       "enc_layer_out_l0": ref_values, "enc_layer_channels": np.arange(4),
                       "enc_layer_out_rownorm_l0": np.linalg.norm(ref_values, axis=-1)})
    ours = PortOutputs(foreground_inds_l0=ours_ids, encoder_foreground_topk=np.array([[k]]),
                       oesm_score_max_l0=values[..., 0], enc_layer_out_l0=values)
    rows = compare_encoder_layer("synthetic", g, ours, 0)
    assert [r.name for r in rows] == ["foreground_inds_l0", "oesm_score_max_l0", "enc_layer_out_l0",
                                      "enc_layer_out_rownorm_l0"]
    assert all(r.ok for r in rows), [r.line() for r in rows]
    assert g.unused() == []
    # a port whose k_l is not the official one fails the selection (and cannot align the rest)
    ours["encoder_foreground_topk"] = np.array([[k + 1]])
    rows = compare_encoder_layer("synthetic", g, ours, 0)
    assert not rows[0].ok and not any(r.ok for r in rows)
