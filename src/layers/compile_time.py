"""Values that depend only on static shapes, computed once in Python while a graph compiles.

In graph mode MindSpore type-infers every ``ops.*`` wrapper, tensor index and Python helper
inside ``construct`` as subgraphs of their own, and the compiler's working memory, which sets
the peak of a first start on CPU, grows with their number (README, "Graph-mode memory on CPU").
A function under ``ms.constexpr`` is called in Python with the constant arguments instead, and
its result enters the graph as one constant. Only for small results: an exported MINDIR stores
every constant.
"""
import mindspore as ms
import numpy as np
from mindspore import Tensor


@ms.constexpr
def arange_along(n, dtype, axis=0, ndim=1):
    """The constant 0, 1, ..., n-1 of ``dtype`` on ``axis`` of an ``ndim``-D tensor, size 1 on
    the other axes: ``ops.arange(n, dtype=dtype)`` indexed with ``None`` elsewhere."""
    shape = [1] * ndim
    shape[axis] = n
    return Tensor(np.arange(n).reshape(shape), dtype)
