"""Element-wise arithmetic in the forms MindSpore 2.10's CPU graph runtime frees early.

In CPU graph mode the output of a binary element-wise op whose operands differ in shape
(implicit broadcasting), and of every ``Div`` (what ``x / y`` compiles to, even on equal
shapes), stays allocated until the graph ends: about four times the output's bytes each
(``scripts/probe_graph_memory.py``; README, "Graph-mode memory on CPU"). With the operands
broadcast explicitly, and ``RealDiv`` for the division, the memory is reused as soon as no later
op reads it. Both forms compute the same values: broadcasting copies and true division is
IEEE division either way.

A constant broadcast explicitly is folded by the compiler into a constant of the full shape,
which an exported MINDIR then stores (32 MB for a 1000x1000x8 float32, measured); made to
depend on a data tensor first (``ops.depend``, no computation), it is broadcast at run time.
"""
import mindspore as ms
from mindspore import ops

_REAL_DIV = ops.RealDiv()


@ms.constexpr
def broadcast_shape(a, b):
    """numpy's broadcast of two static shapes."""
    rank = max(len(a), len(b))
    a = (1,) * (rank - len(a)) + tuple(a)
    b = (1,) * (rank - len(b)) + tuple(b)
    return tuple(max(m, n) for m, n in zip(a, b))


def broadcast_constant(constant, shape, data):
    """``ops.broadcast_to(constant, shape)`` computed at run time, after ``data``: not folded."""
    return ops.broadcast_to(ops.depend(constant, data), shape)


def divide(x, y):
    """x / y for tensors x and y of broadcastable shapes (y may be a constant, x is data)."""
    shape = broadcast_shape(x.shape, y.shape)
    return _REAL_DIV(ops.broadcast_to(x, shape), broadcast_constant(y, shape, x))


def last_axis(x):
    """``x[..., None]`` as a reshape: indexing with None compiles to a StridedSlice, which copies
    (about 15 ms for a (1, 100, 167, 64) map on CPU)."""
    return x.reshape(x.shape + (1,))
