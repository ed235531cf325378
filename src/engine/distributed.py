"""Data-parallel setup under msrun: msrun exports the worker's identity; ``init`` joins the
collective group. Without msrun everything runs as rank 0 of 1."""

from ..runtime import launched_by_msrun, mode_scope


def init_distributed():
    """(rank, world_size); joins the communication group when started by msrun."""
    if not launched_by_msrun():
        return 0, 1
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    init()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    return get_rank(), get_group_size()


def all_gather_rows(rows):
    """The (n_r, C) float32 arrays of every rank concatenated in rank order, on every rank
    (n_r may differ between ranks). Two graph-mode AllGathers: the counts, then the rows padded
    to the largest count (MindSpore's CPU backend has collectives in graph mode only)."""
    import numpy as np
    from mindspore import Tensor, nn, ops

    class AllGather(nn.Cell):
        def __init__(self):
            super().__init__()
            self.gather = ops.AllGather()

        def construct(self, x):
            return self.gather(x)

    with mode_scope("graph"):
        rows = np.asarray(rows, np.float32).reshape(len(rows), -1)
        gather = AllGather()
        counts = gather(Tensor(np.array([len(rows)], np.int32))).asnumpy()
        padded = np.zeros((max(int(counts.max()), 1), rows.shape[1]), np.float32)
        padded[:len(rows)] = rows
        gathered = gather(Tensor(padded)).asnumpy().reshape(len(counts), len(padded), rows.shape[1])
    return np.concatenate([gathered[r, :n] for r, n in enumerate(counts)])
