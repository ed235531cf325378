"""Build and cache the custom kernel libraries: C++ (OpenMP) for CPU, CUDA for GPU.

``library_path(device)`` compiles the sources of ``device`` on first use with the machine's
compiler (``g++``, ``$CXX`` overrides it; ``nvcc`` from ``$NVCC``, ``$PATH``, ``$CUDA_HOME`` or
``/usr/local/cuda*``) into one shared library, cached by a hash of the sources, headers, flags,
the compiler version and (CPU) the CPU model: ``<repo>/build/kernels/`` (git-ignored), or
``$FOCUS_DETR_KERNEL_CACHE``, or a per-user temp directory when neither is writable. A missing
compiler or a failed build raises ``KernelUnavailable`` with the reason; ``src.ops`` turns that
into one logged warning for the 'auto' dispatch.

CUDA: MindSpore's own auto-compile of ``.cu`` files passes ``compute_70``, which nvcc 13
rejects, so the library is precompiled here for ``$FOCUS_DETR_CUDA_ARCHS`` (default 80 and 90:
A100, H100/H200). ``python -m src.ops.build [CPU|GPU]`` builds ahead of time and prints the path.
"""
import contextlib
import fcntl
import glob
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import mindspore as ms

from ..runtime import openmp_wait_policy_late

log = logging.getLogger("focus_detr.ops")

SRC_DIR = Path(__file__).resolve().parent
REPO = SRC_DIR.parents[1]
LIB_STEM = "focus_detr_ops"
HASH_CHARS = 16  # of the source hash in a library's file name
SOURCES = {"CPU": ("msda_cpu.cpp", "token_ops_cpu.cpp", "lsap_cpu.cpp", "gelu_cpu.cpp", "window_attention_cpu.cpp",
                   "layer_norm_cpu.cpp", "frozen_bn_cpu.cpp", "sine_embedding_cpu.cpp", "aot_infer.cpp"),
           "GPU": ("msda_cuda.cu", "token_ops_cuda.cu", "lsap_cuda.cu", "aot_infer.cpp")}
HEADERS = ("msda_sampling.h", "lsap.h", "cpu_float32.h")
SUPPORTED_DEVICES = tuple(SOURCES)
# the compilers; tests monkeypatch these attributes to simulate missing ones
CXX = os.environ.get("CXX", "g++")
NVCC = os.environ.get("NVCC", "")
# -march=native is safe because the cache key contains the CPU's flags (a shared build dir
# used from another CPU model builds its own library instead of loading one it cannot run)
CXXFLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-D_GLIBCXX_USE_CXX11_ABI=0"]
CUDA_ARCHS = os.environ.get("FOCUS_DETR_CUDA_ARCHS", "80 90").split()
NVCCFLAGS = (["-O3", "-std=c++17", "--shared", "-Xcompiler", "-fPIC", "-D_GLIBCXX_USE_CXX11_ABI=0"]
             + [f"-gencode=arch=compute_{a},code=sm_{a}" for a in CUDA_ARCHS])


class KernelUnavailable(RuntimeError):
    """The custom kernels cannot be used here (no compiler, build failure, unsupported device)."""


_lock = threading.Lock()
_built = {}  # (device, compiler, flags) -> library path or KernelUnavailable


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


