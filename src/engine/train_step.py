"""One training iteration as a single graph: forward, criterion, backward, loss scaling,
gradient clipping and the AdamW update.

Inputs are static-shape tensors (a canvas bucket fixes the image shape, GT and denoising slots
are padded), so graph mode compiles once per canvas. Steps whose gradients are not finite (a
loss-scale overflow in mixed precision, or a diverging loss) leave every parameter and
optimizer state untouched; they are counted, and the dynamic loss scale is halved.
"""
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.ops import functional as F

from .gradients import clip_by_global_norm, global_norm, scale_all, zero_unless


class ModelWithLoss(nn.Cell):
    """Forward + criterion; returns (loss * scale, (weighted losses...))."""

    def __init__(self, model, criterion):
        super().__init__(auto_prefix=False)  # keep the model's parameter names (checkpoints load into it)
        self.model = model
        self.criterion = criterion

    def construct(self, images, image_sizes, gt_boxes, gt_labels, gt_valid, dn_inputs, dn_targets, scale,
                  gt_count=None):
        outputs, _ = self.model(images, image_sizes, dn_inputs)
        # float16 training (src.engine.mixed_precision): match and compute every loss in float32
        outputs = F.mixed_precision_cast(ms.float32, outputs)
        total, losses, _, _ = self.criterion(outputs, gt_boxes, gt_labels, gt_valid, image_sizes,
                                             (images.shape[2], images.shape[3]), dn_targets, gt_count)
        return total * scale, losses


class LossScale(nn.Cell):
    """Dynamic loss scale (halve on overflow, double after ``window`` good steps) or a fixed one
    (``dynamic=False``). Scale 1 with ``dynamic=False`` is plain float32 training."""

    def __init__(self, init_scale=1.0, dynamic=False, window=1000):
        super().__init__(auto_prefix=False)
        self.scale = Parameter(Tensor(init_scale, ms.float32), name="train_state.loss_scale", requires_grad=False)
        self.good_steps = Parameter(Tensor(0, ms.int32), name="train_state.good_steps", requires_grad=False)
        self.dynamic = dynamic
        self.window = window

    def construct(self, finite):
        if not self.dynamic:  # a Python attribute, fixed at compile time
            return self.scale
        good = ops.where(finite, self.good_steps + 1, 0)
        grow = good >= self.window
        new_scale = ops.where(finite, ops.where(grow, self.scale * 2.0, self.scale),
                              ops.maximum(self.scale * 0.5, 1.0))
        ops.assign(self.good_steps, ops.where(grow, 0, good))
        ops.assign(self.scale, new_scale)
        return new_scale


class AveragedGradients(nn.Cell):
    """``construct(images, image_sizes, gt_boxes, gt_labels, gt_valid, dn_inputs, dn_targets, scale)``
    returns ((scaled total, weighted losses), gradients of the scaled total w.r.t. ``params``),
    the gradients averaged over the data-parallel ranks when ``world_size`` > 1. A Cell of its own
    so that the distributed test can compare the reduced gradients with one process's."""

    def __init__(self, model_with_loss, params, world_size=1):
        super().__init__(auto_prefix=False)
        self.model_with_loss = model_with_loss
        self.grad_fn = ops.value_and_grad(model_with_loss, None, params, has_aux=True)
        self.grad_reducer = nn.DistributedGradReducer(params, mean=True) if world_size > 1 else None

    def construct(self, images, image_sizes, gt_boxes, gt_labels, gt_valid, dn_inputs, dn_targets, scale,
                  gt_count=None):
        values, grads = self.grad_fn(images, image_sizes, gt_boxes, gt_labels, gt_valid, dn_inputs, dn_targets,
                                     scale, gt_count)
        if self.grad_reducer is not None:
            grads = self.grad_reducer(grads)
        return values, grads


class TrainStep(nn.Cell):
    """``construct(images, image_sizes, gt_boxes, gt_labels, gt_valid, dn_inputs, dn_targets, lr)``
    returns (total loss, weighted losses tuple, gradient norm before clipping, step applied).
    With ``world_size`` > 1 the gradients are averaged over the ranks before anything else, so
    every rank takes the same step (the criterion averages num_boxes over ranks as detrex)."""

    def __init__(self, model, criterion, optimizer, loss_scale, clip_max_norm=0.1, world_size=1, ema=None):
        super().__init__(auto_prefix=False)
        self.ema = ema
        self.optimizer = optimizer
        self.loss_scale = loss_scale
        self.clip_max_norm = clip_max_norm
        # data parallel: every rank applies the gradient averaged over all ranks
        self.gradients = AveragedGradients(ModelWithLoss(model, criterion), optimizer.params, world_size)

    def construct(self, images, image_sizes, gt_boxes, gt_labels, gt_valid, dn_inputs, dn_targets, lr):
        scale = self.loss_scale.scale
        (scaled_total, losses), grads = self.gradients(images, image_sizes, gt_boxes, gt_labels, gt_valid,
                                                       dn_inputs, dn_targets, scale)
        total = scaled_total / scale  # before update() changes the loss scale
        norm, finite = self.update(grads, ops.isfinite(scaled_total), lr)
        return total, losses, norm, finite

    def update(self, scaled_grads, loss_finite, lr):
        """Unscale, check, clip and apply gradients of the loss times ``loss_scale.scale``; then
        the EMA and the loss scale. Returns (gradient norm before clipping, step applied). Also
        the last part of an accumulated step (src.engine.accumulation)."""
        grads = scale_all(scaled_grads, 1.0 / self.loss_scale.scale)
        finite = ops.logical_and(loss_finite, ms.amp.all_finite(grads))
        if self.clip_max_norm > 0:
            grads, norm = clip_by_global_norm(grads, self.clip_max_norm)
        else:
            norm = global_norm(grads)
        grads = zero_unless(grads, finite)
        self.optimizer(grads, lr, finite)
        if self.ema is not None:
            self.ema(finite)
        self.loss_scale(finite)
        return norm, finite
