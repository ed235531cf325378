"""Training engine: AdamW against torch's formula, the official schedules, gradient clipping,
parameter groups; and in GRAPH_MODE with a tiny model: overfitting one batch and float16 training.
(Exact resume, also after a killed job: tests/test_resume.py.)"""
import json
import logging
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn

from src.config import load_config
from src.engine.gradients import clip_by_global_norm
from src.engine.lr_schedule import StepSchedule
from src.engine.optimizer import EMA, AdamW, parameter_groups
from src.engine.train_step import LossScale
from src.engine.trainer import Trainer, build_dataset
from src.inference import InferenceNet
from src.modeling.build import build_model
from src.runtime import mode_scope

REPO = Path(__file__).resolve().parents[1]


def torch_adamw(params, grads_per_step, lrs, lr_mults, decays, betas=(0.9, 0.999), eps=1e-8):
    """torch.optim.AdamW's update rule in float64 numpy."""
    params = [p.astype(np.float64) for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t, (grads, lr) in enumerate(zip(grads_per_step, lrs), start=1):
        for i, g in enumerate(grads):
            group_lr = lr * lr_mults[i]
            params[i] = params[i] * (1 - group_lr * decays[i])
            m[i] = betas[0] * m[i] + (1 - betas[0]) * g
            v[i] = betas[1] * v[i] + (1 - betas[1]) * g * g
            m_hat, v_hat = m[i] / (1 - betas[0] ** t), v[i] / (1 - betas[1] ** t)
            params[i] = params[i] - group_lr * m_hat / (np.sqrt(v_hat) + eps)
    return params


class Step(nn.Cell):
    def __init__(self, optimizer):
        super().__init__()
        self.optimizer = optimizer

    def construct(self, grads, lr, apply):
        return self.optimizer(grads, lr, apply)


def test_adamw_matches_torch_and_skips_overflow_steps(mode):
    rng = np.random.default_rng(0)
    init = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(5,)).astype(np.float32)]
    params = [Parameter(Tensor(p), name=f"p{i}") for i, p in enumerate(init)]
    lr_mults, decays = [0.1, 1.0], [1e-4, 0.0]
    step = Step(AdamW(params, lr_mults, decays))
    grads = [[rng.normal(size=p.shape).astype(np.float32) for p in init] for _ in range(5)]
    lrs = [1e-2, 1e-2, 5e-3, 1e-3, 1e-3]
    for t in range(5):
        step(tuple(Tensor(g) for g in grads[t]), Tensor(lrs[t], ms.float32), Tensor(True))
        if t == 2:  # an overflow step in between changes nothing
            before = [p.asnumpy().copy() for p in params]
            step(tuple(Tensor(np.full(p.shape, np.nan, np.float32)) for p in init), Tensor(1.0, ms.float32),
                 Tensor(False))
            assert all(np.array_equal(b, p.asnumpy()) for b, p in zip(before, params))
    ref = torch_adamw(init, grads, lrs, lr_mults, decays)
    for p, r in zip(params, ref):
        np.testing.assert_allclose(p.asnumpy(), r, rtol=1e-5, atol=1e-6)
    assert int(step.optimizer.step.asnumpy()) == 5


def test_ema_update_and_skip(mode):
    params = [Parameter(Tensor(np.ones(3, np.float32)), name="w")]
    ema = EMA(params, 0.9)
    params[0].set_data(Tensor(np.full(3, 2.0, np.float32)))
    ema(Tensor(True))
    ema(Tensor(False))  # a skipped step leaves the average alone
    np.testing.assert_allclose(ema.averages[0].asnumpy(), 0.9 * 1.0 + 0.1 * 2.0, rtol=1e-6)
    assert ema.averages[0].name == "ema.w"


def test_dynamic_loss_scale(mode):
    scale = LossScale(1024.0, dynamic=True, window=2)
    seen = [float(scale(Tensor(f)).asnumpy()) for f in (True, True, False, True, False)]
    assert seen == [1024.0, 2048.0, 1024.0, 1024.0, 512.0]  # x2 after 2 good steps, /2 on overflow
    fixed = LossScale(1.0, dynamic=False)
    assert float(fixed(Tensor(False)).asnumpy()) == 1.0


