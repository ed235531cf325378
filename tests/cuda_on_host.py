"""Builds the CUDA sources of ``src/ops`` as a host library, so the CPU test suite runs the CUDA
kernels' code against the references (tests/test_ops.py, tests/test_lsap_kernel.py): every launch
``kernel<<<grid, block, shared, stream>>>(args);`` is rewritten into a serial loop over the grid
(``launch_on_host`` in ``cuda_on_host/cuda_runtime.h``, which stands in for the CUDA runtime:
copies of any kind are memcpy, stream synchronisation returns at once).
The library has the same AOT entry points as the GPU one and is loaded by ``ops.Custom`` on CPU.
"""
import re
import subprocess
from pathlib import Path

from src.ops import build

HERE = Path(__file__).resolve().parent
LAUNCH = re.compile(r"(\w+)<<<([^>]*)>>>\(")


def rewrite_launches(source):
    """``name<<<grid, block, shared, stream>>>(args)`` -> ``launch_on_host(grid, block, [&] { name(args); })``."""
    out, pos = [], 0
    for match in LAUNCH.finditer(source):
        if match.start() < pos:
            raise ValueError("nested kernel launch")
        depth, end = 1, match.end()
        while depth:  # the ')' that closes the argument list
            depth += {"(": 1, ")": -1}.get(source[end], 0)
            end += 1
        grid, block = [part.strip() for part in match.group(2).split(",")][:2]
        args = source[match.end():end - 1]
        out += [source[pos:match.start()], f"launch_on_host({grid}, {block}, [&] {{ {match.group(1)}({args}); }})"]
        pos = end
    return "".join(out) + source[pos:]


def build_library(directory):
    """Compile the GPU library's sources for the host into ``directory``; returns the .so path."""
    directory = Path(directory)
    sources = []
    for name in build.SOURCES["GPU"]:
        path = build.SRC_DIR / name
        if path.suffix == ".cu":
            text = rewrite_launches(path.read_text())
            if "<<<" in text:
                raise ValueError(f"{path}: a kernel launch was not rewritten")
            path = directory / (path.stem + "_on_host.cpp")
            path.write_text(text)
        sources.append(str(path))
    library = directory / "focus_detr_ops_cuda_on_host.so"
    cmd = [build.CXX, "-O2", "-std=c++17", "-shared", "-fPIC", "-D_GLIBCXX_USE_CXX11_ABI=0",
           f"-I{HERE / 'cuda_on_host'}", f"-I{build.SRC_DIR}", "-o", str(library), *sources]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"host build of the CUDA sources failed: {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    return str(library)
