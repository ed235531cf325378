"""Static canvases change no result (``model.canvas: extent``, the default): the golden fixtures
on a canvas larger than the official padded batch give the fixture's detections (``model_eval_r50``)
at the fixture tolerances, and its losses and gradients (``model_grad_r50``: tests/test_grad_parity.py
runs its graph-mode check on ``CANVAS``); an exported MINDIR of the larger canvas gives the Python
model's detections there.
(``model.canvas: padded`` reproduces the eval fixture on its own canvas: ``tests/test_eval.py``.)

The canvas (424, 452) is not a multiple of any level stride, so every map has a ceil-rounded
border beyond the fixture's 384 x 384 batch."""
import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

import export
from src.config import load_config
from src.inference import build_inference_net
from src.runtime import mode_scope
from src.tools.parity.golden import (
    FixtureArrays,
    build_golden_model,
    eval_batch,
    fixture_model_config,
)
from src.tools.parity.model import compare_detections
from src.tools.parity.report import TOL_BOX, TOL_ENCODER
from src.tools.parity.runs import run_eval_model

REPO = Path(__file__).resolve().parents[1]
CANVAS = (424, 452)


def failures(rows):
    return [r.line() for r in rows if not r.ok]


@pytest.fixture(scope="module")
def eval_fixture(golden_dir):
    meta = json.load(open(golden_dir / "model_eval_r50.json"))
    return FixtureArrays(np.load(golden_dir / "model_eval_r50.npz")), meta


def eval_rows(golden_dir, eval_fixture, mode, canvas, overrides=()):
    g, meta = eval_fixture
    model = build_golden_model(str(golden_dir), meta, num_classes=80, kernels="kernel", overrides=overrides)
    ours = run_eval_model(model, g, mode, canvas)
    return compare_detections("model_eval_r50@canvas", g, ours["det"])


def test_detections_on_a_larger_canvas(golden_dir, eval_fixture, mode):
    rows = eval_rows(golden_dir, eval_fixture, mode, CANVAS)
    assert not failures(rows), "\n".join(failures(rows))
    assert sum(r.name.startswith("det_boxes_") for r in rows) == 2


def test_exported_mindir_of_a_larger_canvas_equals_the_python_model(golden_dir, eval_fixture, tmp_path):
    """export.py with a fixed canvas larger than the images gives the detections of the Python
    model on that canvas, whose equality with the fixture is ``test_detections_on_a_larger_canvas``.
    The exported graph has no teacher forcing, so the Python model runs without it too, and on
    the same canvas: across canvases, encoder scores move by float rounding, proposals that tie
    within it may trade places in the two-stage order, and each place has its own learned query
    (README, "Static canvases")."""
    g, meta = eval_fixture
    ms.set_context(mode=ms.GRAPH_MODE)
    overrides = fixture_model_config(meta) + ["model.num_classes=80",
                                               f"model.num_select={g['postprocess_topk_values'].shape[1]}"]
    config = str(REPO / "config" / "base.yaml")
    net = build_inference_net(load_config(config, overrides + export.PORTABLE_KERNELS))
    weights = build_golden_model(str(golden_dir), meta, num_classes=80, kernels="pure")
    ms.load_param_into_net(net.model, {p.name: p for p in weights.get_parameters()})
    ckpt = str(tmp_path / "golden.ckpt")
    ms.save_checkpoint(net.model, ckpt)
    name = str(tmp_path / "golden")
    assert export.main(["--config", config, "--ckpt", ckpt, "--file_format", "MINDIR", "--batch", "2",
                        "--height", str(CANVAS[0]), "--width", str(CANVAS[1]), "--output", name] + overrides) == 0
    orig_sizes = Tensor(g["orig_sizes"].astype(np.int32))
    images, model_sizes, _ = eval_batch(g, True, CANVAS)
    with mode_scope("pynative"):  # the export compiled the graph; graph mode gives PyNative's results
        expected = [t.asnumpy() for t in net(Tensor(images), Tensor(model_sizes), orig_sizes)]
    got = [t.asnumpy() for t in nn.GraphCell(ms.load(name + ".mindir"))(Tensor(images), Tensor(model_sizes),
                                                                         orig_sizes)]
    box_tol = TOL_BOX * float(g["orig_sizes"].max())
    for b in range(2):
        unmatched = same_detections(expected, got, b, TOL_ENCODER, box_tol)
        # a top-k may swap only where scores tie within tolerance of the k-th
        assert all(abs(expected[0][b][i] - expected[0][b][-1]) <= TOL_ENCODER for i in unmatched), unmatched


def same_detections(expected, got, b, score_tol, box_tol):
    """Indices of image b's expected detections (scores, labels, boxes, keep) with no equal
    detection (same label and keep, score and box within tolerance) among ``got``'s; each of
    ``got``'s pairs with one, so near-tied neighbours may trade places."""
    free = list(range(len(got[0][b])))
    unmatched = []
    for i in range(len(expected[0][b])):
        match = next((j for j in free if got[1][b][j] == expected[1][b][i] and got[3][b][j] == expected[3][b][i]
                      and abs(got[0][b][j] - expected[0][b][i]) <= score_tol
                      and np.abs(got[2][b][j] - expected[2][b][i]).max() <= box_tol), None)
        if match is None:
            unmatched.append(i)
        else:
            free.remove(match)
    return unmatched


def test_swin_residual_on_a_larger_canvas_is_bounded(golden_dir):
    """Not exact (README, "Static canvases"): the Swin backbone's windows, their padding and the
    shifted-window masks follow the canvas. Measured on 2026-12-02 with this canvas: 155 and 189 of
    the 300 post-processed (query, class) pairs in common, common scores within 0.030. The bound
    is loose (a regression of the extent machinery elsewhere, or of the Swin code, moves it far more).
    PyNative: the residual is the model's, not the mode's (graph mode equals PyNative on the fixture
    canvas, tests/test_parity.py), and it spares the suite compiling a full-size Swin-T graph here."""
    meta = json.load(open(golden_dir / "model_eval_swin_t.json"))
    g = FixtureArrays(np.load(golden_dir / "model_eval_swin_t.npz"))
    model = build_golden_model(str(golden_dir), meta, num_classes=80, kernels="kernel")
    scores, _, _, _, flat = run_eval_model(model, g, "pynative", CANVAS)["det"]
    for b in range(2):
        ref_flat, ref_scores = g["postprocess_topk_indices"][b], g["postprocess_topk_values"][b]
        ours = {int(f): float(s) for f, s in zip(flat[b], scores[b])}
        common = [i for i, f in enumerate(ref_flat) if int(f) in ours]
        assert len(common) >= 120, len(common)
        assert max(abs(ours[int(ref_flat[i])] - ref_scores[i]) for i in common) <= 0.06
