"""Training checkpoints in an output directory (``src/checkpoint/training.py``): what counts as
complete, which one ``--resume auto`` picks, and what ``train.max_checkpoints`` deletes."""
import json
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from src.checkpoint.files import temporary_path
from src.checkpoint.training import (
    checkpoint_path,
    find_resume_checkpoint,
    manifest_path,
    prune_checkpoints,
    save_training_checkpoint,
    verify_checkpoint,
)


@pytest.fixture
def cell():
    return nn.Dense(64, 32)


def save(cell, out, iteration):
    return save_training_checkpoint(cell, str(out), iteration, {"iteration": iteration})


def test_saved_checkpoint_is_complete_and_loads(cell, tmp_path):
    path = save(cell, tmp_path, 7)
    assert path == checkpoint_path(str(tmp_path), 7) and path.endswith("checkpoint_iter0000007.ckpt")
    assert verify_checkpoint(path) is None
    manifest = json.load(open(manifest_path(path)))
    assert manifest["iteration"] == 7 and manifest["bytes"] == os.path.getsize(path)
    loaded = ms.load_checkpoint(path)
    np.testing.assert_array_equal(loaded["weight"].asnumpy(), cell.weight.asnumpy())
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_iter0000007.ckpt", "checkpoint_iter0000007.json"]


@pytest.mark.parametrize("damage, reason", [
    ("truncate", "bytes, manifest says"),
    ("flip", "SHA-256 differs"),
    ("no_manifest", "no manifest"),
    ("bad_manifest", "unreadable manifest"),
])
def test_damaged_newest_is_named_and_the_previous_used(cell, tmp_path, damage, reason):
    good = save(cell, tmp_path, 2)
    newest = save(cell, tmp_path, 4)
    if damage == "truncate":
        with open(newest, "r+b") as f:
            f.truncate(os.path.getsize(newest) // 2)
    elif damage == "flip":
        data = bytearray(open(newest, "rb").read())
        data[len(data) // 2] ^= 0xFF
        open(newest, "wb").write(bytes(data))
    elif damage == "no_manifest":
        os.remove(manifest_path(newest))
    else:
        open(manifest_path(newest), "w").write("{")
    assert reason in verify_checkpoint(newest)
    path, rejected = find_resume_checkpoint(str(tmp_path))
    assert path == good
    assert [p for p, _ in rejected] == [newest] and reason in rejected[0][1]


def test_nothing_to_resume(cell, tmp_path):
    assert find_resume_checkpoint(str(tmp_path / "missing")) == (None, [])
    save(cell, tmp_path, 3)
    os.remove(manifest_path(checkpoint_path(str(tmp_path), 3)))
    path, rejected = find_resume_checkpoint(str(tmp_path))
    assert path is None and len(rejected) == 1


def test_resaving_an_iteration_never_keeps_the_old_manifest(cell, tmp_path, monkeypatch):
    """A save killed after its checkpoint rename but before its manifest: the old manifest of the
    same iteration must not vouch for the new bytes."""
    path = save(cell, tmp_path, 5)
    cell.weight.set_data(cell.weight + 1)
    import src.checkpoint.training as training

    monkeypatch.setattr(training, "_write_json_atomic", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        save(cell, tmp_path, 5)
    assert "no manifest" in verify_checkpoint(path)


def test_retention_keeps_the_newest_complete(cell, tmp_path):
    for it in (1, 2, 3, 4):
        save(cell, tmp_path, it)
    os.remove(manifest_path(checkpoint_path(str(tmp_path), 4)))  # newest incomplete: does not count
    later = save(cell, tmp_path, 9)  # from an abandoned run after resuming at 4: never touched
    open(temporary_path(checkpoint_path(str(tmp_path), 5)), "w").write("partial")  # a killed save's leftover
    deleted = prune_checkpoints(str(tmp_path), 2, newest_iteration=4)
    names = [os.path.basename(p) for p in deleted]
    assert names == [".checkpoint_iter0000005.ckpt.tmp.ckpt", "checkpoint_iter0000001.ckpt"]
    left = sorted(f for f in os.listdir(tmp_path) if f.endswith(".ckpt"))
    assert left == ["checkpoint_iter0000002.ckpt", "checkpoint_iter0000003.ckpt", "checkpoint_iter0000004.ckpt",
                    "checkpoint_iter0000009.ckpt"]
    assert not os.path.exists(manifest_path(checkpoint_path(str(tmp_path), 1)))
    assert verify_checkpoint(later) is None
    assert prune_checkpoints(str(tmp_path), 0, newest_iteration=9) == []  # 0 keeps all
