"""LayerNorm's dispatch point (``kernels.layer_norm``).

Every LayerNorm of the model normalizes the last axis with epsilon 1e-5 (the official code's
``nn.LayerNorm(dim)``). The reference is MindSpore's ``nn.LayerNorm``; the fused CPU kernel
(``src.ops.LayerNormKernel``) is a subclass of it, so parameters, checkpoint keys and the
mixed-precision and weight-decay rules that look for ``nn.LayerNorm`` are the same for both.
"""
from mindspore import nn

EPSILON = 1e-5


def build_layer_norm(dim, impl="native"):
    """A LayerNorm over a last axis of size ``dim``.

    ``impl``: 'native' (``nn.LayerNorm``), 'kernel' (``src.ops.LayerNormKernel``, CPU only; an
    error where it cannot be built) or 'auto' (the kernel where it can run, else 'native' with one
    warning per process)."""
    if impl == "native":
        return nn.LayerNorm((dim,), epsilon=EPSILON)
    if impl in ("auto", "kernel"):
        from ..ops import layer_norm_kernel_or_none  # lazy: compiles the kernels on first use only

        kernel = layer_norm_kernel_or_none(dim, EPSILON, required=impl == "kernel", fallback="native")
        return kernel if kernel is not None else nn.LayerNorm((dim,), epsilon=EPSILON)
    raise ValueError(f"kernels.layer_norm: unknown implementation {impl!r} (auto | kernel | native)")
