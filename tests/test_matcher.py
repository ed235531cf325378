"""Hungarian matcher: every assignment backend (scipy pyfunc, MindSpore's built-in, the AOT kernel
on CPU and the CUDA kernel's source built for the host) gives the golden fixture's matchings and
scipy's assignment through the whole matcher, non-finite costs included; the dispatch point picks
per device and falls back loudly. The operator-level cases (ties, rectangular, padding) are in
tests/test_lsap_kernel.py."""
import logging

import cuda_on_host
import numpy as np
import pytest
from golden_targets import padded_targets
from mindspore import Tensor

from src import ops as kops
from src.losses.assignment import AssignmentBuiltin, AssignmentPyfunc, assign_queries, build_assignment
from src.losses.matcher import HungarianMatcher, scipy_order
from src.ops import build, target_device
from src.ops.lsap_kernel import LinearSumAssignmentKernel

BACKENDS = ("pyfunc", "builtin", "kernel_cpu", "kernel_cuda_on_host")
MATCH_NAMES = tuple(f"aux_{i}" for i in range(5)) + ("main", "enc")


@pytest.fixture(scope="module")
def cuda_on_host_library(tmp_path_factory):
    return cuda_on_host.build_library(tmp_path_factory.mktemp("cuda_on_host"))


@pytest.fixture(params=BACKENDS)
def backend(request, cuda_on_host_library):
    if request.param == "pyfunc":
        return AssignmentPyfunc()
    if request.param == "builtin":
        return AssignmentBuiltin()
    if request.param == "kernel_cpu":
        return LinearSumAssignmentKernel()
    return LinearSumAssignmentKernel(library=cuda_on_host_library)


def test_golden_matchings(mode, golden_dir, backend):
    """The official matchings of all 7 stages (6 decoder layers + encoder) of the training fixture."""
    g = dict(np.load(golden_dir / "model_train_r50.npz"))
    boxes, labels, valid = padded_targets(g)
    logits = np.concatenate([g["aux_pred_logits"], g["pred_logits"][None], g["enc_pred_logits"][None]])
    pred_boxes = np.concatenate([g["aux_pred_boxes"], g["pred_boxes"][None], g["enc_pred_boxes"][None]])
    lead = logits.shape[:2]
    labels = np.where(valid, labels, 0).astype(np.int32)
    matches = HungarianMatcher(assignment=backend)(
        Tensor(logits), Tensor(pred_boxes), Tensor(np.broadcast_to(boxes, lead + boxes.shape[1:]).copy()),
        Tensor(np.broadcast_to(labels, lead + labels.shape[1:]).copy()),
        Tensor(np.broadcast_to(valid, lead + valid.shape[1:]).copy())).asnumpy()
    for row, name in enumerate(MATCH_NAMES):
        for b in range(lead[1]):
            src, tgt = scipy_order(matches[row, b])
            np.testing.assert_array_equal(src, g[f"match_{name}_src_{b}"], err_msg=name)
            np.testing.assert_array_equal(tgt, g[f"match_{name}_tgt_{b}"], err_msg=name)
            assert (matches[row, b, valid[b].sum():] == -1).all()


def random_batch(rng, lead, queries, slots, num_valid, classes=5):
    """Matcher inputs with ``num_valid`` (lead[-1],) valid GT per image; padded GT hold garbage."""
    logits = rng.normal(size=lead + (queries, classes)).astype(np.float32)
    boxes = np.concatenate([rng.uniform(0.2, 0.8, lead + (queries, 2)), rng.uniform(0.05, 0.4, lead + (queries, 2))],
                           -1).astype(np.float32)
    gt = np.concatenate([rng.uniform(0.2, 0.8, lead + (slots, 2)), rng.uniform(0.05, 0.4, lead + (slots, 2))],
                        -1).astype(np.float32)
    labels = rng.integers(0, classes, lead + (slots,)).astype(np.int32)
    valid = np.arange(slots)[None, :] < np.asarray(num_valid)[:, None]
    valid = np.broadcast_to(valid, lead + (slots,)).copy()
    gt[~valid] = 7.0  # nonsense boxes in the padding must not change anything
    return logits, boxes, gt, labels, valid


