"""AdamW exactly as ``torch.optim.AdamW`` (decoupled weight decay, bias-corrected moments),
with the official detectron2 parameter groups.

MindSpore's ``nn.AdamWeightDecay`` has no bias correction (it drifts from the reference within
a few steps) and ``mint.optim.AdamW`` has no CPU kernel, hence this small implementation. The
learning rate is an input of every step, so the host-side schedule never forces a recompile.
"""
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.ops import composite as C
from mindspore.ops import functional as F

_adamw_update = C.MultitypeFuncGraph("adamw_update")


@_adamw_update.register(*["Tensor"] * 13)
def _adamw_update_tensor(beta1, beta2, eps, lr, correction1, correction2, apply, lr_mult, decay, param,
                         exp_avg, exp_avg_sq, grad):
    group_lr = lr * lr_mult
    m = exp_avg * beta1 + grad * (1.0 - beta1)
    v = exp_avg_sq * beta2 + ops.square(grad) * (1.0 - beta2)
    updated = param * (1.0 - group_lr * decay) - group_lr * (m / correction1) / (ops.sqrt(v / correction2) + eps)
    ops.assign(exp_avg, ops.where(apply, m, exp_avg))
    ops.assign(exp_avg_sq, ops.where(apply, v, exp_avg_sq))
    return ops.assign(param, ops.where(apply, updated, param))


def parameter_groups(model, weight_decay=1e-4, backbone_lr_mult=0.1):
    """(params, lr multipliers, weight decays) following ``get_default_optimizer_params`` with
    ``weight_decay_norm=0``: no decay for LayerNorm/GroupNorm/BatchNorm parameters, x0.1
    learning rate for names containing 'backbone'; frozen parameters are left out."""
    norm_params = set()
    for _, cell in model.cells_and_names():
        if isinstance(cell, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)):
            norm_params.update(id(p) for p in cell.get_parameters(expand=False))
    params, lr_mults, decays = [], [], []
    for p in model.trainable_params():
        params.append(p)
        lr_mults.append(backbone_lr_mult if "backbone" in p.name else 1.0)
        decays.append(0.0 if id(p) in norm_params else weight_decay)
    return params, lr_mults, decays


class AdamW(nn.Cell):
    """``p -= lr*wd*p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
    p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)``, per-parameter lr multiplier and decay.

    ``construct(grads, lr, apply)`` applies one step where the bool tensor ``apply`` is True and
    leaves parameters, moments and the step count untouched otherwise (a loss-scale overflow),
    without branching on a tensor value. State: ``step`` and the moments ``exp_avg.*`` /
    ``exp_avg_sq.*`` (saved with the checkpoint for exact resume).
    """

    def __init__(self, params, lr_mults, weight_decays, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(auto_prefix=False)
        self.params = ms.ParameterTuple(params)
        self.exp_avg = self.params.clone(prefix="optimizer.exp_avg", init="zeros")
        self.exp_avg_sq = self.params.clone(prefix="optimizer.exp_avg_sq", init="zeros")
        self.step = Parameter(Tensor(0, ms.int32), name="optimizer.step", requires_grad=False)
        self.lr_mults = tuple(Tensor(m, ms.float32) for m in lr_mults)
        self.weight_decays = tuple(Tensor(w, ms.float32) for w in weight_decays)
        self.beta1, self.beta2 = Tensor(betas[0], ms.float32), Tensor(betas[1], ms.float32)
        self.eps = Tensor(eps, ms.float32)
        self.hyper_map = C.HyperMap()

    def construct(self, grads, lr, apply):
        step = self.step + apply.astype(ms.int32)
        ops.assign(self.step, step)
        t = ops.maximum(step.astype(ms.float32), 1.0)
        correction1 = 1.0 - ops.pow(self.beta1, t)
        correction2 = 1.0 - ops.pow(self.beta2, t)
        update = F.partial(_adamw_update, self.beta1, self.beta2, self.eps, lr, correction1, correction2, apply)
        return self.hyper_map(update, self.lr_mults, self.weight_decays, self.params, self.exp_avg,
                              self.exp_avg_sq, grads)


_ema_update = C.MultitypeFuncGraph("ema_update")


@_ema_update.register("Tensor", "Tensor", "Tensor", "Tensor")
def _ema_update_tensor(decay, apply, average, param):
    return ops.assign(average, ops.where(apply, average * decay + param * (1.0 - decay), average))


class EMA(nn.Cell):
    """Exponential moving average of the weights, ``avg = decay * avg + (1 - decay) * p`` after
    every applied step (``ema.*`` parameters, saved with the checkpoint). Evaluate with them via
    ``eval.py --ema``."""

    def __init__(self, params, decay):
        super().__init__(auto_prefix=False)
        self.params = ms.ParameterTuple(params)
        self.averages = self.params.clone(prefix="ema", init="same")
        self.decay = Tensor(decay, ms.float32)
        self.hyper_map = C.HyperMap()

    def construct(self, apply):
        return self.hyper_map(F.partial(_ema_update, self.decay, apply), self.averages, self.params)