def test_official_schedules():
    r50_36ep = StepSchedule(1e-4, [150000], [0.1])
    assert r50_36ep(149999) == pytest.approx(1e-4) and r50_36ep(150000) == pytest.approx(1e-5)
    three_x = StepSchedule(1e-4, [210000, 250000], [0.1, 0.01], warmup_iters=1000, warmup_factor=0.001)
    assert three_x(0) == pytest.approx(1e-7)
    assert three_x(500) == pytest.approx(1e-4 * (0.001 * 0.5 + 0.5))
    assert three_x(1000) == pytest.approx(1e-4)
    assert three_x(210000) == pytest.approx(1e-5) and three_x(250000) == pytest.approx(1e-6)
    cfg = load_config(str(REPO / "config/focus_detr_r50_4scale_36ep.yaml"))
    assert (cfg.train.max_iter, cfg.train.lr_milestones) == (270000, [150000])


class Clip(nn.Cell):
    def construct(self, grads):
        return clip_by_global_norm(grads, 0.1)


def test_clip_grad_norm_as_torch(mode):
    grads = (np.full((2, 3), 0.3, np.float32), np.full((4,), -0.2, np.float32))
    clipped, norm = Clip()(tuple(Tensor(g) for g in grads))
    ref_norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
    assert float(norm.asnumpy()) == pytest.approx(ref_norm, rel=1e-6)
    for c, g in zip(clipped, grads):
        np.testing.assert_allclose(c.asnumpy(), g * 0.1 / (ref_norm + 1e-6), rtol=1e-6)


def test_parameter_groups_follow_detectron2():
    cfg = load_config(str(REPO / "config/focus_detr_r50_4scale_12ep.yaml"))
    model = build_model(cfg.model, cfg.kernels)
    params, lr_mults, decays = parameter_groups(model, 1e-4, 0.1)
    by_name = {p.name: (m, d) for p, m, d in zip(params, lr_mults, decays)}
    assert "backbone.conv1.weight" not in by_name  # frozen stem
    assert by_name["backbone.layer1.0.conv1.weight"] == (0.1, 1e-4)
    assert by_name["transformer.decoder.norm.gamma"] == (1.0, 0.0)  # LayerNorm: no decay
    assert by_name["neck.convs.0.norm.beta"] == (1.0, 0.0)  # GroupNorm: no decay
    assert by_name["transformer.tgt_embed.embedding_table"] == (1.0, 1e-4)
    assert by_name["transformer.token_selector.alpha"] == (1.0, 1e-4)
    assert len(params) == len({id(p) for p in params})


# ---- tiny end-to-end runs in graph mode ---------------------------------------------------

TINY = ["model.backbone.depth=18", "model.embed_dim=32", "model.num_heads=2", "model.ffn_dim=64",
        "model.num_encoder_layers=2", "model.cascade=[1.0, 0.6]", "model.num_decoder_layers=2",
        "model.num_queries=20", "model.topk_sa=30", "model.num_select=20", "model.dn_number=6",
        "model.num_classes=3", "data.train_short_sides=[96]", "data.train_max_size=128",
        "data.test_short_side=96", "data.test_max_size=128", "data.canvases=[[128, 128]]",
        "data.eval_canvases=[[128, 128]]", "data.max_boxes=4", "train.batch_size=2", "train.log_period=1",
        "train.checkpoint_period=0", "train.eval_period=0", "train.lr=1e-3", "train.lr_milestones=[]",
        "train.lr_gammas=[]"]


