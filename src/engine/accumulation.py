"""Gradient accumulation (``train.accumulate_steps`` = N > 1): each loaded batch is cut into N
micro-batches whose gradients are summed and applied as one step, so a batch costs the
activation memory of 1/N of it.

Why the same update as the whole batch: the losses other than ``select_loss`` are sums over GT
boxes divided by the GT count; every micro-batch is normalized by the whole batch's count
divided by N (``gt_count``, then averaged over the ranks as always), and the summed gradient is
divided by N -- the data-parallel rule with N x world ranks. ``select_loss`` is a mean over
images and averages the same way. As across ranks, the denoising layout of a micro-batch
follows its own largest GT count, and trainable BatchNorm sees micro-batch statistics.

The sums live here, not in the train step, so training checkpoints (written after a whole step,
when the sums are zero) do not change with N.
"""
import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from .gradients import scale_all

_add = ops.MultitypeFuncGraph("add")
_zero = ops.MultitypeFuncGraph("zero")


@_add.register("Tensor", "Tensor")
def _add_tensor(total, g):
    return ops.assign_add(total, g)


@_zero.register("Tensor")
def _zero_tensor(total):
    return ops.assign(total, ops.zeros_like(total))


class AddMicroBatch(nn.Cell):
    """``construct(images, ..., dn_targets, scale, gt_count)``: the micro-batch's gradients (of
    the loss times ``scale``) added to ``sums``; returns (scaled total, weighted losses)."""

    def __init__(self, gradients, sums):
        super().__init__(auto_prefix=False)
        self.gradients, self.sums = gradients, sums
        self.hyper_map = ops.HyperMap()

    def construct(self, images, image_sizes, gt_boxes, gt_labels, gt_valid, dn_inputs, dn_targets, scale, gt_count):
        values, grads = self.gradients(images, image_sizes, gt_boxes, gt_labels, gt_valid, dn_inputs, dn_targets,
                                       scale, gt_count)
        return ops.depend(values, self.hyper_map(_add, self.sums, grads))


class ApplySums(nn.Cell):
    """``construct(lr)``: the summed gradients divided by N go through ``TrainStep.update`` (unscale,
    finite check, clipping, AdamW, EMA, loss scale); the sums are zeroed. Returns (gradient norm
    before clipping, step applied)."""

    def __init__(self, step, sums, micro_batches):
        super().__init__(auto_prefix=False)
        self.train_step, self.sums = step, sums
        self.inverse = Tensor(1.0 / micro_batches, ms.float32)
        self.hyper_map = ops.HyperMap()

    def construct(self, lr):
        grads = scale_all(self.sums, self.inverse)
        norm, finite = self.train_step.update(grads, ops.ones((), ms.bool_), lr)
        return ops.depend((norm, finite), self.hyper_map(_zero, self.sums))


class GradientAccumulation(nn.Cell):
    """The two graphs of an accumulated step of ``step`` (a ``TrainStep``): ``add_micro_batch``
    per micro-batch, then ``apply_sums``."""

    def __init__(self, step, micro_batches):
        super().__init__(auto_prefix=False)
        sums = ParameterTuple(Parameter(ops.zeros(p.shape, p.dtype), name=f"grad_sum.{p.name}",
                                        requires_grad=False) for p in step.optimizer.params)
        self.add_micro_batch = AddMicroBatch(step.gradients, sums)
        self.apply_sums = ApplySums(step, sums, micro_batches)
        self.sums = sums
