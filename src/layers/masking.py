"""Zeroing masked token rows."""
from mindspore import ops


def zero_masked_rows(x, mask):
    """x (..., C) with the rows where ``mask`` (...) is True set to 0.

    The mask is broadcast to x's shape explicitly: in MindSpore 2.10's CPU graph mode the output
    of an implicitly broadcast element-wise op stays allocated until the graph ends (README,
    "Graph-mode memory on CPU"); in the value projection of every deformable attention this
    cost 1.1 GB at 800x1333.
    """
    return ops.masked_fill(x, ops.broadcast_to(mask[..., None], x.shape), 0.0)
