"""train.accumulate_steps: a batch cut into micro-batches gives the gradient of the whole batch
(GT-count normalization included: the two micro-batches hold different numbers of boxes), the
summed gradients are applied once and zeroed, and training runs with it."""
import json

import mindspore as ms
import numpy as np
from distributed_worker import TINY
from mindspore import Tensor
from test_distributed import GRAD_RTOL, GT_COUNTS, write_dataset
from test_train import tiny_trainer


def trainer(root, out, overrides=()):
    return tiny_trainer(root, out, ["train.max_iter=2", "train.checkpoint_period=0", "train.log_period=1",
                                    *overrides], base=TINY)


def relative_error(a, b):
    a, b = np.concatenate([x.ravel() for x in a]), np.concatenate([x.ravel() for x in b])
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_micro_batches_give_the_whole_batch_gradient(tmp_path):
    write_dataset(tmp_path / "data", GT_COUNTS)
    whole = trainer(tmp_path / "data", tmp_path / "whole")
    split = trainer(tmp_path / "data", tmp_path / "split", ["train.accumulate_steps=2"])
    batch = next(iter(whole.batches()))[1][:5]
    one = Tensor(1.0, ms.float32)
    _, grads = whole.step.gradients(*(Tensor(a) for a in batch), *whole.denoising(0, *batch[2:5]), one)
    reference = [g.asnumpy() for g in grads]

    micro = list(zip(*(np.split(a, 2) for a in batch)))
    assert micro[0][4].sum() != micro[1][4].sum()  # the normalization by the whole batch's count matters
    gt_count = Tensor(np.float32(batch[4].sum() / 2))
    for k, part in enumerate(micro):
        split.accumulation.add_micro_batch(*(Tensor(a) for a in part), *split.denoising(0, *part[2:5], micro_batch=k),
                                           one, gt_count)
    averaged = [s.asnumpy() / 2 for s in split.accumulation.sums]
    error = relative_error(averaged, reference)
    print(f"accumulated vs whole-batch gradient: relative error {error:.2e}")
    assert error <= GRAD_RTOL

    before = {p.name: p.asnumpy().copy() for p in split.optimizer.params}
    norm, applied = split.accumulation.apply_sums(Tensor(1e-4, ms.float32))
    assert bool(applied.asnumpy())
    # the norm before clipping is that of the averaged sum (a sum not divided by N doubles it)
    np.testing.assert_allclose(float(norm.asnumpy()), np.sqrt(sum(float((g.astype(np.float64) ** 2).sum())
                                                               for g in reference)), rtol=GRAD_RTOL)
    assert all(not s.asnumpy().any() for s in split.accumulation.sums)
    assert any(not np.array_equal(p.asnumpy(), before[p.name]) for p in split.optimizer.params)
    # nothing of the accumulation goes into training checkpoints
    assert not any(p.name.startswith("grad_sum.") for p in split.step.get_parameters())

    split.train()  # the trainer's own loop (Trainer.run_step), 2 iterations on the compiled graphs
    rows = [json.loads(row) for row in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2] and all(np.isfinite(r["total_loss"]) for r in rows)
    assert all(r["skipped_steps"] == 0 for r in rows)
