"""Custom operators (``ops.Custom`` AOT C++ kernels) and their dispatch helpers.

* ``MSDeformAttnCoreKernel``: fused multi-scale deformable attention sampling core (CPU).
* ``RowGatherKernel`` / ``RowScatterKernel``: sparse token gather/scatter (CPU).

The kernels compile on first use (see ``src.ops.msda_kernel``). The ``*_or_none`` helpers are
what the dispatch points call: with ``required=True`` (impl 'kernel') an unavailable kernel is an
error; with ``required=False`` (impl 'auto') it returns None after logging ONE warning per
process and operator, and the caller uses its pure-MindSpore implementation.
"""
import logging

from .msda_kernel import (KernelUnavailable, MSDeformAttnCoreKernel, check_available, is_available,  # noqa: F401
                          library_path)
from .token_kernel import RowGatherKernel, RowScatterKernel  # noqa: F401

log = logging.getLogger("focus_detr.ops")
_warned = set()


def _warn_once(op, fallback, error):
    if op in _warned:
        return
    _warned.add(op)
    log.warning("custom %s kernel unavailable, falling back to the %s implementation: %s", op, fallback, error)


def msda_core_or_none(required=False, fallback="reference"):
    """``MSDeformAttnCoreKernel()``, or None (one warning) when it cannot run here and not required."""
    try:
        return MSDeformAttnCoreKernel()
    except KernelUnavailable as e:
        if required:
            raise
        _warn_once("deformable attention", fallback, e)
        return None


def token_ops_or_none(required=False, fallback="reference"):
    """``(RowGatherKernel(), RowScatterKernel())``, or None (one warning) as ``msda_core_or_none``."""
    try:
        return RowGatherKernel(), RowScatterKernel()
    except KernelUnavailable as e:
        if required:
            raise
        _warn_once("token gather/scatter", fallback, e)
        return None
