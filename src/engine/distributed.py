"""Data-parallel setup under msrun: msrun exports the worker's identity; ``init`` joins the
collective group. Without msrun everything runs as rank 0 of 1."""
import os


def launched_by_msrun():
    return "MS_WORKER_NUM" in os.environ and int(os.environ["MS_WORKER_NUM"]) > 1


def init_distributed():
    """(rank, world_size); joins the communication group when started by msrun."""
    if not launched_by_msrun():
        return 0, 1
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    init()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    return get_rank(), get_group_size()
