"""ImageNet-pretrained Swin weights for training: the original Swin release layout -> ``SwinBackbone``.

The official recipes start from the classification checkpoints of the Swin Transformer release
(``swin_tiny_patch4_window7_224.pth``, ``..._22kto1k_finetune.pth``,
``swin_{base,large}_patch4_window12_384_22k.pth``). Those files hold, under ``model``:

* the backbone weights under the names ``SwinBackbone`` uses (``patch_embed.*``,
  ``layers.{i}.blocks.{j}.*``, ``layers.{i}.downsample.*``), LayerNorms as ``weight``/``bias``;
* structure buffers: ``...attn.relative_position_index`` in every block and ``...attn_mask`` in
  the shifted blocks (its shape depends on the pretraining resolution). The port recomputes
  both; the index is checked against ours, the masks are consumed unread;
* the classifier: the final ``norm.weight``/``norm.bias`` and ``head.weight``/``head.bias``
  (1000 or 21841 classes), which a detector does not use.

The detection output norms ``norm1..norm3`` are not in ImageNet weights and keep their
initialisation. Anything else (an unknown key, a backbone parameter the file lacks, a shape
that differs) raises ``CheckpointMismatch`` with the full lists, and nothing is loaded. A
relative position bias table of another window size (for example window-7 224 weights into a
window-12 384 model) is reported as such; the official recipes never need a resize (each
loads weights of its own window size), so none is attempted.
"""
import logging
import os
import re

import numpy as np

from ...checkpoint import CheckpointMismatch, read_official_state_dict
from .swin_names import swin_port_name

__all__ = ["load_swin_imagenet", "swin_imagenet_to_port"]

log = logging.getLogger("focus_detr.pretrained")

_INDEX = re.compile(r"^layers\.\d+\.blocks\.\d+\.attn\.relative_position_index$")
_MASK = re.compile(r"^layers\.\d+\.blocks\.\d+\.attn_mask$")
_CLASSIFIER = re.compile(r"^(norm|head)\.(weight|bias)$")
_OUT_NORM = re.compile(r"^norm\d+\.(gamma|beta)$")
_BIAS_TABLE = ".attn.relative_position_bias_table"


def _table_window(rows):
    """Window size w of a ((2w-1)^2, heads) bias table, or None."""
    side = int(round(np.sqrt(rows)))
    return (side + 1) // 2 if side * side == rows and side % 2 == 1 else None


def _describe_mismatch(key, value_shape, name, port_shape):
    text = f"{key}: {tuple(value_shape)} -> {name}: {tuple(port_shape)}"
    if key.endswith(_BIAS_TABLE) and len(value_shape) == 2 and len(port_shape) == 2:
        file_w, port_w = _table_window(value_shape[0]), _table_window(port_shape[0])
        if file_w and port_w and file_w != port_w:
            text += (f" (the file was pretrained with window {file_w}, the model uses window {port_w}: "
                     f"use weights of window {port_w}, e.g. *_window{port_w}_*.pth, or the variant of window {file_w})")
        elif value_shape[1] != port_shape[1]:
            text += f" ({value_shape[1]} heads in the file, {port_shape[1]} in the model: another Swin size)"
    return text


def swin_imagenet_to_port(state_dict, port_shapes):
    """Map an ImageNet Swin state_dict {key: array} onto ``SwinBackbone`` {name: shape}.

    ``port_shapes`` uses the backbone's own parameter names (``patch_embed.proj.weight``,
    ``norm1.gamma`` ...). Returns ``(weights, report)``: ``weights`` {name: float32 array} for
    every parameter but the output norms, ``report`` a dict with the consumed ``structure`` and
    ``classifier`` keys and the ``kept_init`` parameter names. Raises ``CheckpointMismatch``
    listing every unknown key, unfilled parameter and shape mismatch.
    """
    from .swin import relative_position_index

    weights, structure, classifier = {}, [], []
    unmapped, mismatched, wrong_shape = [], [], set()
    for key, value in state_dict.items():
        value = np.asarray(value)
        if _INDEX.match(key):
            n = value.shape[0] if value.ndim == 2 else -1
            w = int(round(np.sqrt(n))) if n > 0 else 0
            if value.ndim != 2 or value.shape[1] != n or w * w != n or not np.array_equal(
                    value, relative_position_index(w)):
                mismatched.append(f"{key}: {tuple(value.shape)} does not hold the relative position index "
                                  "of a square window (a different Swin layout?)")
            structure.append(key)
            continue
        if _MASK.match(key):
            structure.append(key)
            continue
        if _CLASSIFIER.match(key):
            classifier.append(key)
            continue
        name = swin_port_name(key, prefix="")
        if name not in port_shapes or _OUT_NORM.match(name):
            unmapped.append(key)
            continue
        if tuple(value.shape) != tuple(port_shapes[name]):
            mismatched.append(_describe_mismatch(key, value.shape, name, port_shapes[name]))
            wrong_shape.add(name)
            continue
        weights[name] = value.astype(np.float32)
    kept_init = [n for n in port_shapes if _OUT_NORM.match(n)]
    missing = [n for n in port_shapes if n not in weights and n not in kept_init and n not in wrong_shape]
    if unmapped or missing or mismatched:
        raise CheckpointMismatch(unmapped, missing, mismatched)
    return weights, {"structure": structure, "classifier": classifier, "kept_init": kept_init}


def load_swin_imagenet(backbone, path_or_state_dict):
    """Load ImageNet Swin weights (original release layout) into ``backbone`` (a ``SwinBackbone``,
    bare or inside the detector, e.g. ``model.backbone``).

    ``path_or_state_dict``: a ``.pth`` (needs torch; the weights under ``model``), ``.npz`` or
    ``.safetensors`` file, or a {key: array} dict. Everything is checked before any parameter
    changes. Returns the report of ``swin_imagenet_to_port`` plus ``loaded`` (the count).
    """
    from mindspore import Tensor

    from .swin import SwinBackbone

    if not isinstance(backbone, SwinBackbone):
        raise TypeError(f"load_swin_imagenet needs a SwinBackbone, got {type(backbone).__name__}")
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        source = os.fspath(path_or_state_dict)
        state_dict = read_official_state_dict(source)
    else:
        source, state_dict = "state_dict", path_or_state_dict
    params = dict(backbone.parameters_and_names())
    weights, report = swin_imagenet_to_port(state_dict, {n: tuple(p.shape) for n, p in params.items()})
    for name, value in weights.items():
        params[name].set_data(Tensor(value))
    report["loaded"] = len(weights)
    log.info(f"{source}: loaded {len(weights)} Swin ImageNet tensors; consumed {len(report['structure'])} "
             f"structure buffers (relative_position_index, attn_mask) and {len(report['classifier'])} "
             f"classifier tensors ({', '.join(report['classifier']) or 'none'}); kept the initialisation of "
             f"{len(report['kept_init'])} detection output-norm parameters ({', '.join(report['kept_init'])})")
    return report
