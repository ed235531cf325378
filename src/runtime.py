"""Process-level settings shared by every entry point.

MindSpore 2.10 bundles oneDNN 3.10, which on AVX-512 machines picks its reference
(naive) kernel for plain-NCHW convolutions: a ResNet-50 forward at 800x1216 takes
~155 s instead of ~3 s. Capping the ISA at AVX2 makes oneDNN choose the gemm-jit
kernel. The variable is read when the first convolution is created, so it must be
set before then; users who set it themselves keep their value.
"""
import contextlib
import os
import platform
import sys

_X86 = ("x86_64", "amd64", "i386", "i686")


def apply_cpu_isa_fix():
    """Set ONEDNN_MAX_CPU_ISA=AVX2 on x86 CPUs unless the user already chose a value."""
    if platform.machine().lower() in _X86:
        os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")


def cpu_name():
    """The CPU model, for benchmark headers (their figures only compare within one machine)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def set_mode(mode, device_target=None):
    """Select GRAPH_MODE ('graph') or PYNATIVE_MODE ('pynative') and the device."""
    import mindspore as ms

    modes = {"graph": ms.GRAPH_MODE, "pynative": ms.PYNATIVE_MODE}
    if mode not in modes:
        raise ValueError(f"mode must be one of {sorted(modes)}, got {mode!r}")
    ms.set_context(mode=modes[mode])
    if device_target:
        ms.set_device(device_target)


def launched_by_msrun():
    """True in a worker of a multi-worker msrun job (msrun exports the worker count)."""
    return "MS_WORKER_NUM" in os.environ and int(os.environ["MS_WORKER_NUM"]) > 1


def exit_process(code):
    """End a process with ``code`` after flushing the output. ``os._exit`` skips interpreter
    teardown, which can stall on the data pipeline's threads and prints MindSpore's Cell.__del__
    noise; under msrun (any worker count) a normal exit, because its scheduler waits for every
    worker to leave normally."""
    sys.stdout.flush()
    sys.stderr.flush()
    if "MS_WORKER_NUM" in os.environ:
        sys.exit(code)
    os._exit(code)


@contextlib.contextmanager
def mode_scope(mode):
    """``set_mode(mode)`` inside a ``with`` block, the previous mode after it."""
    import mindspore as ms

    previous = ms.get_context("mode")
    set_mode(mode)
    try:
        yield
    finally:
        ms.set_context(mode=previous)


def silence_cell_del_at_exit():
    """Drop the ``AttributeError`` that MindSpore 2.10's ``Cell.__del__`` raises for every live
    Cell while the interpreter shuts down (its module globals are already gone). Harmless, but
    it prints hundreds of tracebacks after every script; any other unraisable error still shows."""
    previous = sys.unraisablehook

    def hook(unraisable):
        obj = getattr(unraisable, "object", None)
        if isinstance(unraisable.exc_value, AttributeError) and getattr(obj, "__qualname__", "") == "Cell.__del__":
            return
        previous(unraisable)

    sys.unraisablehook = hook
