"""The training loop: data, host-side denoising, the compiled train step, logging, periodic
evaluation and exact-resume checkpoints.

Exact resume: everything random is a function of (seed, epoch) for the data plan and of
(seed, rank, iteration) for the denoising noise, so the only state is the parameters, the
optimizer and loss-scale state (all Parameters of the train step) and the iteration counter.
"""
import functools
import json
import math
import os
import time

import mindspore as ms
import numpy as np
from mindspore import Tensor

from ..checkpoint.training import (
    best_checkpoint,
    find_resume_checkpoint,
    manifest_path,
    prune_checkpoints,
    save_best_checkpoint,
    save_training_checkpoint,
    verify_checkpoint,
)
from ..data import AugmentConfig, CocoDetection, build_loader, plan_epoch
from ..inference import InferenceNet
from ..losses.assignment import build_assignment
from ..losses.criterion import FocusDETRCriterion, loss_keys
from ..losses.matcher import HungarianMatcher
from ..modeling.denoising import prepare_denoising
from .accumulation import GradientAccumulation
from .distributed import all_gather_rows
from .evaluator import coco_evaluate, format_per_class, format_stats, predict, results_to_rows, rows_to_results
from .logger import Progress
from .lr_schedule import StepSchedule
from .mixed_precision import apply_mixed_precision
from .optimizer import EMA, AdamW, parameter_groups
from .train_step import LossScale, TrainStep


def augment_config(data_cfg):
    return AugmentConfig(
        train_short_sides=tuple(data_cfg.train_short_sides), train_max_size=data_cfg.train_max_size,
        flip_prob=data_cfg.flip_prob, random_crop=data_cfg.random_crop,
        crop_short_sides=tuple(data_cfg.crop_short_sides), crop_size=tuple(data_cfg.crop_size),
        test_short_side=data_cfg.test_short_side, test_max_size=data_cfg.test_max_size,
        interpolation=data_cfg.interpolation)


def canvases(value):
    return None if value is None else [tuple(int(v) for v in c) for c in value]


def build_dataset(data_cfg, split):
    """The train or val ``CocoDetection`` named by the config (paths checked with clear errors)."""
    json_path, image_dir = data_cfg[f"{split}_json"], data_cfg[f"{split}_images"]
    if not json_path or not image_dir:
        raise ValueError(f"data.{split}_json and data.{split}_images must be set")
    return CocoDetection(json_path, image_dir, filter_empty=data_cfg.filter_empty_train if split == "train" else False,
                         bad_box=data_cfg.bad_box, bad_image=data_cfg.bad_image, box_tolerance=data_cfg.box_tolerance)


def build_eval_loader(cfg, dataset, shard_id=0, num_shards=1):
    return build_loader(dataset, cfg.train.eval_batch_size, train=False, canvases=canvases(cfg.data.eval_canvases),
                        augment=augment_config(cfg.data), num_workers=cfg.data.num_workers,
                        max_boxes=cfg.data.max_boxes, shard_id=shard_id, num_shards=num_shards,
                        multiprocessing=cfg.data.multiprocessing)


def evaluate(cfg, net, dataset, logger, output_dir=None, rank=0, world_size=1):
    """COCO box AP of ``net`` (an ``InferenceNet``) on ``dataset``: logs the COCO summary and the
    per-category table, writes them to ``output_dir/eval_results.json`` (the six numbers of
    ``STAT_NAMES`` and ``per_class``) and returns the six. With ``world_size`` > 1 every rank
    predicts its shard, the detections are gathered, and rank 0 evaluates (the other ranks
    return None)."""
    results = predict(net, build_eval_loader(cfg, dataset, rank, world_size), logger,
                      batch_size=cfg.train.eval_batch_size)
    if world_size > 1:
        results = rows_to_results(all_gather_rows(results_to_rows(results)))
        if rank != 0:
            return None
    stats, summary, per_class = coco_evaluate(dataset, results, output_dir)
    logger.info("COCO bbox evaluation:\n" + summary + format_stats(stats) + "\nper category:\n"
                + format_per_class(per_class))
    if output_dir:
        with open(os.path.join(output_dir, "eval_results.json"), "w") as f:
            json.dump(dict(stats, per_class=per_class), f, indent=1)
    return stats


