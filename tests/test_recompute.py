"""train.recompute (FocusDETR.recompute_blocks: the backbone stages and every encoder and decoder
layer recomputed in the backward pass), official frozen BatchNorm: the loss and gradients of a
step are those without it (one process's, tests/whole_batch.py). With trainable BatchNorm the
backbone is left out: recomputed, its running statistics were updated twice per step (measured:
moving_mean x1.9)."""
import mindspore as ms
import numpy as np
import pytest
from distributed_worker import TINY
from mindspore import Tensor
from test_train import tiny_trainer
from whole_batch import load, tensors


def test_recompute_gives_the_same_step(whole_batch, tmp_path):
    root, single = whole_batch
    trainer = tiny_trainer(root, tmp_path / "recompute", ["train.recompute=true"], base=TINY)
    trainer.model.set_train(True)
    iteration, (images, sizes, gt_boxes, gt_labels, gt_valid, image_ids, _) = next(iter(trainer.batches()))
    plain = load(single, "grads", 0, 1, iteration)
    np.testing.assert_array_equal(image_ids, plain["image_ids"])
    (total, _), grads = trainer.step.gradients(Tensor(images), Tensor(sizes), Tensor(gt_boxes), Tensor(gt_labels),
                                               Tensor(gt_valid), *trainer.denoising(iteration, gt_boxes, gt_labels,
                                                                                    gt_valid), Tensor(1.0, ms.float32))
    assert float(total.asnumpy()) == pytest.approx(float(plain["total"]), rel=1e-6)
    reference = tensors(plain)
    assert [p.name for p in trainer.optimizer.params] == list(reference)
    # to float rounding at each tensor's scale: a recomputed forward calls the CPU kernels again, and
    # their sums round by call count (README, "Distributed training"): 2e-7 on a 0.13 gradient seen
    for p, g in zip(trainer.optimizer.params, grads):
        expected = reference[p.name]
        np.testing.assert_allclose(g.asnumpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max(),
                                   err_msg=p.name)
    assert len(trainer.model.recompute_blocks()) == 4 + 1 + 2  # ResNet stages, TINY's encoder and decoder layers
    bn_model = tiny_trainer(root, tmp_path / "bn", ["model.backbone.norm=bn"], base=TINY).model
    assert len(bn_model.recompute_blocks()) == 1 + 2
