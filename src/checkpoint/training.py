"""Training checkpoints in an output directory: complete only when verified, found for
``--resume auto``, and pruned without touching what a resume needs.

Why a manifest: a job killed while saving, a full disk or a copy that stopped half-way can leave
a ``.ckpt`` that MindSpore may still partly read. Each checkpoint ``checkpoint_iterNNNNNNN.ckpt``
gets ``checkpoint_iterNNNNNNN.json`` (its byte count and SHA-256) written after it, atomically; a
checkpoint is complete when the two agree. The order of writes (old manifest removed, checkpoint
renamed into place, new manifest renamed into place) means a kill at any moment leaves either a
complete checkpoint or one without a manifest, never a manifest vouching for other bytes.
"""
import hashlib
import json
import os
import re

from .files import save_checkpoint_atomic

__all__ = ["BEST_CHECKPOINT", "CHECKPOINT_PREFIX", "best_checkpoint", "checkpoint_path", "find_resume_checkpoint",
           "manifest_path", "prune_checkpoints", "save_best_checkpoint", "save_training_checkpoint",
           "training_checkpoints", "verify_checkpoint"]

CHECKPOINT_PREFIX = "checkpoint_iter"
BEST_CHECKPOINT = "model_best.ckpt"
_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)\.ckpt$")
_TEMPORARY = re.compile(rf"^\.{CHECKPOINT_PREFIX}\d+\.(ckpt\.tmp\.ckpt|json\.tmp)$")  # save_checkpoint_atomic's, ours


def checkpoint_path(output_dir, iteration):
    return os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{iteration:07d}.ckpt")


def manifest_path(path):
    return path[:-len(".ckpt")] + ".json"


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json_atomic(obj, path):
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_training_checkpoint(cell, output_dir, iteration, append_dict):
    """Save ``cell``'s parameters (and ``append_dict``) as the checkpoint of ``iteration`` and
    then its manifest; returns the checkpoint's path."""
    path = checkpoint_path(output_dir, iteration)
    _save_verified(cell, path, {"iteration": iteration}, append_dict)
    return path


def save_best_checkpoint(model, output_dir, iteration, ap):
    """Save ``model``'s weights as ``model_best.ckpt`` (a checkpoint eval.py, infer.py and export.py
    load) with its manifest, which also records ``iteration`` and ``ap``; returns the path."""
    path = os.path.join(output_dir, BEST_CHECKPOINT)
    _save_verified(model, path, {"iteration": iteration, "AP": ap})
    return path


def best_checkpoint(output_dir):
    """The manifest of a complete ``model_best.ckpt`` in ``output_dir`` (iteration, AP, ...), or None."""
    path = os.path.join(output_dir, BEST_CHECKPOINT)
    if not os.path.isfile(path) or verify_checkpoint(path) is not None:
        return None
    with open(manifest_path(path)) as f:
        return json.load(f)


def _save_verified(cell, path, record, append_dict=None):
    manifest = manifest_path(path)
    if os.path.exists(manifest):  # re-saving: never let the old manifest vouch for new bytes
        os.remove(manifest)
    save_checkpoint_atomic(cell, path, append_dict=append_dict)
    _write_json_atomic({"file": os.path.basename(path), **record, "bytes": os.path.getsize(path),
                        "sha256": _sha256(path)}, manifest)


def verify_checkpoint(path, content=True):
    """None when ``path`` is complete, else why not (one short phrase). ``content=False`` checks
    the manifest and the byte count only (no hashing: what pruning needs at every save)."""
    manifest = manifest_path(path)
    if not os.path.isfile(manifest):
        return f"no manifest {os.path.basename(manifest)} (the save did not finish)"
    try:
        with open(manifest) as f:
            expected = json.load(f)
        size, digest = int(expected["bytes"]), str(expected["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable manifest {os.path.basename(manifest)} ({e})"
    actual = os.path.getsize(path)
    if actual != size:
        return f"{actual} bytes, manifest says {size} (truncated or overwritten)"
    if content and _sha256(path) != digest:
        return "SHA-256 differs from the manifest (corrupt)"
    return None


def training_checkpoints(output_dir):
    """[(iteration, path)] of the checkpoint files in ``output_dir``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), os.path.join(output_dir, name))
             for name in os.listdir(output_dir) if (m := _NAME.match(name))]
    return sorted(found)


def find_resume_checkpoint(output_dir):
    """(path of the newest complete checkpoint or None, [(path, reason)] of the newer ones that
    are not complete)."""
    rejected = []
    for _, path in reversed(training_checkpoints(output_dir)):
        reason = verify_checkpoint(path)
        if reason is None:
            return path, rejected
        rejected.append((path, reason))
    return None, rejected


def prune_checkpoints(output_dir, keep, newest_iteration):
    """After a save: delete the temporaries a killed save left behind, and the complete
    checkpoints (with manifests) older than the ``keep`` newest complete ones up to
    ``newest_iteration`` (``keep`` 0: none). Returns the deleted paths. Only complete checkpoints
    count, so an incomplete newer file never costs the last good one; files after
    ``newest_iteration`` (left by a run resumed from an earlier checkpoint) and incomplete files
    are left alone, for the user to look at. Called by the only writer once its save finished,
    so no temporary is in flight."""
    deleted = [os.path.join(output_dir, name) for name in sorted(os.listdir(output_dir))
               if _TEMPORARY.match(name)]
    if keep > 0:
        complete = [path for iteration, path in training_checkpoints(output_dir)
                    if iteration <= newest_iteration and verify_checkpoint(path, content=False) is None]
        deleted += complete[:-keep]
    for path in deleted:
        if path.endswith(".ckpt") and os.path.exists(manifest_path(path)):
            os.remove(manifest_path(path))  # first: a kill in between leaves an incomplete file, not a false one
        os.remove(path)
    return deleted
