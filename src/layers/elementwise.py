"""Element-wise arithmetic in the forms MindSpore 2.10's CPU graph runtime frees early.

In CPU graph mode the output of a binary element-wise op whose operands differ in shape
(implicit broadcasting), and of every ``Div`` (what ``x / y`` compiles to, even on equal
shapes), stays allocated until the graph ends: about four times the output's bytes each
(``scripts/probe_graph_memory.py``; README, "Graph-mode memory on CPU"). With the operands
broadcast explicitly, and ``RealDiv`` for the division, the memory is reused as soon as no later
op reads it. Both forms compute the same values: broadcasting copies and true division is
IEEE division either way.
"""
from mindspore import ops

_REAL_DIV = ops.RealDiv()


def broadcast_shape(a, b):
    """numpy's broadcast of two static shapes."""
    rank = max(len(a), len(b))
    a = (1,) * (rank - len(a)) + tuple(a)
    b = (1,) * (rank - len(b)) + tuple(b)
    return tuple(max(m, n) for m, n in zip(a, b))


def divide(x, y):
    """x / y for tensors x and y of broadcastable shapes."""
    shape = broadcast_shape(x.shape, y.shape)
    return _REAL_DIV(ops.broadcast_to(x, shape), ops.broadcast_to(y, shape))
