"""The training fixture's GT in the padded batch format the training loop feeds, with garbage
in the padded entries (to prove they are ignored). Shared by the denoising and criterion tests."""
import numpy as np


def padded_targets(arrays, num_entries=4, seed=0):
    rng = np.random.default_rng(seed)
    boxes = rng.uniform(-3, 3, (2, num_entries, 4)).astype(np.float32)
    labels = rng.integers(-50, 500, (2, num_entries)).astype(np.int32)
    valid = np.zeros((2, num_entries), bool)
    for b in range(2):
        n = len(arrays[f"target_labels_{b}"])
        boxes[b, :n] = arrays[f"target_boxes_{b}"]
        labels[b, :n] = arrays[f"target_labels_{b}"]
        valid[b, :n] = True
    return boxes, labels, valid
