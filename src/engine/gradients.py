"""Per-parameter tuple operations of the train step, as ``HyperMap`` calls: a Python loop over
the ~400 gradients would unroll into one nested call per parameter and exceed graph mode's
call-depth limit."""
from mindspore import ops
from mindspore.ops import composite as C
from mindspore.ops import functional as F

_HYPER_MAP = C.HyperMap()
_square_sum = C.MultitypeFuncGraph("square_sum")
_scale = C.MultitypeFuncGraph("scale")
_zero_unless = C.MultitypeFuncGraph("zero_unless")


@_square_sum.register("Tensor")
def _square_sum_tensor(g):
    return ops.square(g).sum()


@_scale.register("Tensor", "Tensor")
def _scale_tensor(factor, g):
    return g * factor


@_zero_unless.register("Tensor", "Tensor")
def _zero_unless_tensor(keep, g):
    return ops.where(keep, g, ops.zeros_like(g))


def global_norm(grads):
    return ops.sqrt(ops.addn(_HYPER_MAP(_square_sum, grads)))


def scale_all(grads, factor):
    return _HYPER_MAP(F.partial(_scale, factor), grads)


def zero_unless(grads, keep):
    """The gradients where the bool scalar ``keep`` is True, zeros otherwise."""
    return _HYPER_MAP(F.partial(_zero_unless, keep), grads)


def clip_by_global_norm(grads, max_norm):
    """``torch.nn.utils.clip_grad_norm_``: scale by min(1, max_norm / (norm + 1e-6)). Returns the
    clipped gradients and the norm before clipping (what the training log shows)."""
    norm = global_norm(grads)
    return scale_all(grads, ops.clamp(max_norm / (norm + 1e-6), max=1.0)), norm
