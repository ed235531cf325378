"""Which operators MindSpore's CPU graph runtime keeps allocated until the end of a graph.

    python scripts/probe_graph_memory.py [--probes NAME ...] [--shape 1 203 336 96] [--grad]

Each probe compiles, in a process of its own, a graph of ``links`` steps ``x = sin(op(x))`` on
one float32 tensor (default: the 26 MB stage-0 map of Swin-T at 800x1333) and runs it twice,
for 1 and for 9 links; the growth of the peak resident set from 1 to 9 links, per link and in
units of the tensor's size, is what each call of ``op`` leaves allocated until the graph ends:
about 0 when its memory is reused once nothing reads it (``sin`` alone is the baseline), about
k when k tensors' worth stay. With ``--grad`` the graph is the chain's gradient w.r.t. ``x``
(``ops.GradOperation``): the backward needs some forward tensors (``sin`` keeps its input for
``cos``), so the baseline is about 1 and an op whose backward keeps more than it needs shows
above it. The model code avoids the patterns that hold memory (README, "Graph-mode memory on
CPU"); this script is how they were found, and how to check them on another MindSpore version.
"""
import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBES = {
    # name: (what it computes, the op as a function of x and the constants below)
    "sin": ("baseline: sin alone", "x"),
    "mul_same_shape": ("x * x", "x * x"),
    "mul_scalar": ("x * 1.0001", "x * 1.0001"),
    "mul_vector": ("x * v, v (C,) broadcast implicitly", "x * V"),
    "mul_vector_explicit": ("x * broadcast_to(v, x.shape)", "x * ops.broadcast_to(V, x.shape)"),
    "add_row": ("x + x[:, :1], a row broadcast implicitly", "x + x[:, :1]"),
    "div_same_shape": ("x / (x + 2), Div", "x / (x + 2.0)"),
    "div_scalar": ("x / 1.0001, Div", "x / 1.0001"),
    "divide": ("src.layers.elementwise.divide(x, x + 2): RealDiv", "divide(x, x + 2.0)"),
    "select_scalar": ("where(x > 0.5, x, 0.0)", "ops.where(x > 0.5, x, 0.0)"),
    "masked_fill": ("src.layers.masking.masked_fill(x, x > 0.5, 0.0)", "masked_fill(x, x > 0.5, 0.0)"),
    "transpose": ("4-D transpose (0, 2, 1, 3)", "x.transpose(0, 2, 1, 3).reshape(x.shape)"),
    "transpose_6d": ("7x7 windows: 6-D transpose (0, 1, 3, 2, 4, 5)", "WINDOWS(x)"),
    "row_gather": ("a permutation of the rows as one Gather",
                   "ops.gather(x.reshape(-1, x.shape[-1]), PERM, 0).reshape(x.shape)"),
    "gelu_mindspore": ("ops.gelu(x, 'none'): divides by sqrt(2)", "ops.gelu(x, approximate='none')"),
    "gelu_portable": ("src.layers.portable_backward.GELU: multiplies by sqrt(1/2)", "GELU_CELL(x)"),
    "layer_norm": ("LayerNorm over the last axis", "LAYER_NORM(x)"),
    "softmax": ("softmax over the last axis", "ops.softmax(x, -1)"),
    "softmax_matmul": ("attention core: softmax(x, -1) @ v, v = x[:, :, :C]",
                       "ops.matmul(ops.softmax(x, -1), x[:, :, :x.shape[-1]])"),
    "softmax_product": ("src.layers.attention.softmax_product(x, v): its own backward",
                        "softmax_product(x, x[:, :, :x.shape[-1]])"),
    "conv3x3": ("3x3 convolution, C -> C, padded (the tensor read as NCHW)", "CONV3(x.reshape(NCHW)).reshape(x.shape)"),
}

CHILD = '''
import os, resource, sys
sys.path.insert(0, {root!r})
import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from src.layers.attention import softmax_product
from src.layers.elementwise import divide
from src.layers.masking import masked_fill
from src.layers.portable_backward import GELU
ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
shape = {shape!r}
links = {links}
grad = {grad}
V = Tensor(np.full(shape[-1:], 1.0001, np.float32))
NCHW = (shape[0], shape[-1], shape[1], int(np.prod(shape[2:-1])))  # the same values read as an image
PERM = Tensor(np.random.default_rng(0).permutation(int(np.prod(shape[:-1]))).astype(np.int32))
GELU_CELL = GELU()
LAYER_NORM = nn.LayerNorm(shape[-1:])
CONV3 = nn.Conv2d(shape[-1], shape[-1], 3, pad_mode="pad", padding=1)


def WINDOWS(x):  # Swin's window partition when H and W are multiples of 7
    b, h, w, c = x.shape
    return x.reshape(b, h // 7, 7, w // 7, 7, c).transpose(0, 1, 3, 2, 4, 5).reshape(x.shape)


def op(x):
    return {expr}


class Chain(nn.Cell):
    def __init__(self):
        super().__init__()
        self.gelu, self.norm, self.conv = GELU_CELL, LAYER_NORM, CONV3

    def construct(self, x):
        for _ in range(links):
            x = ops.sin(op(x))
        return x


class Gradient(nn.Cell):
    def __init__(self, net):
        super().__init__()
        self.net, self.grad = net, ops.GradOperation()

    def construct(self, x):
        return self.grad(self.net)(x)


def probe():
    return Gradient(Chain()) if grad else Chain()


x = Tensor(np.random.default_rng(0).random(shape).astype(np.float32))
probe()(x).asnumpy()
probe()(x).asnumpy()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
os._exit(0)
'''


def peak_kb(expr, shape, links, grad):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = CHILD.format(root=root, shape=tuple(shape), links=links, expr=expr, grad=grad)
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"probe_graph_memory_{os.getpid()}.py")
    with open(path, "w") as f:
        f.write(code)  # MindSpore compiles a Cell from its source file
    try:
        out = subprocess.run([sys.executable, path], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"probe {expr!r} failed:\n{out.stderr[-2000:]}")
    finally:
        os.remove(path)
    return int(out.stdout.split()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", nargs="*", default=list(PROBES), choices=list(PROBES))
    parser.add_argument("--shape", nargs="+", type=int, default=[1, 203, 336, 96])
    parser.add_argument("--grad", action="store_true", help="probe the chain's gradient graph instead")
    args = parser.parse_args(argv)
    import mindspore as ms
    import numpy as np

    tensor_kb = int(np.prod(args.shape)) * 4 / 1024
    graphs = "gradient graphs" if args.grad else "forward graphs"
    print(f"MindSpore {ms.__version__}, CPU graph mode, {graphs}, float32 tensor {tuple(args.shape)} "
          f"({tensor_kb / 1024:.1f} MiB); held until the graph ends, per call, in tensors")
    print(f"| {'probe':20s} | {'what':62s} | held |")
    print(f"|{'-' * 22}|{'-' * 64}|------|")
    for name in args.probes:
        what, expr = PROBES[name]
        held = (peak_kb(expr, args.shape, 9, args.grad) - peak_kb(expr, args.shape, 1, args.grad)) / 8 / tensor_kb
        print(f"| {name:20s} | {what:62s} | {held:4.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