def find_nvcc():
    """The CUDA compiler: $NVCC, nvcc on $PATH, $CUDA_HOME/bin/nvcc, /usr/local/cuda*/bin/nvcc; or None."""
    candidates = [NVCC, shutil.which("nvcc") or ""]
    if os.environ.get("CUDA_HOME"):
        candidates.append(os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc"))
    candidates += sorted(glob.glob("/usr/local/cuda*/bin/nvcc"), reverse=True)
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    return None


def _cpu_signature():
    """Model and ISA flags of this CPU (part of the cache key because of -march=native)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def _compiler_version(compiler):
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelUnavailable(f"compiler {compiler!r} cannot be run ({e})") from e


def _toolchain(device):
    """(compiler path, flags) for ``device``; KernelUnavailable when there is none."""
    if device not in SOURCES:
        raise KernelUnavailable(f"no fused kernel for device {device!r} (kernels exist for "
                                f"{', '.join(SUPPORTED_DEVICES)})")
    if device == "CPU":
        compiler = shutil.which(CXX)
        if compiler is None:
            raise KernelUnavailable(f"C++ compiler {CXX!r} not found (install g++ or set $CXX); "
                                    "the fused CPU kernels cannot be built")
        return compiler, CXXFLAGS
    compiler = find_nvcc()
    if compiler is None:
        raise KernelUnavailable("CUDA compiler nvcc not found (set $NVCC or $CUDA_HOME); "
                                "the fused GPU kernels cannot be built")
    return compiler, NVCCFLAGS


def library_path(device="CPU"):
    """Build (once per process, cached on disk by source hash) and return the library for ``device``.

    Raises ``KernelUnavailable`` with a clear reason when there is no compiler or the build fails.
    """
    compiler, flags = _toolchain(device)
    key = (device, compiler, tuple(flags))
    with _lock:
        if key not in _built:
            if device == "CPU" and openmp_wait_policy_late():
                log.warning("mindspore was imported before src, so libgomp started without OMP_WAIT_POLICY="
                            "PASSIVE: the CPU kernels' idle OpenMP threads will spin after each call and slow "
                            "MindSpore's operators (README, 'Custom operators'); import src first or export "
                            "OMP_WAIT_POLICY=PASSIVE")
            try:
                _built[key] = _build(device, compiler, flags)
            except KernelUnavailable as e:
                _built[key] = e
        result = _built[key]
    if isinstance(result, KernelUnavailable):
        raise result
    return result


def _build(device, compiler, flags):
    sources = [SRC_DIR / name for name in SOURCES[device]]
    digest = hashlib.sha256(device.encode())
    for src in sources + [SRC_DIR / name for name in HEADERS]:
        digest.update(src.name.encode() + b"\0" + src.read_bytes() + b"\0")
    digest.update(" ".join(flags).encode())
    digest.update(_compiler_version(compiler).encode())
    if device == "CPU":
        digest.update(platform.machine().encode() + _cpu_signature().encode())
    out_dir = cache_dir()
    stem = _library_stem(device)
    target = out_dir / f"{stem}_{digest.hexdigest()[:HASH_CHARS]}.so"
    if target.is_file():
        return str(target)
    with open(out_dir / f"{LIB_STEM}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # concurrent processes build once
        if target.is_file():
            return str(target)
        fd, tmp = tempfile.mkstemp(suffix=".so", prefix=f".{stem}_", dir=out_dir)
        os.close(fd)
        cmd = [compiler, *flags, "-o", tmp, *map(str, sources)]
        log.info("building custom kernels: %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.SubprocessError) as e:
            os.unlink(tmp)
            raise KernelUnavailable(f"kernel build failed to run: {e}") from e
        if proc.returncode != 0:
            os.unlink(tmp)
            raise KernelUnavailable(f"kernel build failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)  # atomic: other processes see either nothing or the whole library
    return str(target)


_target_override = []  # stack of devices set by ``target_device``


@contextlib.contextmanager
def target_device(device):
    """Build Cells for ``device`` while this process runs on another one.

    Inside the block every dispatch point picks what it would pick on ``device`` and the kernel
    Cells reference that device's library, but nothing is probed or run there: the graphs built
    this way can be compiled to MINDIR (frontend only) and inspected, which is how the
    portability check sees the Ascend and GPU graphs on a CPU-only machine."""
    if device not in ("CPU", "GPU", "Ascend"):
        raise ValueError(f"unknown device {device!r} (CPU | GPU | Ascend)")
    _target_override.append(device)
    try:
        yield device
    finally:
        _target_override.pop()


def library_device(path):
    """The device a library built by ``library_path`` is for, from its file name; None for any
    other file (the portability check trusts an AOT operator only on its library's device)."""
    name = os.path.basename(path)
    for device in SUPPORTED_DEVICES:
        stem = _library_stem(device)
        if name.startswith(stem + "_") and name.endswith(".so") and len(name) == len(f"{stem}_.so") + HASH_CHARS:
            return device
    return None


def _library_stem(device):
    return LIB_STEM if device == "CPU" else f"{LIB_STEM}_{device.lower()}"


def current_device():
    """The device the Cells being built are meant for (``target_device`` or the context's)."""
    return _target_override[-1] if _target_override else ms.get_context("device_target")


def running_on_target():
    """False inside ``target_device`` for a device this process is not running on (no probing)."""
    return current_device() == ms.get_context("device_target")


def check_available(device=None):
    """Raise ``KernelUnavailable`` unless the kernel library for ``device`` (default: the
    current device target) is built or can be built here."""
    library_path(device or current_device())


def is_available(device=None):
    try:
        check_available(device)
        return True
    except KernelUnavailable:
        return False


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    for name in sys.argv[1:] or ["CPU"]:
        print(library_path(name))