class Trainer:
    @functools.cached_property
    def eval_net(self):
        """The ``InferenceNet`` of the model being trained, built once so that its graph compiles
        once for every periodic evaluation."""
        return InferenceNet(self.model, self.cfg.model.num_select)

    def __init__(self, cfg, model, train_set, val_set, logger, rank=0, world_size=1):
        self.cfg, self.model, self.logger = cfg, model, logger
        self.train_set, self.val_set = train_set, val_set
        self.rank, self.world_size = rank, world_size
        tc = cfg.train
        if tc.batch_size % world_size:
            raise ValueError(f"train.batch_size {tc.batch_size} is not divisible by {world_size} devices")
        self.local_batch = tc.batch_size // world_size
        if tc.accumulate_steps < 1 or self.local_batch % tc.accumulate_steps:
            raise ValueError(f"train.accumulate_steps {tc.accumulate_steps} does not divide the {self.local_batch} "
                             f"images per device of train.batch_size {tc.batch_size}")
        if rank == 0:
            os.makedirs(tc.output_dir, exist_ok=True)
        self.schedule = StepSchedule(tc.lr, tc.lr_milestones, tc.lr_gammas, tc.warmup_iters, tc.warmup_factor)
        apply_mixed_precision(model, tc.amp_level)
        if tc.recompute:
            if ms.get_context("mode") != ms.GRAPH_MODE:
                raise ValueError("train.recompute needs graph mode (MindSpore's Cell.recompute)")
            for block in model.recompute_blocks():
                block.recompute()
        criterion = FocusDETRCriterion(num_classes=cfg.model.num_classes, num_layers=cfg.model.num_decoder_layers,
                                       matcher=HungarianMatcher(assignment=build_assignment(cfg.kernels.matcher)),
                                       num_boxes_all_reduce=world_size > 1)
        params, lr_mults, decays = parameter_groups(model, tc.weight_decay, tc.backbone_lr_mult)
        self.optimizer = AdamW(params, lr_mults, decays, tuple(tc.betas), tc.eps)
        # float32 needs no loss scaling; float16 gradients underflow without it
        scale = (LossScale() if tc.amp_level == "O0" else
                 LossScale(tc.loss_scale, dynamic=True, window=tc.loss_scale_window))
        ema = EMA(params, tc.ema_decay) if tc.ema_decay > 0 else None
        self.step = TrainStep(model, criterion, self.optimizer, scale, tc.clip_max_norm, world_size, ema)
        self.accumulation = GradientAccumulation(self.step, tc.accumulate_steps) if tc.accumulate_steps > 1 else None
        self.loss_keys = loss_keys(cfg.model.num_decoder_layers)
        self.start_iter = 0
        self.skipped_steps = 0

    def steps_per_epoch(self, epoch):
        return len(plan_epoch(self.train_set, self.local_batch, True, canvases(self.cfg.data.canvases),
                              augment_config(self.cfg.data), self.cfg.train.seed, epoch, self.rank, self.world_size))

    def resume(self, path):
        """Restore parameters, optimizer, EMA and loss-scale state and the iteration from the
        training checkpoint ``path``, or with ``path`` "auto" from the newest complete one in
        ``train.output_dir`` (none: a fresh start). Every rank must resume the same iteration."""
        if path == "auto":
            path = self.find_auto_resume()
        elif os.path.isfile(manifest_path(path)):
            reason = verify_checkpoint(path)
            if reason:
                raise ValueError(f"{path}: not a complete checkpoint: {reason}")
        else:
            self.logger.warning(f"{path}: no manifest beside it, its content cannot be verified")
        if path is not None:
            self.load_training_state(path)
        if self.world_size > 1:
            iterations = all_gather_rows(np.array([[self.start_iter]], np.float32))[:, 0].astype(int)
            if len(set(iterations)) > 1:
                raise ValueError(f"ranks resume from different iterations {iterations.tolist()}: train.output_dir "
                                 f"({self.cfg.train.output_dir}) must be one directory that all nodes share")

    def find_auto_resume(self):
        out = self.cfg.train.output_dir
        path, rejected = find_resume_checkpoint(out)
        for bad, reason in rejected:
            self.logger.warning(f"resume auto: skipping {bad}: {reason}")
        if path is None:
            self.logger.info(f"resume auto: no complete checkpoint in {out}, starting from iteration 0")
        else:
            self.logger.info(f"resume auto: continuing from {path}, the newest complete checkpoint in {out}")
        return path

    def load_training_state(self, path):
        params = ms.load_checkpoint(path)
        if "iteration" not in params:
            raise ValueError(f"{path}: not a training checkpoint (no 'iteration'); use --ckpt for weights")
        names = {p.name for p in self.step.get_parameters()}
        missing = sorted(names - set(params))
        if missing:
            raise ValueError(f"{path}: training state does not match this config; missing {missing[:10]}")
        ms.load_param_into_net(self.step, {k: v for k, v in params.items() if k in names}, strict_load=True)
        self.start_iter = int(params["iteration"].asnumpy())
        self.skipped_steps = int(params["skipped_steps"].asnumpy())
        self.logger.info(f"resumed from {path} at iteration {self.start_iter}")

    def save(self, iteration):
        """Rank 0 writes the checkpoint of ``iteration``, then applies ``train.max_checkpoints``.
        (Parameters and optimizer state are the same on every rank; the running statistics of a
        trainable BatchNorm are rank 0's.)"""
        if self.rank != 0:
            return
        out = self.cfg.train.output_dir
        path = save_training_checkpoint(self.step, out, iteration,
                                        {"iteration": iteration, "skipped_steps": self.skipped_steps})
        deleted = prune_checkpoints(out, self.cfg.train.max_checkpoints, iteration)
        removed = f"; removed {', '.join(map(os.path.basename, deleted))}" if deleted else ""
        self.logger.info(f"saved {path}{removed}")

    def batches(self):
        """(iteration, batch) from ``start_iter`` to ``max_iter``, epoch after epoch."""
        iteration, epoch = 0, 0
        tc, dc = self.cfg.train, self.cfg.data
        while iteration < tc.max_iter:
            steps = self.steps_per_epoch(epoch)
            if steps == 0:
                raise ValueError(f"{self.train_set.ann_file}: fewer training images than batch size {self.local_batch}")
            if iteration + steps <= self.start_iter:  # epoch finished before the checkpoint
                iteration, epoch = iteration + steps, epoch + 1
                continue
            start = max(self.start_iter - iteration, 0)
            loader = build_loader(self.train_set, self.local_batch, True, canvases(dc.canvases), augment_config(dc),
                                  dc.num_workers, tc.seed, epoch, start, dc.max_boxes, self.rank, self.world_size,
                                  dc.multiprocessing)
            iteration += start
            for batch in loader.create_tuple_iterator(num_epochs=1, output_numpy=True):
                if iteration >= tc.max_iter:
                    return
                yield iteration, batch
                iteration += 1
            epoch += 1

    def denoising(self, iteration, gt_boxes, gt_labels, gt_valid, micro_batch=None):
        mc = self.cfg.model
        key = [self.cfg.train.seed, self.rank, iteration] + ([] if micro_batch is None else [micro_batch])
        rng = np.random.default_rng(key)
        dn = prepare_denoising(gt_boxes, gt_labels, gt_valid, num_classes=mc.num_classes, dn_number=mc.dn_number,
                               label_noise_ratio=mc.label_noise_ratio, box_noise_scale=mc.box_noise_scale,
                               num_queries=mc.num_queries, rng=rng)
        # mutable: a plain tuple of Tensors is a graph constant and would recompile every step
        return (ms.mutable(tuple(Tensor(a) for a in dn.model_inputs())),
                ms.mutable(tuple(Tensor(a) for a in dn.criterion_inputs())))

    def train(self):
        tc = self.cfg.train
        self.model.set_train(True)
        progress = Progress(self.start_iter, tc.max_iter, tc.batch_size)
        self.logger.info(f"training from iteration {self.start_iter} to {tc.max_iter}, batch {tc.batch_size} "
                         f"({self.local_batch} per device x {self.world_size})")
        iteration = self.start_iter
        for iteration, batch in self.batches():
            lr = self.schedule(iteration)
            total, losses, grad_norm, applied = self.run_step(iteration, batch[:5], lr)
            if not bool(applied.asnumpy()):
                self.skipped_steps += 1
                self.logger.warning(f"iter {iteration + 1}: non-finite gradients, step skipped "
                                    f"({self.skipped_steps} so far)")
            done = iteration + 1
            if done % tc.log_period == 0 or done == self.start_iter + 1 or done == tc.max_iter:
                self.log(done, float(total.asnumpy()), losses, lr, float(grad_norm.asnumpy()), progress)
            if tc.checkpoint_period and done % tc.checkpoint_period == 0 and done < tc.max_iter:
                self.save(done)
            if (self.val_set is not None and self.rank == 0 and tc.eval_period and done % tc.eval_period == 0
                    and done < tc.max_iter):
                self.record_evaluation(done, evaluate(self.cfg, self.eval_net, self.val_set, self.logger))
                self.model.set_train(True)
        self.save(tc.max_iter)

    def run_step(self, iteration, batch, lr):
        """One optimizer step on ``batch`` (images, sizes, gt_boxes, gt_labels, gt_valid): one
        graph, or with ``train.accumulate_steps`` N > 1 one graph per micro-batch and one to apply.
        Returns (total loss, weighted losses, gradient norm, applied) as Tensors."""
        if self.accumulation is None:
            dn_inputs, dn_targets = self.denoising(iteration, *batch[2:5])
            return self.step(*(Tensor(a) for a in batch), dn_inputs, dn_targets, Tensor(lr, ms.float32))
        n = self.cfg.train.accumulate_steps
        scale = Tensor(self.step.loss_scale.scale.asnumpy())
        gt_count = Tensor(np.float32(batch[4].sum() / n))
        totals, losses = [], []
        for k, micro in enumerate(zip(*(np.split(a, n) for a in batch))):
            dn_inputs, dn_targets = self.denoising(iteration, *micro[2:5], micro_batch=k)
            total, weighted = self.accumulation.add_micro_batch(*(Tensor(a) for a in micro), dn_inputs, dn_targets,
                                                                scale, gt_count)
            totals.append(total.asnumpy() / scale.asnumpy())
            losses.append([v.asnumpy() for v in weighted])
        norm, applied = self.accumulation.apply_sums(Tensor(lr, ms.float32))
        return (Tensor(np.mean(totals, 0)), tuple(Tensor(v) for v in np.mean(losses, 0)), norm, applied)

    def record_evaluation(self, iteration, stats):
        """Rank 0: the AP of the weights after ``iteration`` goes to metrics.jsonl, and to
        ``model_best.ckpt`` when it is the best so far. The best so far is read back from that
        checkpoint's manifest, so a resumed run (which repeats the evaluations after its
        checkpoint, with the same results) never replaces it by a worse one."""
        out = self.cfg.train.output_dir
        with open(os.path.join(out, "metrics.jsonl"), "a") as f:
            f.write(json.dumps({"iteration": iteration, **{f"eval_{k}": v for k, v in stats.items()}}) + "\n")
        best = best_checkpoint(out)
        if best is not None and stats["AP"] <= best["AP"]:
            self.logger.info(f"AP {stats['AP']:.4f} after iteration {iteration}; the best stays {best['AP']:.4f} "
                             f"(iteration {best['iteration']})")
            return
        path = save_best_checkpoint(self.model, out, iteration, stats["AP"])
        self.logger.info(f"best AP so far, {stats['AP']:.4f} after iteration {iteration}: saved {path}")

    def log(self, done, total, losses, lr, grad_norm, progress):
        speed, eta = progress.report(done - 1)
        if not math.isfinite(total):
            self.logger.warning(f"iter {done}: total loss is {total}")
        main = {k: float(v.asnumpy()) for k, v in zip(self.loss_keys, losses)}
        if self.rank == 0:
            with open(os.path.join(self.cfg.train.output_dir, "metrics.jsonl"), "a") as f:
                f.write(json.dumps(dict(main, iteration=done, total_loss=total, lr=lr, grad_norm=grad_norm,
                                        images_per_s=speed, skipped_steps=self.skipped_steps)) + "\n")
        terms = "  ".join(f"{k}: {main[k]:.4f}" for k in ("loss_class", "loss_bbox", "loss_giou", "select_loss"))
        aux = sum(v for k, v in main.items() if k not in ("loss_class", "loss_bbox", "loss_giou", "select_loss"))
        bar_len = 20
        filled = int(bar_len * done / self.cfg.train.max_iter)
        self.logger.info(f"[{'#' * filled}{'.' * (bar_len - filled)}] iter {done}/{self.cfg.train.max_iter}  "
                         f"total: {total:.4f}  {terms}  aux+enc+dn: {aux:.4f}  lr: {lr:.3g}  "
                         f"grad_norm: {grad_norm:.3f}  {speed:.2f} img/s  eta: {eta}  "
                         f"skipped: {self.skipped_steps}  {time.strftime('%H:%M:%S')}")
