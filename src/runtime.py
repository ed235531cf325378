"""Process-level settings shared by every entry point.

MindSpore 2.10 bundles oneDNN 3.10, which on AVX-512 machines picks its reference
(naive) kernel for plain-NCHW convolutions: a ResNet-50 forward at 800x1216 takes
~155 s instead of ~3 s. Capping the ISA at AVX2 makes oneDNN choose the gemm-jit
kernel. The variable is read when the first convolution is created, so it must be
set before then; users who set it themselves keep their value.

The fused CPU kernels (``src.ops``) run on OpenMP threads, MindSpore's own operators on its
thread pool. By default libgomp's idle threads spin for a while after each parallel region,
so after every kernel call they compete for the cores with the MindSpore operators that follow
(the matrix products). ``OMP_WAIT_POLICY=PASSIVE`` makes them sleep at once. libgomp reads the
variable when it is loaded, which ``import mindspore`` does: the entry points import ``src``
first; users who set it themselves keep their value.
"""
import contextlib
import hashlib
import json
import os
import platform
import sys
from pathlib import Path

_X86 = ("x86_64", "amd64", "i386", "i686")


def apply_cpu_isa_fix():
    """Set ONEDNN_MAX_CPU_ISA=AVX2 on x86 CPUs unless the user already chose a value."""
    if platform.machine().lower() in _X86:
        os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")


_openmp_policy_late = False  # libgomp was loaded before apply_openmp_wait_policy set the policy


def _libgomp_loaded():
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            return any("libgomp" in line for line in f)
    except OSError:
        return False


def apply_openmp_wait_policy():
    """Set OMP_WAIT_POLICY=PASSIVE unless the user chose a policy, and remember whether it came
    too late (libgomp already loaded, e.g. ``import mindspore`` before ``import src``)."""
    global _openmp_policy_late
    if "OMP_WAIT_POLICY" not in os.environ:
        _openmp_policy_late = _libgomp_loaded()
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def openmp_wait_policy_late():
    """True when ``apply_openmp_wait_policy`` set the policy after libgomp had read its
    environment: the CPU kernels' idle threads then spin (``src.ops.build`` warns once)."""
    return _openmp_policy_late


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


COMPILE_CACHE_ENV = "FOCUS_DETR_COMPILE_CACHE"
_SOURCE_SUFFIXES = (".py", ".cpp", ".cu", ".h")


def _source_digest():
    """SHA-256 of every graph-building source file: the package (Python and kernels) and the
    entry scripts beside it, which decide the order of the graphs."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    files = [p for p in package.rglob("*") if p.suffix in _SOURCE_SUFFIXES] + list(package.parent.glob("*.py"))
    for path in sorted(files):
        digest.update(str(path.relative_to(package.parent)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def enable_compile_cache(entry, cfg, canvases, world_size=1, **graph_args):
    """Point MindSpore's graph compile cache at a folder of its own for this start, so that a
    second start of the same work loads its graphs instead of compiling them. Returns one line
    for the log saying which folder, or why the cache stays off.

    MindSpore stores the N-th graph a process compiles as ``compile_cache_N`` and checks only
    its source files when loading it: a folder is valid for one sequence of graphs only (another
    config loaded from the same folder fails, or runs the wrong graph). The folder is therefore
    named by everything that decides that sequence: ``entry``, the whole config except
    ``train.output_dir``, ``graph_args`` (the entry's options that add or change graphs), the
    world size, MindSpore's version and device, and the sources (package and entry scripts).
    Input shapes must be fixed as well, so the cache is on only when every graph-compiling input
    has one shape (``canvases``: the canvases the entry will use, one each); with several, which
    one compiles first depends on the data. Once per process: MindSpore numbers the graphs a process compiles
    with the cache on, so a second start inside the same process would continue the count.
    ``FOCUS_DETR_COMPILE_CACHE`` names the root folder (default ``~/.cache/focus_detr/compile``;
    ``off`` disables)."""
    import mindspore as ms

    root = os.environ.get(COMPILE_CACHE_ENV, os.path.join(os.path.expanduser("~"), ".cache", "focus_detr",
                                                          "compile"))
    if root in ("", "off", "0"):
        return f"compile cache: off ({COMPILE_CACHE_ENV}={root!r})"
    if ms.get_context("mode") != ms.GRAPH_MODE:
        return "compile cache: off (PyNative mode compiles no graphs)"
    several = [name for name, shapes in canvases.items() if shapes is None or len(shapes) != 1]
    if several:
        return (f"compile cache: off ({', '.join(several)} not a single canvas: the order in which input shapes "
                "compile depends on the data)")
    config = cfg.to_dict()
    config["train"].pop("output_dir", None)
    key = json.dumps({"entry": entry, "config": config, "graph_args": graph_args, "world_size": world_size,
                      "mindspore": ms.__version__, "device": ms.get_context("device_target"),
                      "sources": _source_digest()}, sort_keys=True, default=str)
    path = os.path.join(root, f"{entry}-{hashlib.sha256(key.encode()).hexdigest()[:20]}")
    reused = os.path.isdir(path)
    os.environ["MS_COMPILER_CACHE_ENABLE"] = "1"
    os.environ["MS_COMPILER_CACHE_PATH"] = path + os.sep  # MindSpore appends rank_N/graph_cache
    return f"compile cache: {'loading graphs from' if reused else 'saving graphs to'} {path}"


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


def release_freed_memory():
    """Give the pages the C heap holds free back to the system (glibc's ``malloc_trim``; returns
    False where the C library has none). Compiling a graph frees most of the compiler's working
    memory, but glibc keeps the freed pages, and the memory pool a graph then runs in is allocated
    beside them (README, "Graph-mode memory on CPU")."""
    import ctypes
    import gc

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return False
    gc.collect()
    trim(0)
    return True


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
