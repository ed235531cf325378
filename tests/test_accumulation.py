"""train.accumulate_steps: a batch cut into micro-batches gives the gradient of the whole batch
(one process's, tests/whole_batch.py; GT-count normalization included: the two micro-batches hold
different numbers of boxes), the summed gradients are applied once and zeroed, and training runs
with it."""
import json

import mindspore as ms
import numpy as np
from distributed_worker import TINY
from mindspore import Tensor
from test_train import tiny_trainer
from whole_batch import GRAD_RTOL, load, relative_error, tensors


def test_micro_batches_give_the_whole_batch_gradient(whole_batch, tmp_path):
    root, single = whole_batch
    split = tiny_trainer(root, tmp_path / "split", ["train.max_iter=2", "train.checkpoint_period=0",
                                                    "train.log_period=1", "train.accumulate_steps=2"], base=TINY)
    _, (*batch, image_ids, _) = next(iter(split.batches()))
    whole = load(single, "grads", 0, 1, 0)
    np.testing.assert_array_equal(image_ids, whole["image_ids"])
    reference = tensors(whole)
    one = Tensor(1.0, ms.float32)

    micro = list(zip(*(np.split(a, 2) for a in batch)))
    assert micro[0][4].sum() != micro[1][4].sum()  # the normalization by the whole batch's count matters
    gt_count = Tensor(np.float32(batch[4].sum() / 2))
    for k, part in enumerate(micro):
        split.accumulation.add_micro_batch(*(Tensor(a) for a in part), *split.denoising(0, *part[2:5], micro_batch=k),
                                           one, gt_count)
    averaged = {p.name: s.asnumpy() / 2 for p, s in zip(split.optimizer.params, split.accumulation.sums)}
    assert averaged.keys() == reference.keys()
    error = relative_error(averaged, reference)
    print(f"accumulated vs whole-batch gradient: relative error {error:.2e}")
    assert error <= GRAD_RTOL

    before = {p.name: p.asnumpy().copy() for p in split.optimizer.params}
    norm, applied = split.accumulation.apply_sums(Tensor(1e-4, ms.float32))
    assert bool(applied.asnumpy())
    # the norm before clipping is that of the averaged sum (a sum not divided by N doubles it)
    np.testing.assert_allclose(float(norm.asnumpy()), np.sqrt(sum(float((g.astype(np.float64) ** 2).sum())
                                                               for g in reference.values())), rtol=GRAD_RTOL)
    assert all(not s.asnumpy().any() for s in split.accumulation.sums)
    assert any(not np.array_equal(p.asnumpy(), before[p.name]) for p in split.optimizer.params)
    # nothing of the accumulation goes into training checkpoints
    assert not any(p.name.startswith("grad_sum.") for p in split.step.get_parameters())

    split.train()  # the trainer's own loop (Trainer.run_step), 2 iterations on the compiled graphs
    rows = [json.loads(row) for row in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2] and all(np.isfinite(r["total_loss"]) for r in rows)
    assert all(r["skipped_steps"] == 0 for r in rows)
