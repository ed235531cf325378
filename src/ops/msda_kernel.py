"""Fused CPU kernel for the multi-scale deformable attention sampling core.

``MSDeformAttnCoreKernel`` is a drop-in replacement for
``src.layers.ms_deform_attn.MSDeformAttnCoreReference`` (same construct signature, same
semantics): an ``ops.Custom(func_type="aot")`` forward whose ``bprop`` is a second AOT kernel
returning the gradients for value, sampling locations and attention weights.

The C++ sources next to this file (``*.cpp``) are compiled on first use with the machine's
``g++`` (``$CXX`` overrides it) into one shared library, cached by a hash of the sources, the
flags, the compiler version and the CPU: ``<repo>/build/kernels/`` (git-ignored), or
``$FOCUS_DETR_KERNEL_CACHE``, or a per-user temp directory when neither is writable. A missing
compiler or a failed build raises ``KernelUnavailable`` with the reason; ``src.ops.msda_core_or_none``
turns that into one logged warning for the 'auto' dispatch.

The same build is what ``python -m src.ops.msda_kernel`` does ahead of time (prints the path).
"""
import fcntl
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.ops import CustomRegOp, DataType

log = logging.getLogger("focus_detr.ops")

SRC_DIR = Path(__file__).resolve().parent
REPO = SRC_DIR.parents[1]
SOURCES = ("msda_cpu.cpp", "token_ops_cpu.cpp")
LIB_STEM = "focus_detr_ops"
# the compiler; ``$CXX`` overrides it (tests monkeypatch this attribute to simulate a missing one)
CXX = os.environ.get("CXX", "g++")
# -march=native is safe because the cache key contains the CPU's flags (a shared build dir
# used from another CPU model builds its own library instead of loading one it cannot run)
CXXFLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-D_GLIBCXX_USE_CXX11_ABI=0"]
SUPPORTED_DEVICES = ("CPU",)


class KernelUnavailable(RuntimeError):
    """The custom kernels cannot be used here (no compiler, build failure, unsupported device)."""


_lock = threading.Lock()
_built = {}  # (cxx, flags) -> library path or KernelUnavailable


def cache_dir():
    """Where built libraries live: $FOCUS_DETR_KERNEL_CACHE, <repo>/build/kernels, or a temp dir."""
    candidates = []
    if os.environ.get("FOCUS_DETR_KERNEL_CACHE"):
        candidates.append(Path(os.environ["FOCUS_DETR_KERNEL_CACHE"]))
    candidates.append(REPO / "build" / "kernels")
    candidates.append(Path(tempfile.gettempdir()) / f"focus_detr_kernels_{os.getuid()}")
    for path in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True)
            if os.access(path, os.W_OK):
                return path
        except OSError:
            continue
    raise KernelUnavailable(f"no writable kernel cache directory among {[str(p) for p in candidates]}")


