"""Custom operators (``ops.Custom`` AOT C++ kernels) and their dispatch helpers.

* ``MSDeformAttnCoreKernel``: fused multi-scale deformable attention sampling core.
* ``RowGatherKernel`` / ``RowScatterKernel``: sparse token gather/scatter.
* ``LinearSumAssignmentKernel``: the Hungarian matcher's batched assignment (scipy's, exactly).
* ``GELUKernel``: the exact GELU, forward and backward each one pass (CPU only).
* ``WindowAttentionKernel``: Swin's window attention core, one pass per window (CPU only).
* ``LayerNormKernel``: LayerNorm over the last axis, one pass per row (CPU only).
* ``FrozenBatchNormKernel``: a ResNet's frozen BatchNorm with its shortcut and ReLU, one pass (CPU only).
* ``SineEmbeddingKernel``: the image's sine position embedding, one pass (CPU only).

Each but the last five exists for CPU (C++/OpenMP) and GPU (CUDA) and compiles on first use
(``src.ops.build``); on GPU and Ascend MindSpore's GELU and LayerNorm are fused kernels already and MindSpore's
batched products are the fast path for the window attention. On Ascend
the sampling core is MindSpore's built-in fused operator (``MSDeformAttnCoreAscend``) and the
token gather/scatter use the pure-MindSpore reference. The ``*_or_none`` helpers are
what the dispatch points call: with ``required=True`` (impl 'kernel') an unavailable kernel is an
error; with ``required=False`` (impl 'auto') it returns None after logging ONE warning per
process and operator, and the caller uses its pure-MindSpore implementation.
"""
import logging

from .build import (  # noqa: F401
    KernelUnavailable,
    check_available,
    current_device,
    is_available,
    library_path,
    running_on_target,
    target_device,
)
from .frozen_bn_kernel import FrozenBatchNormKernel  # noqa: F401
from .gelu_kernel import GELUKernel  # noqa: F401
from .layer_norm_kernel import LayerNormKernel  # noqa: F401
from .lsap_kernel import LinearSumAssignmentKernel  # noqa: F401
from .msda_ascend import MSDeformAttnCoreAscend  # noqa: F401
from .msda_kernel import MSDeformAttnCoreKernel  # noqa: F401
from .sine_embedding_kernel import SineEmbeddingKernel  # noqa: F401
from .token_kernel import RowGatherKernel, RowScatterKernel  # noqa: F401
from .window_attention_kernel import WindowAttentionKernel  # noqa: F401

log = logging.getLogger("focus_detr.ops")
_warned = set()


def _warn_once(op, fallback, error):
    if op in _warned:
        return
    _warned.add(op)
    log.warning("custom %s kernel unavailable, falling back to the %s implementation: %s", op, fallback, error)


def _built_or_none(build, op, required, fallback):
    """``build()``; where it raises ``KernelUnavailable``: the error when ``required``, else None
    after one warning per process and ``op``."""
    try:
        return build()
    except KernelUnavailable as e:
        if required:
            raise
        _warn_once(op, fallback, e)
        return None


def _device_msda_core():
    if current_device() == "Ascend":  # probed only where it can run (not inside target_device)
        return MSDeformAttnCoreAscend(probe=running_on_target())
    return MSDeformAttnCoreKernel()


def msda_core_or_none(required=False, fallback="reference"):
    """The fused core of the current device (``MSDeformAttnCoreAscend`` on Ascend, else
    ``MSDeformAttnCoreKernel``), or None (one warning) when it cannot run here and not required."""
    return _built_or_none(_device_msda_core, "deformable attention", required, fallback)


def token_ops_or_none(required=False, fallback="reference"):
    """``(RowGatherKernel(), RowScatterKernel())``, or None (one warning) as ``msda_core_or_none``."""
    return _built_or_none(lambda: (RowGatherKernel(), RowScatterKernel()), "token gather/scatter", required,
                          fallback)


def assignment_kernel_or_none(required=False, fallback="builtin"):
    """``LinearSumAssignmentKernel()``, or None (one warning) as ``msda_core_or_none``."""
    return _built_or_none(LinearSumAssignmentKernel, "linear sum assignment", required, fallback)


def gelu_kernel_or_none(required=False, fallback="native"):
    """``GELUKernel()``, or None (one warning) as ``msda_core_or_none``."""
    return _built_or_none(GELUKernel, "GELU", required, fallback)


def window_attention_kernel_or_none(head_dim, tokens, required=False, fallback="native"):
    """``WindowAttentionKernel(head_dim, tokens)``, or None (one warning) as ``msda_core_or_none``."""
    return _built_or_none(lambda: WindowAttentionKernel(head_dim, tokens), "window attention", required, fallback)


def layer_norm_kernel_or_none(dim, epsilon, required=False, fallback="native"):
    """``LayerNormKernel(dim, epsilon)``, or None (one warning) as ``msda_core_or_none``."""
    return _built_or_none(lambda: LayerNormKernel(dim, epsilon), "LayerNorm", required, fallback)


def frozen_bn_kernel_or_none(epsilon, required=False, fallback="native"):
    """``FrozenBatchNormKernel(epsilon)``, or None (one warning) as ``msda_core_or_none``."""
    return _built_or_none(lambda: FrozenBatchNormKernel(epsilon), "frozen BatchNorm", required, fallback)


def sine_embedding_kernel_or_none(required=False, fallback="native"):
    """``SineEmbeddingKernel()``, or None (one warning) as ``msda_core_or_none``."""
    return _built_or_none(SineEmbeddingKernel, "sine position embedding", required, fallback)
