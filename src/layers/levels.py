"""The multi-scale token sequence: levels flattened one after another, level 0 first."""
from .portable_backward import concat


def flatten_levels(maps):
    """[(B,C,h,w)] -> (B, sum h*w, C), level 0 first, row-major inside a level."""
    return concat([m.reshape(m.shape[0], m.shape[1], -1).transpose(0, 2, 1) for m in maps], 1)


def level_starts(spatial_shapes):
    """(0, n_0, n_0 + n_1, ..., S): where each level's tokens start in the sequence, then its end
    (Python ints; also inside a graph, where the shapes are constants)."""
    starts = (0,)
    for h, w in spatial_shapes:
        starts += (starts[-1] + h * w,)
    return starts