def reference_matches(matcher, logits, boxes, gt, labels, valid):
    """The pyfunc reference on the cost the matcher computes (NaN/inf mapped as nan_to_num)."""
    cost = matcher.cost_matrix(Tensor(logits), Tensor(boxes), Tensor(gt), Tensor(labels)).asnumpy()
    flat = cost.reshape((-1,) + cost.shape[-2:])
    return assign_queries(flat, valid.reshape(-1, valid.shape[-1]).sum(-1)).reshape(valid.shape)


@pytest.mark.parametrize("case", ["random", "more_gt_than_queries", "non_finite"])
def test_matcher_equals_scipy(mode, backend, case):
    rng = np.random.default_rng({"random": 3, "more_gt_than_queries": 4, "non_finite": 5}[case])
    queries, slots = (30, 12) if case != "more_gt_than_queries" else (5, 8)
    num_valid = {"random": [0, 1, 11, 12], "more_gt_than_queries": [8, 6, 5, 0], "non_finite": [3, 12, 7, 1]}[case]
    logits, boxes, gt, labels, valid = random_batch(rng, (2, 4), queries, slots, num_valid)
    if case == "non_finite":  # a diverged forward: NaN and +-inf logits, a NaN box
        logits[0, 0, 2, 1], logits[0, 1, 4, :] = np.nan, np.inf
        logits[1, 2, 7, 0], boxes[1, 3, 0, 2] = -np.inf, np.nan
    matcher = HungarianMatcher(assignment=backend)
    matches = matcher(Tensor(logits), Tensor(boxes), Tensor(gt), Tensor(labels), Tensor(valid)).asnumpy()
    reference = reference_matches(HungarianMatcher(assignment=AssignmentPyfunc()), logits, boxes, gt, labels, valid)
    np.testing.assert_array_equal(matches, reference)
    assert ((matches >= 0).sum(-1) == np.minimum(valid.sum(-1), queries)).all()


def test_dispatch_per_device(fresh_build_state, caplog):
    with caplog.at_level(logging.INFO, logger="focus_detr.matcher"):
        assert isinstance(build_assignment("auto"), LinearSumAssignmentKernel)  # CPU: the batched kernel
    assert "matcher assignment on CPU: LinearSumAssignmentKernel" in caplog.text
    with target_device("Ascend"):
        assert isinstance(build_assignment("auto"), AssignmentBuiltin)
        with pytest.raises(kops.KernelUnavailable, match="Ascend"):
            build_assignment("kernel")
    assert isinstance(build_assignment("builtin"), AssignmentBuiltin)
    assert isinstance(build_assignment("pyfunc"), AssignmentPyfunc)
    with pytest.raises(ValueError, match="kernels.matcher"):
        build_assignment("hungarian")


def test_gpu_without_kernel_is_an_error(fresh_build_state, monkeypatch):
    """On GPU nothing else compiles (pyfunc: CPU only; the built-in: no GPU kernel): no silent fallback."""
    monkeypatch.setattr(build, "find_nvcc", lambda: None)
    with target_device("GPU"), pytest.raises(kops.KernelUnavailable, match="nvcc"):
        build_assignment("auto")


def test_cpu_falls_back_to_builtin_once(fresh_build_state, monkeypatch, caplog):
    monkeypatch.setattr(build, "CXX", "/nonexistent/bin/g++")
    with caplog.at_level(logging.WARNING, logger="focus_detr.ops"):
        cells = [build_assignment("auto") for _ in range(3)]
    assert all(isinstance(c, AssignmentBuiltin) for c in cells)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "linear sum assignment" in warnings[0] and "builtin" in warnings[0], warnings
    with pytest.raises(kops.KernelUnavailable):
        build_assignment("kernel")


def test_trainer_uses_the_configured_backend(tmp_path):
    from src.config import load_config
    from src.engine.trainer import Trainer
    from src.modeling.build import build_model

    cfg = load_config("config/quickstart.yaml", ["kernels.matcher=builtin", f"train.output_dir={tmp_path}",
                                                 "model.num_encoder_layers=1", "model.cascade=[1.0]",
                                                 "model.num_decoder_layers=1"])
    trainer = Trainer(cfg, build_model(cfg.model, cfg.kernels), None, None, logging.getLogger("test"))
    assert isinstance(trainer.step.gradients.model_with_loss.criterion.matcher.assignment, AssignmentBuiltin)
