"""AdamW exactly as ``torch.optim.AdamW`` (decoupled weight decay, bias-corrected moments),
with the official detectron2 parameter groups.

MindSpore's ``nn.AdamWeightDecay`` has no bias correction (it drifts from the reference within
a few steps) and ``mint.optim.AdamW`` has no CPU kernel, hence this small implementation. The
learning rate is an input of every step, so the host-side schedule never forces a recompile.
"""
import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops


def parameter_groups(model, weight_decay=1e-4, backbone_lr_mult=0.1):
    """(params, lr multipliers, weight decays) following ``get_default_optimizer_params`` with
    ``weight_decay_norm=0``: no decay for LayerNorm/GroupNorm parameters, x0.1 learning rate for
    names containing 'backbone'; frozen parameters are left out."""
    norm_params = set()
    for _, cell in model.cells_and_names():
        if isinstance(cell, (nn.LayerNorm, nn.GroupNorm)):
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

    ``construct(grads, lr)`` applies one step and returns True. State: ``step`` and the moments
    ``exp_avg.*`` / ``exp_avg_sq.*`` (saved with the checkpoint for exact resume).
    """

    def __init__(self, params, lr_mults, weight_decays, betas=(0.9, 0.999), eps=1e-8):
        super().__init__()
        self.params = ms.ParameterTuple(params)
        self.exp_avg = self.params.clone(prefix="optimizer.exp_avg", init="zeros")
        self.exp_avg_sq = self.params.clone(prefix="optimizer.exp_avg_sq", init="zeros")
        self.step = Parameter(Tensor(0, ms.int32), name="optimizer.step", requires_grad=False)
        self.lr_mults = tuple(float(m) for m in lr_mults)
        self.weight_decays = tuple(float(w) for w in weight_decays)
        self.beta1, self.beta2, self.eps = float(betas[0]), float(betas[1]), float(eps)

    def construct(self, grads, lr):
        step = self.step + 1
        ops.assign(self.step, step)
        t = step.astype(ms.float32)
        correction1 = 1.0 - ops.pow(Tensor(self.beta1, ms.float32), t)
        correction2 = 1.0 - ops.pow(Tensor(self.beta2, ms.float32), t)
        for i in range(len(self.params)):
            p, g = self.params[i], grads[i]
            group_lr = lr * self.lr_mults[i]
            m = self.exp_avg[i] * self.beta1 + g * (1.0 - self.beta1)
            v = self.exp_avg_sq[i] * self.beta2 + ops.square(g) * (1.0 - self.beta2)
            ops.assign(self.exp_avg[i], m)
            ops.assign(self.exp_avg_sq[i], v)
            decayed = p * (1.0 - group_lr * self.weight_decays[i])
            denom = ops.sqrt(v / correction2) + self.eps
            ops.assign(p, decayed - group_lr * (m / correction1) / denom)
        return True