def tiny_trainer(root, out, overrides=(), base=TINY):
    """A Trainer of the tiny model ``base`` (overrides of the quick-start config) on ``root``."""
    ms.set_context(mode=ms.GRAPH_MODE)
    cfg = load_config(str(REPO / "config/quickstart.yaml"), list(base) + [
        f"data.train_json={root}/annotations/instances_train.json", f"data.train_images={root}/train",
        f"train.output_dir={out}"] + list(overrides))
    ms.set_seed(0)
    model = build_model(cfg.model, cfg.kernels)
    logger = logging.getLogger(f"test_train_{out}")
    return Trainer(cfg, model, build_dataset(cfg.data, "train"), None, logger)


def test_best_checkpoint_is_kept_across_a_restart(tiny_data, tmp_path):
    """Every evaluation goes to metrics.jsonl; model_best.ckpt holds the weights of the best AP so
    far, also for a new Trainer on the same output directory (a resumed run); an incomplete
    model_best.ckpt does not count."""
    from src.checkpoint import load_port_checkpoint
    from src.checkpoint.training import BEST_CHECKPOINT, best_checkpoint

    def weights(model):
        return {p.name: p.asnumpy().copy() for p in model.get_parameters()}

    def stats(ap):
        return {"AP": ap, "AP50": 2 * ap, "AP75": ap, "APs": 0.0, "APm": ap, "APl": ap}

    trainer = tiny_trainer(tiny_data, tmp_path)
    best = tmp_path / BEST_CHECKPOINT
    trainer.record_evaluation(10, stats(0.1))
    assert best_checkpoint(str(tmp_path))["iteration"] == 10 and best_checkpoint(str(tmp_path))["AP"] == 0.1
    saved = best.read_bytes()
    at_10 = weights(trainer.model)
    for p in trainer.model.trainable_params():
        p.set_data(Tensor(p.asnumpy() + 1.0))
    trainer.record_evaluation(20, stats(0.05))
    restarted = tiny_trainer(tiny_data, tmp_path)
    for p in restarted.model.trainable_params():
        p.set_data(Tensor(p.asnumpy() + 2.0))
    restarted.record_evaluation(30, stats(0.08))
    assert best.read_bytes() == saved
    restarted.record_evaluation(40, stats(0.2))
    assert best_checkpoint(str(tmp_path))["iteration"] == 40
    check = tiny_trainer(tiny_data, tmp_path / "check").model
    load_port_checkpoint(check, str(best))
    for name, value in weights(check).items():
        np.testing.assert_array_equal(value, weights(restarted.model)[name], err_msg=name)
    assert any(not np.array_equal(at_10[k], v) for k, v in weights(check).items())
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["eval_AP"], r["eval_AP50"]) for r in rows] == \
        [(10, 0.1, 0.2), (20, 0.05, 0.1), (30, 0.08, 0.16), (40, 0.2, 0.4)]
    best.write_bytes(best.read_bytes()[:100])  # a kill while writing it: no best so far
    assert best_checkpoint(str(tmp_path)) is None
    restarted.record_evaluation(50, stats(0.01))
    assert best_checkpoint(str(tmp_path))["iteration"] == 50


