"""Worker of tests/test_distributed.py: a few training steps of a tiny model, started either by
msrun (one process per rank, each with its shard of the batch) or alone (the whole batch; with
``--gradients-only`` the reference of tests/whole_batch.py). A step runs as the train step's two
halves: the gradients it applies (averaged over the ranks) go to OUT/grads_rank{r}_of{w}_step{k}.npz
with the shard's image ids, GT count and total loss; the parameters after the update to
OUT/params_rank{r}_of{w}_step{k}.npz. (msrun runs the whole train step in tests/test_resume.py.)"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from mindspore import Tensor, nn, ops  # noqa: E402

import src  # noqa: E402,F401
from src.config import load_config  # noqa: E402
from src.engine.distributed import init_distributed  # noqa: E402
from src.engine.trainer import Trainer, build_dataset  # noqa: E402
from src.modeling.build import build_model  # noqa: E402
from src.runtime import enable_compile_cache  # noqa: E402

# frozen BatchNorm, no augmentation randomness and noise-free denoising queries: the only
# difference between 1 process x 4 images and 2 processes x 2 images is the averaging over ranks
# (gradients and GT count; the test's data gives every shard the same largest GT count, which
# fixes the denoising layout as in the reference)
TINY = ["model.backbone.depth=18", "model.backbone.norm=frozen_bn", "model.embed_dim=32", "model.num_heads=2",
        "model.ffn_dim=64", "model.num_encoder_layers=1", "model.cascade=[1.0]", "model.num_decoder_layers=2",
        "model.num_queries=20", "model.topk_sa=30", "model.num_select=20", "model.dn_number=4",
        "model.label_noise_ratio=0.0", "model.box_noise_scale=0.0", "model.num_classes=3",
        "data.train_short_sides=[128]", "data.train_max_size=128", "data.flip_prob=0.0",
        "data.canvases=[[128, 128]]", "train.batch_size=4", "train.lr=1e-4", "train.lr_milestones=[]",
        "train.lr_gammas=[]"]


class ApplyGradients(nn.Cell):
    """The train step's second half (``TrainStep.update``) on the gradients its first half (the
    ``AveragedGradients`` Cell the worker calls and saves) returned: the step without compiling
    the forward and backward a second time."""

    def __init__(self, step):
        super().__init__(auto_prefix=False)  # the optimizer's state keeps its names
        self.step = step

    def construct(self, grads, scaled_total, lr):
        return self.step.update(grads, ops.isfinite(scaled_total), lr)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--gradients-only", action="store_true", help="every batch's gradients, no step taken")
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    rank, world = init_distributed()
    root = args.data
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "config", "quickstart.yaml"), TINY + [
        f"data.train_json={root}/annotations/instances_train.json", f"data.train_images={root}/train",
        f"train.output_dir={args.out}", f"train.max_iter={args.steps}"])
    # the two-node run loads the graphs the one-node run of the same world size compiled
    print(enable_compile_cache("distributed_worker", cfg, {"data.canvases": cfg.data.canvases}, world,
                               gradients_only=args.gradients_only), flush=True)
    ms.set_seed(0)
    model = build_model(cfg.model, cfg.kernels)
    trainer = Trainer(cfg, model, build_dataset(cfg.data, "train"), None, logging.getLogger("worker"), rank, world)
    apply = ApplyGradients(trainer.step)
    for iteration, batch in trainer.batches():
        images, sizes, gt_boxes, gt_labels, gt_valid, image_ids, _ = batch
        dn_inputs, dn_targets = trainer.denoising(iteration, gt_boxes, gt_labels, gt_valid)
        # the same Cell the step calls first (its loss scale is 1 in float32)
        (total, _), grads = trainer.step.gradients(Tensor(images), Tensor(sizes), Tensor(gt_boxes),
                                                   Tensor(gt_labels), Tensor(gt_valid), dn_inputs, dn_targets,
                                                   Tensor(1.0, ms.float32))
        np.savez(os.path.join(args.out, f"grads_rank{rank}_of{world}_step{iteration}.npz"),
                 image_ids=image_ids, num_gt=gt_valid.sum(), total=total.asnumpy(),
                 **{p.name: g.asnumpy() for p, g in zip(trainer.optimizer.params, grads)})
        if args.gradients_only:
            continue
        apply(grads, total, Tensor(cfg.train.lr, ms.float32))
        params = {p.name: p.asnumpy() for p in trainer.model.trainable_params()}
        np.savez(os.path.join(args.out, f"params_rank{rank}_of{world}_step{iteration}.npz"), **params)
    print(f"worker rank {rank}/{world} done", flush=True)


if __name__ == "__main__":
    main()  # a normal exit: msrun's scheduler waits for every worker to leave the cluster