def _cpu_signature():
    """Model and ISA flags of this CPU (part of the cache key because of -march=native)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def _compiler_version(cxx):
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelUnavailable(f"C++ compiler {cxx!r} cannot be run ({e})") from e


def library_path(cxx=None):
    """Build (once per process, cached on disk by source hash) and return the kernel library path.

    Raises ``KernelUnavailable`` with a clear reason when there is no compiler or the build fails.
    """
    cxx = cxx or CXX
    key = (cxx, tuple(CXXFLAGS))
    with _lock:
        if key not in _built:
            try:
                _built[key] = _build(cxx)
            except KernelUnavailable as e:
                _built[key] = e
        result = _built[key]
    if isinstance(result, KernelUnavailable):
        raise result
    return result


def _build(cxx):
    compiler = shutil.which(cxx)
    if compiler is None:
        raise KernelUnavailable(f"C++ compiler {cxx!r} not found (install g++ or set $CXX); "
                                "the fused CPU kernels cannot be built")
    sources = [SRC_DIR / name for name in SOURCES]
    digest = hashlib.sha256()
    for src in sources:
        digest.update(src.name.encode() + b"\0" + src.read_bytes() + b"\0")
    digest.update(" ".join(CXXFLAGS).encode())
    digest.update(_compiler_version(compiler).encode())
    digest.update(platform.machine().encode() + _cpu_signature().encode())
    out_dir = cache_dir()
    target = out_dir / f"{LIB_STEM}_{digest.hexdigest()[:16]}.so"
    if target.is_file():
        return str(target)
    with open(out_dir / f"{LIB_STEM}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # concurrent processes build once
        if target.is_file():
            return str(target)
        fd, tmp = tempfile.mkstemp(suffix=".so", prefix=f".{LIB_STEM}_", dir=out_dir)
        os.close(fd)
        cmd = [compiler, *CXXFLAGS, "-o", tmp, *map(str, sources)]
        log.info("building custom kernels: %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as e:
            os.unlink(tmp)
            raise KernelUnavailable(f"kernel build failed to run: {e}") from e
        if proc.returncode != 0:
            os.unlink(tmp)
            raise KernelUnavailable(f"kernel build failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)  # atomic: other processes see either nothing or the whole library
    return str(target)


def current_device():
    return ms.get_context("device_target")


def check_available(device=None):
    """Raise ``KernelUnavailable`` unless the kernels can run on ``device`` (default: current)."""
    device = device or current_device()
    if device not in SUPPORTED_DEVICES:
        raise KernelUnavailable(f"no fused kernel for device {device!r} (built here: {', '.join(SUPPORTED_DEVICES)})")
    library_path()


def is_available(device=None):
    try:
        check_available(device)
        return True
    except KernelUnavailable:
        return False


@ms.constexpr
def spatial_shapes_tensor(spatial_shapes):
    """(L,2) int32 constant (h, w) per level from the static tuple."""
    return Tensor(np.array([[int(h), int(w)] for h, w in spatial_shapes], np.int32).reshape(-1, 2))


def _msda_reg_info():
    return (CustomRegOp("MSDAForward")
            .input(0, "value").input(1, "spatial_shapes").input(2, "sampling_locations").input(3, "attention_weights")
            .output(0, "output")
            .dtype_format(DataType.F32_Default, DataType.I32_Default, DataType.F32_Default, DataType.F32_Default,
                          DataType.F32_Default)
            .target("CPU").get_op_info())


def msda_ops(so=None):
    """(forward, backward) ``ops.Custom`` primitives of the sampling core, forward with bprop."""
    so = so or library_path()
    backward = ops.Custom(f"{so}:MSDABackward", out_shape=lambda v, s, l, a, g: (v, l, a),
                          out_dtype=lambda v, s, l, a, g: (v, l, a), func_type="aot")

    def bprop(value, shapes, locations, weights, out, dout):
        # the backward does not need ``out``; without this edge MindSpore may run it concurrently
        # with the forward, and the two OpenMP teams oversubscribe the cores (measured: ~30% slower)
        dout = ops.depend(dout, out)
        grad_value, grad_locations, grad_weights = backward(value, shapes, locations, weights, dout)
        return grad_value, ops.zeros_like(shapes), grad_locations, grad_weights

    # C++ InferShape/InferType + reg_info (out_shape=None): the form that also survives MINDIR
    # export and reload with dynamic shapes (MINDSPORE_NOTES section 4)
    forward = ops.Custom(f"{so}:MSDAForward", out_shape=None, out_dtype=None, func_type="aot",
                         bprop=bprop, reg_info=_msda_reg_info())
    return forward, backward


class MSDeformAttnCoreKernel(nn.Cell):
    """Fused CPU sampling core; same inputs, output and semantics as ``MSDeformAttnCoreReference``.

    value (B,S,M,D) float32; spatial_shapes: static tuple of (h,w); sampling_locations
    (B,Q,M,L,P,2) (x,y) in [0,1]; attention_weights (B,Q,M,L,P) -> (B,Q,M*D). Building it
    compiles the kernels if needed and raises ``KernelUnavailable`` when that is impossible.
    """

    def __init__(self):
        super().__init__()
        check_available()
        self.forward_op, self.backward_op = msda_ops()

    def construct(self, value, spatial_shapes, sampling_locations, attention_weights):
        shapes = spatial_shapes_tensor(spatial_shapes)
        return self.forward_op(value, shapes, sampling_locations, attention_weights)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(library_path())
