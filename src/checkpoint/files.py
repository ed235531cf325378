"""Reading checkpoint files of every supported format, and writing the port's atomically."""
import os
import re

import numpy as np

__all__ = ["read_backbone_state_dict", "read_official_state_dict", "save_checkpoint_atomic"]


def read_official_state_dict(path):
    """{key: numpy array} from an official checkpoint: a torch ``.pth`` (the weights under
    ``model`` as detrex saves them, or a bare state_dict; needs torch), ``.npz`` or
    ``.safetensors``."""
    if path.endswith(".npz"):
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        return load_file(path)
    if path.endswith((".pth", ".pt", ".pkl")):
        try:
            import torch
        except ImportError as e:
            raise ImportError(f"reading {path} needs torch (pip install torch --index-url "
                              "https://download.pytorch.org/whl/cpu); or save the state_dict as .npz") from e
        blob = torch.load(path, map_location="cpu", weights_only=True)
        state = blob.get("model", blob) if isinstance(blob, dict) else blob
        return {k: v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}
    raise ValueError(f"{path}: unknown checkpoint format (expected .pth, .npz or .safetensors)")


def read_backbone_state_dict(path):
    """{key: array} of ImageNet backbone weights: a detectron2 ``.pkl`` (the official
    ``r50_v1.pkl``), a MindSpore ``.ckpt`` or what ``read_official_state_dict`` reads. Wrapper
    prefixes (``model.``, ``module.``, ``backbone.``) are removed."""
    if path.endswith(".pkl"):
        import pickle

        with open(path, "rb") as f:
            blob = pickle.load(f, encoding="latin1")
        state = blob.get("model", blob)
    elif path.endswith(".ckpt"):
        import mindspore as ms

        state = {k: v.asnumpy() for k, v in ms.load_checkpoint(path).items()}
    else:
        state = read_official_state_dict(path)
    return {re.sub(r"^(model\.|module\.|backbone\.)+", "", k): np.asarray(v) for k, v in state.items()
            if hasattr(v, "shape")}


def save_checkpoint_atomic(items, path, append_dict=None):
    """``mindspore.save_checkpoint`` to a temporary name in the same folder, then rename: a
    crash while writing never leaves a truncated file under ``path``; the bytes are flushed to disk
    before the rename, so a power loss cannot leave a renamed but empty file. (MindSpore appends
    '.ckpt' to names without it, so the temporary name ends in '.ckpt' too.)"""
    import mindspore as ms

    tmp = temporary_path(path)
    ms.save_checkpoint(items, tmp, append_dict=append_dict)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def temporary_path(path):
    """Where ``save_checkpoint_atomic`` writes ``path`` before renaming it."""
    return os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp.ckpt")