def test_train_cli_rejects_unknown_config_key():
    out = subprocess.run([sys.executable, "train.py", "--config", "config/quickstart.yaml", "train.mx_iter=3"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "unknown config key 'train.mx_iter'" in out.stderr


def batch_tensors(trainer):
    """The first training batch of ``trainer`` as step inputs (denoising drawn for iteration 0)."""
    images, sizes, gt_boxes, gt_labels, gt_valid, _, _ = next(iter(trainer.batches()))[1]
    dn_inputs, dn_targets = trainer.denoising(0, gt_boxes, gt_labels, gt_valid)
    return (Tensor(images), Tensor(sizes), Tensor(gt_boxes), Tensor(gt_labels), Tensor(gt_valid),
            dn_inputs, dn_targets)


# steps of the one-batch overfitting runs: the loss halves after about 20 applied steps (float32, O1, O2)
OVERFIT_STEPS = 30
# where float16 training must have taken the loss to (its first step's, times this): not the float32
# run's half, because 2-3 skipped steps and float16 rounding move it around that mark. Measured
# 2026-12-07, O1, seeds 0 / 1 / 2: 0.450 / 0.445 / 0.558 with MindSpore's GELU, 0.516 / 0.453 / 0.631
# with the fused GELU kernel (kernels.gelu); the float32 run of seed 0: 0.444
FLOAT16_OVERFIT_RATIO = 0.7


def overfit(trainer, inputs):
    """``OVERFIT_STEPS`` train steps on ``inputs`` (``batch_tensors(trainer)``) in training mode:
    (the first step's total and weighted losses, computed from the initial weights; the totals of
    the applied steps; the number of skipped steps)."""
    trainer.model.set_train(True)  # batch statistics (the quick-start backbone has trainable BN)
    totals, skipped = [], 0
    for step in range(OVERFIT_STEPS):
        loss, losses, _, applied = trainer.step(*inputs, Tensor(1e-3, ms.float32))
        if step == 0:
            first = (float(loss.asnumpy()), np.array([v.asnumpy() for v in losses]))
        if bool(applied.asnumpy()):
            totals.append(float(loss.asnumpy()))
        else:
            skipped += 1
    return first, totals, skipped


@pytest.fixture(scope="module")
def float32_run(tiny_data, tmp_path_factory):
    """The float32 model overfitting one batch (``overfit``) and its parameter names: the
    reference of both float16 levels, trained once."""
    trainer = tiny_trainer(tiny_data, tmp_path_factory.mktemp("fp32"))
    return overfit(trainer, batch_tensors(trainer)), [p.name for p in trainer.model.get_parameters()]


def test_overfits_one_batch(float32_run):
    """The full train step (denoising, matching, every loss, AdamW) halves the loss on one batch."""
    (_, totals, skipped), _ = float32_run
    assert skipped == 0 and len(totals) == OVERFIT_STEPS
    assert np.isfinite(totals).all()
    assert min(totals[-5:]) <= 0.5 * totals[0], totals[::5]


@pytest.mark.parametrize("level, inference_mode", [("O1", "pynative"), ("O2", "graph")])
def test_float16_training(tiny_data, tmp_path, float32_run, level, inference_mode):
    """O1/O2 on the same weights and batch as float32: the losses of the first step agree to float16
    accuracy; a loss scale that overflows float16 skips steps and halves until it fits; one batch
    is overfitted; parameters stay float32 and detections come out float32 (the O1 inference in
    PyNative: its graph compile took longer than the check, and O2 casts more)."""
    ((ref_total, ref_losses), _, _), ref_names = float32_run
    scale = 2.0 ** 16
    trainer = tiny_trainer(tiny_data, tmp_path, [f"train.amp_level={level}", f"train.loss_scale={scale}"])
    inputs = batch_tensors(trainer)
    (total, losses), totals, skipped = overfit(trainer, inputs)
    np.testing.assert_allclose(total, ref_total, rtol=1e-3)
    np.testing.assert_allclose(losses, ref_losses, rtol=3e-2, atol=3e-3)
    assert skipped >= 1  # 2**16 x the loss overflows float16 in the backward
    assert float(trainer.step.loss_scale.scale.asnumpy()) == scale / 2 ** skipped
    assert np.isfinite(totals).all()
    assert min(totals[-5:]) <= FLOAT16_OVERFIT_RATIO * totals[0], totals[::5]
    assert all(p.dtype == ms.float32 for p in trainer.model.get_parameters())
    # the float16 wrappers keep every parameter name: checkpoints load into a float32 model
    assert [p.name for p in trainer.model.get_parameters()] == ref_names

    with mode_scope(inference_mode):
        net = InferenceNet(trainer.model, trainer.cfg.model.num_select)
        scores, labels, boxes, keep = net(inputs[0], inputs[1], inputs[1])
    assert scores.dtype == boxes.dtype == ms.float32
    assert np.isfinite(boxes.asnumpy()).all()


def test_unknown_amp_level_is_refused(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="train.amp_level 'O3'"):
        tiny_trainer(tiny_data, tmp_path, ["train.amp_level=O3"])
